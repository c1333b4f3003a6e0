"""The Maintenance operations on a running member's state, transport-free: Snapshot, Hash, HashKV.

The gRPC (or any other) service is a thin wrapper: it awaits these and turns the results into
responses. Long work (writing a snapshot, hashing a large backend) runs on a worker thread over
one LMDB read transaction, so the member keeps applying meanwhile; the backend lock is held shared
for the duration (installing a snapshot from the leader closes the environment, holding it
exclusively). The lock is taken on a worker thread, never by blocking the event loop.

- ``make_snapshot`` writes the member's backend as an etcd snapshot file (bbolt, then sha256)
  and ``snapshot_chunks`` reads it back as etcd sends it: 32 KiB blobs of the database, each
  with the bytes remaining after it, then one blob with the sha256 and nothing remaining.
- ``hash_backend`` is etcd's Hash; ``hash_kv`` is etcd's HashKV, with its errors: a revision at
  or below the compaction revision is ``CompactedError``, one above the current revision ``FutureRevError``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from kvstore.mvcc.backend import Backend
from kvstore.mvcc.errors import CompactedError, FutureRevError
from kvstore.mvcc.shared_lock import SharedLock
from kvstore.mvcc.store import KVStore
from kvstore.snapshot import hashing
from kvstore.snapshot.export import etcd_buckets
from kvstore.snapshot.snapshot_file import SHA_SIZE, write_snapshot

SEND_CHUNK = 32 * 1024  # etcd's snapshotSendBufferSize


class MemberState(Protocol):
    """What these operations read of a member."""

    backend: Backend
    store: KVStore

    @property
    def backend_lock(self) -> SharedLock: ...


async def _acquire(lock: SharedLock) -> None:
    """Takes lock shared on a worker thread; if the caller is cancelled meanwhile, it is given back."""
    fut = asyncio.get_running_loop().run_in_executor(None, lock.acquire_shared)
    try:
        await asyncio.shield(fut)
    except asyncio.CancelledError:
        fut.add_done_callback(lambda f: lock.release_shared() if not f.cancelled() and f.exception() is None else None)
        raise


async def make_snapshot(member: MemberState, path: Path, server_version: str) -> int:
    """Writes the member's backend to path as an etcd snapshot; returns the database's size."""
    lock = member.backend_lock
    await _acquire(lock)
    backend = member.backend

    def work() -> int:
        try:
            return write_snapshot(backend, path, server_version)
        finally:
            lock.release_shared()

    return await asyncio.get_running_loop().run_in_executor(None, work)


def snapshot_chunks(path: Path, chunk_size: int = SEND_CHUNK) -> Iterator[tuple[bytes, int]]:
    """(blob, remaining bytes) as etcd's Maintenance.Snapshot sends a snapshot file written by
    make_snapshot: the database in chunks, then the sha256 with 0 remaining."""
    with open(path, "rb") as f:
        total = os.fstat(f.fileno()).st_size - SHA_SIZE
        sent = 0
        while sent < total:
            blob = f.read(min(chunk_size, total - sent))
            if not blob:
                raise OSError(f"snapshot file {path} ended after {sent} of {total} bytes")
            sent += len(blob)
            yield blob, total - sent
        digest = f.read(SHA_SIZE)
        if len(digest) != SHA_SIZE:
            raise OSError(f"snapshot file {path} has no sha256 at its end")
        yield digest, 0


async def hash_backend(member: MemberState, server_version: str) -> tuple[int, int]:
    """etcd's Hash: (crc32c of the whole backend, the revision it was taken at)."""
    lock = member.backend_lock
    await _acquire(lock)
    try:
        backend = member.backend
        revision = member.store.current_rev
        txn = backend.begin_read()  # opened with the revision read, on the loop: they agree
    except BaseException:
        lock.release_shared()
        raise

    def work() -> int:
        try:
            return hashing.hash_buckets(etcd_buckets(backend, txn, server_version))
        finally:
            txn.abort()
            lock.release_shared()

    return await asyncio.get_running_loop().run_in_executor(None, work), revision


async def hash_kv(member: MemberState, revision: int) -> tuple[int, int, int]:
    """etcd's HashKV: (hash, current revision, compaction revision); raises CompactedError, FutureRevError."""
    lock = member.backend_lock
    await _acquire(lock)
    try:
        store = member.store
        backend = member.backend
        compact_rev, current_rev = store.compact_main_rev, store.current_rev
        if 0 < revision <= compact_rev:
            raise CompactedError()
        if revision > current_rev:
            raise FutureRevError()
        rev = revision or current_rev
        keep = hashing.etcd_keep(store.index, rev)
        txn = backend.begin_read()
    except BaseException:
        lock.release_shared()
        raise

    def work() -> int:
        try:
            return hashing.hash_kv(backend, txn, rev, compact_rev, keep)
        finally:
            txn.abort()
            lock.release_shared()

    h = await asyncio.get_running_loop().run_in_executor(None, work)
    return h, current_rev, compact_rev
