"""The multi-version key-value store: reads at any revision, writes that each make one revision.

``KVStore`` joins the in-memory ``TreeIndex`` to the LMDB ``Backend``. A ``WriteTxn`` is one
store revision (a Put, a DeleteRange or a whole Txn): every change in it shares the main
revision and gets its own sub revision, and the revision is only consumed if something changed.
Many WriteTxns share one backend transaction (the applier's batch), which also records the
applied log index, so the backend always holds a prefix of the log.

Compaction happens in two steps, as in etcd: at apply time the index forgets history at or
below the revision (reads there fail with ``CompactedError`` at once), then ``CompactionJob`` removes
the stored revisions in bounded batches, in separate transactions, so a large compaction never
stalls the server. An interrupted job is finished when the store next opens.

A snapshot from the leader is installed in place (etcd's ``kv.Restore``): the backend swaps its
file, then ``restore`` rebuilds the index from it; the ``KVStore`` object stays, and its
``generation`` tells holders of an older ``CompactionJob`` that the job no longer applies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from google.protobuf.message import DecodeError

from kvstore.mvcc.backend import Backend, Txn
from kvstore.mvcc.errors import CompactedError, FutureRevError
from kvstore.mvcc.index import TreeIndex
from kvstore.mvcc.revision import Revision, bytes_to_rev, rev_to_bytes, tombstone_to_bytes
from kvstore.mvcc.stats import MvccStats
from proto.mvccpb.kv_pb2 import KeyValue
from raft.errors import StartupError

EVENT_PUT = 0
EVENT_DELETE = 1

SCHEDULED_COMPACT = b"scheduledCompactRev"
FINISHED_COMPACT = b"finishedCompactRev"


class LeaseHooks(Protocol):
    """What the store tells the lessor about keys (the lessor keeps key -> lease)."""

    def lease_of(self, key: bytes) -> int: ...

    def attach(self, lease_id: int, key: bytes) -> None: ...

    def detach(self, lease_id: int, key: bytes) -> None: ...


@dataclass(slots=True)
class RangeResult:
    kvs: list[KeyValue]
    count: int  # keys in the range at the revision, before any limit
    rev: int  # the store's current revision when the range was served


@dataclass(slots=True)
class CompactionJob:
    """The physical part of a compaction: delete stored revisions <= rev except those in keep."""

    rev: int
    keep: set[Revision]
    resume_from: bytes = b""
    done: bool = False
    waiters: list[asyncio.Future[None]] = field(default_factory=list)  # Member.wait_compaction's


class KVStore:
    def __init__(self, backend: Backend, leases: LeaseHooks | None = None, stats: MvccStats | None = None) -> None:
        self.backend = backend
        self.leases = leases
        self.stats = stats if stats is not None else MvccStats()
        self.index = TreeIndex()
        self.current_rev = 1  # an empty store is at revision 1, as etcd's is
        self.compact_main_rev = -1
        self.pending_compactions: list[CompactionJob] = []
        self.generation = 0  # bumped by every restore
        self._restore()

    def restore(self) -> None:
        """Starts over from the backend's current contents (a snapshot was installed under it); the
        lessor must have been reloaded first, as this re-attaches every leased key to it."""
        self.index = TreeIndex()
        self.current_rev = 1
        self.compact_main_rev = -1
        self.pending_compactions = []
        self.generation += 1
        self._restore()

    # ---- opening ----

    def _restore(self) -> None:
        """Rebuilds the key index from the backend, and resumes an interrupted compaction."""
        backend = self.backend
        index = self.index
        key_lease: dict[bytes, int] = {}
        last_main = 0
        with backend.begin_read() as txn:
            scheduled = backend.get_meta(txn, SCHEDULED_COMPACT, -1)
            finished = backend.get_meta(txn, FINISHED_COMPACT, -1)
            for raw_rev, raw_kv in backend.iter_revisions(txn):
                try:
                    main, sub, tombstone = bytes_to_rev(raw_rev)
                    kv = KeyValue.FromString(raw_kv)
                except (ValueError, DecodeError) as exc:
                    raise StartupError(
                        f"backend database {backend.file} is corrupt: bad record at revision key {raw_rev!r}: {exc}"
                    ) from exc
                rev = (main, sub)
                if tombstone:
                    index.restore_tombstone(kv.key, rev)
                    key_lease.pop(kv.key, None)
                else:
                    index.restore(kv.key, (kv.create_revision, 0), rev, kv.version)
                    if kv.lease:
                        key_lease[kv.key] = kv.lease
                    else:
                        key_lease.pop(kv.key, None)
                last_main = main
        self.current_rev = max(last_main, finished, scheduled, 1)
        self.compact_main_rev = finished
        self.stats.keys = index.alive(self.current_rev)
        if self.leases is not None:
            for key, lease_id in key_lease.items():
                self.leases.attach(lease_id, key)
        if scheduled > finished:
            self.compact_main_rev = scheduled
            keep = index.compact(scheduled)
            self.pending_compactions.append(CompactionJob(scheduled, keep))

    # ---- reading ----

    @contextmanager
    def read(self) -> Iterator[ReadView]:
        txn = self.backend.begin_read()
        try:
            yield ReadView(self, txn)
        finally:
            txn.abort()

    def range(
        self, key: bytes, end: bytes | None, rev: int = 0, limit: int = 0, count_only: bool = False
    ) -> RangeResult:
        with self.read() as view:
            return view.range(key, end, rev, limit, count_only)

    def _range(
        self,
        txn: Txn,
        key: bytes,
        end: bytes | None,
        cur_rev: int,
        rev: int,
        limit: int,
        count_only: bool,
    ) -> RangeResult:
        if rev > cur_rev:
            raise FutureRevError()
        if rev <= 0:
            rev = cur_rev
        if rev < self.compact_main_rev:
            raise CompactedError()
        self.stats.ranges += 1
        pairs = self.index.revisions(key, end, rev)
        total = len(pairs)
        if count_only or not pairs:
            return RangeResult([], total, cur_rev)
        if 0 < limit < total:
            pairs = pairs[:limit]
        get = txn.get
        db = self.backend.key_db
        from_string = KeyValue.FromString
        kvs = []
        for ki, (main, sub) in pairs:
            raw = get(rev_to_bytes(main, sub), db=db)
            if raw is None:
                raise RuntimeError(f"index and backend disagree: {ki.key!r} at {(main, sub)} is not stored")
            kvs.append(from_string(raw))
        return RangeResult(kvs, total, cur_rev)

    # ---- writing ----

    def write(self, txn: Txn) -> WriteTxn:
        """Starts one store revision inside the backend write transaction txn."""
        return WriteTxn(self, txn)

    def compact(self, txn: Txn, rev: int) -> CompactionJob:
        """Compacts the index at rev now; returns the job that removes the stored history."""
        if rev <= self.compact_main_rev:
            raise CompactedError()
        if rev > self.current_rev:
            raise FutureRevError()
        self.compact_main_rev = rev
        self.backend.put_meta(txn, SCHEDULED_COMPACT, rev)
        job = CompactionJob(rev, self.index.compact(rev))
        self.pending_compactions.append(job)
        return job

    def compaction_step(self, job: CompactionJob, batch: int = 1000) -> bool:
        """Deletes up to batch stored revisions of job in one transaction; True when finished."""
        backend = self.backend
        end = rev_to_bytes(job.rev + 1, 0)
        keep = job.keep
        with backend.begin_write() as txn:
            cursor = txn.cursor(db=backend.key_db)
            positioned = cursor.set_range(job.resume_from) if job.resume_from else cursor.first()
            deleted = 0
            while positioned:
                raw = cursor.key()
                if raw >= end:
                    positioned = False
                    break
                main, sub, _ = bytes_to_rev(raw)
                if (main, sub) in keep:
                    positioned = cursor.next()
                    continue
                if deleted >= batch:
                    break
                cursor.delete()  # moves to the next record, if there is one
                positioned = bool(cursor.key())
                deleted += 1
            if positioned:
                job.resume_from = cursor.key()
            else:
                job.done = True
                if backend.get_meta(txn, FINISHED_COMPACT, -1) < job.rev:
                    backend.put_meta(txn, FINISHED_COMPACT, job.rev)
        return job.done


class ReadView:
    """A consistent read of the store at its current revision (one LMDB read transaction)."""

    __slots__ = ("store", "txn")

    def __init__(self, store: KVStore, txn: Txn) -> None:
        self.store = store
        self.txn = txn

    def rev(self) -> int:
        return self.store.current_rev

    def first_rev(self) -> int:
        return self.store.compact_main_rev

    def range(
        self, key: bytes, end: bytes | None, rev: int = 0, limit: int = 0, count_only: bool = False
    ) -> RangeResult:
        store = self.store
        return store._range(self.txn, key, end, store.current_rev, rev, limit, count_only)


class WriteTxn:
    """One store revision: reads see the writes made so far in it."""

    __slots__ = ("begin_rev", "changes", "store", "txn")

    def __init__(self, store: KVStore, txn: Txn) -> None:
        self.store = store
        self.txn = txn
        self.begin_rev = store.current_rev
        # (event type, KeyValue) in order; for a deletion the KeyValue holds key and mod_revision
        self.changes: list[tuple[int, KeyValue]] = []

    def rev(self) -> int:
        return self.begin_rev + 1 if self.changes else self.begin_rev

    def first_rev(self) -> int:
        return self.store.compact_main_rev

    def range(
        self, key: bytes, end: bytes | None, rev: int = 0, limit: int = 0, count_only: bool = False
    ) -> RangeResult:
        return self.store._range(self.txn, key, end, self.rev(), rev, limit, count_only)

    def put(self, key: bytes, value: bytes, lease: int) -> int:
        store = self.store
        rev = self.begin_rev + 1
        got = store.index.get(key, rev)
        if got is None:
            created, ver = rev, 1
            store.stats.keys += 1
        else:
            created, ver = got[1][0], got[2] + 1
        kv = KeyValue(key=key, value=value, create_revision=created, mod_revision=rev, version=ver, lease=lease)
        sub = len(self.changes)
        self.txn.put(rev_to_bytes(rev, sub), kv.SerializeToString(), db=store.backend.key_db, append=True)
        store.index.put(key, (rev, sub))
        self.changes.append((EVENT_PUT, kv))
        store.stats.puts += 1
        leases = store.leases
        if leases is not None:
            old = leases.lease_of(key)
            if old != lease:
                if old:
                    leases.detach(old, key)
                if lease:
                    leases.attach(lease, key)
        return rev

    def delete_range(self, key: bytes, end: bytes | None) -> tuple[int, int]:
        """Deletes every key alive in the range; returns (number deleted, revision)."""
        store = self.store
        store.stats.deletes += 1
        alive = store.index.revisions(key, end, self.rev())
        for ki, _ in alive:
            self._delete(ki.key)
        if alive or self.changes:
            return len(alive), self.begin_rev + 1
        return 0, self.begin_rev

    def _delete(self, key: bytes) -> None:
        store = self.store
        rev = self.begin_rev + 1
        sub = len(self.changes)
        self.txn.put(
            tombstone_to_bytes(rev, sub), KeyValue(key=key).SerializeToString(), db=store.backend.key_db, append=True
        )
        store.index.tombstone(key, (rev, sub))
        self.changes.append((EVENT_DELETE, KeyValue(key=key, mod_revision=rev)))
        store.stats.keys -= 1
        leases = store.leases
        if leases is not None:
            old = leases.lease_of(key)
            if old:
                leases.detach(old, key)

    def end(self) -> None:
        """Closes the revision: the store's revision moves on only if something changed."""
        if self.changes:
            self.store.current_rev = self.begin_rev + 1
