"""Shared pieces of the lease tests: a fake clock and a lessor + store on a fresh backend."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kvstore.lease import Lessor
from kvstore.mvcc import Backend, KVStore
from kvstore.mvcc.store import WriteTxn


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Node:
    """What a member keeps for leases: backend, lessor (created first) and store."""

    path: Path
    clock: FakeClock
    backend: Backend
    lessor: Lessor
    store: KVStore
    closed: bool = False

    @classmethod
    def open(cls, path: Path, clock: FakeClock | None = None, min_ttl: int = 2, **kw: object) -> Node:
        clock = clock or FakeClock()
        backend = Backend(path)
        lessor = Lessor(backend, min_ttl=min_ttl, clock=clock, **kw)  # type: ignore[arg-type]
        store = KVStore(backend, leases=lessor)
        return cls(path, clock, backend, lessor, store)

    def reopen(self, **kw: object) -> Node:
        self.close()
        return Node.open(self.path, self.clock, min_ttl=self.lessor.min_ttl, **kw)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.backend.close()

    def write(self, fn) -> tuple[object, WriteTxn]:
        """Runs fn(write txn) as one store revision in one backend transaction, as the applier does."""
        txn = self.backend.begin_write()
        try:
            w = self.store.write(txn)
            result = fn(w)
            w.end()
            txn.commit()
        except BaseException:
            txn.abort()
            raise
        return result, w

    def grant(self, lease_id: int, ttl: int) -> object:
        return self.write(lambda w: self.lessor.grant(w.txn, lease_id, ttl))[0]

    def put(self, key: bytes, value: bytes = b"v", lease: int = 0) -> int:
        return self.write(lambda w: w.put(key, value, lease))[0]  # type: ignore[return-value]

    def keys(self) -> dict[bytes, int]:
        """key -> lease of every live key."""
        return {kv.key: kv.lease for kv in self.store.range(b"\x00", b"").kvs}
