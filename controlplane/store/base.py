"""The store seam: what the control plane needs from an etcd-compatible store, and its errors.

Everything above this interface deals in JSON objects and revisions; everything below it is
etcd's v3 API (``etcd.EtcdStore``) or an in-memory model of it for tests (``fake.FakeStore``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol


class StoreError(Exception):
    """Base of the errors below."""


class NotFound(StoreError):
    pass


class AlreadyExists(StoreError):
    pass


class Conflict(StoreError):
    """The key's mod_revision is no longer the resourceVersion the write was based on."""


class Compacted(StoreError):
    """A watch asked for history that compaction removed; the informer lists again."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"required revision has been compacted (compact revision {compact_revision})")
        self.compact_revision = compact_revision


class Unavailable(StoreError):
    """No endpoint answered within the retry budget (or the watch stream broke)."""


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int = 1
    lease: int = 0


@dataclass(frozen=True)
class Event:
    type: Literal["PUT", "DELETE"]
    kv: KeyValue  # for DELETE: the key and the revision of the delete, no value
    prev: KeyValue | None = None


@dataclass(frozen=True)
class WatchResponse:
    revision: int
    events: list[Event] = field(default_factory=list)


class WatchStream(Protocol):
    def __iter__(self) -> Iterator[WatchResponse]:
        """Yields responses; raises Compacted, or Unavailable when the stream breaks."""
        ...

    def cancel(self) -> None: ...


class Store(Protocol):
    def get(self, key: str, within: float | None = None) -> KeyValue | None:
        """The key's current value, or None; ``within`` bounds the attempts as for ``keepalive``."""
        ...

    def list(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key under prefix, and the store revision the list was read at."""
        ...

    def create(self, key: str, value: bytes, lease: int = 0) -> int:
        """Txn(create_revision == 0 ? put : fail); returns the new mod_revision, raises AlreadyExists."""
        ...

    def update(self, key: str, value: bytes, mod_revision: int, lease: int = 0) -> int:
        """Txn(mod_revision == expected ? put : fail); raises Conflict, or NotFound if the key is gone."""
        ...

    def delete(self, key: str, mod_revision: int = 0) -> bool:
        """Deletes the key (only at that mod_revision when given; Conflict otherwise); False if absent."""
        ...

    def watch(self, prefix: str, start_revision: int) -> WatchStream: ...

    def grant_lease(self, ttl: int) -> int: ...

    def keepalive(self, lease_id: int, within: float | None = None) -> int:
        """Renews once (trying for at most ``within`` seconds); the remaining TTL, 0 when the lease is gone."""
        ...

    def revoke_lease(self, lease_id: int) -> None: ...

    def compact(self, revision: int) -> None: ...

    def close(self) -> None: ...


def prefix_end(prefix: str) -> bytes:
    """etcd's range end for a prefix: the prefix with its last byte incremented."""
    b = bytearray(prefix.encode())
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[: i + 1])
    return b"\0"
