"""An in-memory store with etcd's semantics (revisions, txn preconditions, watch history,
compaction, leases), recording every write as an action, as client-go's fake clientset does.

Controller tests seed it, run one ``sync`` and assert ``actions``; informer tests watch it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace

from controlplane.clock import REAL_CLOCK, Clock
from controlplane.store.base import (
    AlreadyExists,
    Compacted,
    Conflict,
    Event,
    KeyValue,
    NotFound,
    Unavailable,
    WatchResponse,
)


@dataclass(frozen=True)
class Action:
    verb: str  # create, update, delete
    key: str
    value: bytes = b""


class FakeStore:
    def __init__(self, clock: Clock = REAL_CLOCK) -> None:
        self.clock = clock
        self._cond = threading.Condition()
        self._data: dict[str, KeyValue] = {}
        self._history: list[tuple[int, Event]] = []
        self.revision = 1
        self.compacted = 0
        self._leases: dict[int, tuple[int, float]] = {}  # id -> (ttl, expiry)
        self._next_lease = 1000
        self.actions: list[Action] = []
        self.fail_next: list[Exception] = []  # raised by the next writes, in order

    # ---- helpers for tests ----

    def clear_actions(self) -> None:
        self.actions.clear()

    def _maybe_fail(self) -> None:
        if self.fail_next:
            raise self.fail_next.pop(0)

    def _put(self, key: str, value: bytes, lease: int) -> int:
        self.revision += 1
        prev = self._data.get(key)
        kv = KeyValue(
            key,
            value,
            prev.create_revision if prev else self.revision,
            self.revision,
            (prev.version + 1) if prev else 1,
            lease,
        )
        self._data[key] = kv
        self._history.append((self.revision, Event("PUT", kv, prev)))
        self._cond.notify_all()
        return self.revision

    def _del(self, key: str) -> None:
        self.revision += 1
        prev = self._data.pop(key)
        self._history.append((self.revision, Event("DELETE", KeyValue(key, b"", 0, self.revision, 0), prev)))
        self._cond.notify_all()

    # ---- Store ----

    def get(self, key: str, within: float | None = None) -> KeyValue | None:
        with self._cond:
            self._expire()
            return self._data.get(key)

    def list(self, prefix: str) -> tuple[list[KeyValue], int]:
        with self._cond:
            self._expire()
            return [kv for k, kv in sorted(self._data.items()) if k.startswith(prefix)], self.revision

    def create(self, key: str, value: bytes, lease: int = 0) -> int:
        with self._cond:
            self._maybe_fail()
            self._expire()
            if key in self._data:
                raise AlreadyExists(key)
            if lease and lease not in self._leases:
                raise NotFound(f"lease {lease}")
            self.actions.append(Action("create", key, value))
            return self._put(key, value, lease)

    def update(self, key: str, value: bytes, mod_revision: int, lease: int = 0) -> int:
        with self._cond:
            self._maybe_fail()
            self._expire()
            cur = self._data.get(key)
            if cur is None:
                raise NotFound(key)
            if cur.mod_revision != mod_revision:
                raise Conflict(key)
            self.actions.append(Action("update", key, value))
            return self._put(key, value, lease)

    def delete(self, key: str, mod_revision: int = 0) -> bool:
        with self._cond:
            self._maybe_fail()
            self._expire()
            cur = self._data.get(key)
            if cur is None:
                return False
            if mod_revision and cur.mod_revision != mod_revision:
                raise Conflict(key)
            self.actions.append(Action("delete", key))
            self._del(key)
            return True

    def compact(self, revision: int) -> None:
        with self._cond:
            self.compacted = max(self.compacted, revision)
            self._history = [(r, e) for r, e in self._history if r >= revision]
            self._cond.notify_all()

    # ---- leases (expire by the injected clock) ----

    def grant_lease(self, ttl: int) -> int:
        with self._cond:
            self._next_lease += 1
            self._leases[self._next_lease] = (ttl, self.clock.monotonic() + ttl)
            return self._next_lease

    def keepalive(self, lease_id: int, within: float | None = None) -> int:
        with self._cond:
            self._expire()
            if lease_id not in self._leases:
                return 0
            ttl, _ = self._leases[lease_id]
            self._leases[lease_id] = (ttl, self.clock.monotonic() + ttl)
            return ttl

    def revoke_lease(self, lease_id: int) -> None:
        with self._cond:
            self._revoke(lease_id)

    def _revoke(self, lease_id: int) -> None:
        if self._leases.pop(lease_id, None) is None:
            return
        for key in [k for k, kv in self._data.items() if kv.lease == lease_id]:
            self._del(key)

    def _expire(self) -> None:
        now = self.clock.monotonic()
        for lid in [lid for lid, (_, exp) in self._leases.items() if exp <= now]:
            self._revoke(lid)

    def expire_leases(self) -> None:
        with self._cond:
            self._expire()

    # ---- watch ----

    def watch(self, prefix: str, start_revision: int) -> _FakeWatch:
        return _FakeWatch(self, prefix, start_revision)

    def close(self) -> None:
        return


class _FakeWatch:
    def __init__(self, store: FakeStore, prefix: str, start_revision: int) -> None:
        self._store = store
        self._prefix = prefix
        self._next = start_revision
        self._cancelled = False
        self.broken = False

    def __iter__(self) -> Iterator[WatchResponse]:
        s = self._store
        while True:
            with s._cond:
                while True:
                    if self._cancelled:
                        return
                    if self.broken:
                        raise Unavailable("watch broken by the test")
                    if self._next < s.compacted:
                        raise Compacted(s.compacted)
                    batch = [(r, e) for r, e in s._history if r >= self._next and e.kv.key.startswith(self._prefix)]
                    if batch:
                        break
                    if s.revision >= self._next:
                        self._next = s.revision + 1
                    s._cond.wait(0.05)
                self._next = batch[-1][0] + 1
            by_rev: dict[int, list[Event]] = {}
            for r, e in batch:
                by_rev.setdefault(r, []).append(replace(e))
            for r, evs in sorted(by_rev.items()):
                yield WatchResponse(r, evs)

    def cancel(self) -> None:
        with self._store._cond:
            self._cancelled = True
            self._store._cond.notify_all()
