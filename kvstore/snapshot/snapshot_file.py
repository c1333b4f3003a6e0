"""The snapshot file: a bbolt database followed by the sha256 of its bytes, as etcd streams it.

Writing: ``write_snapshot`` lays raftkv's backend out as an etcd bbolt file and appends the digest.
Reading: ``open_snapshot`` verifies the digest (etcd's rule: a file whose size is 32 more than a
multiple of 512 ends with one) and bbolt's integrity check before anything trusts the file;
``status`` is what ``etcdctl snapshot status`` prints, computed the same way.
"""

from __future__ import annotations

import hashlib
import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import crc32c

from kvstore.bbolt import BboltError, BoltFile, write_file
from kvstore.bbolt.layout import BUCKET_LEAF_FLAG
from kvstore.mvcc.backend import Backend
from kvstore.mvcc.revision import bytes_to_rev
from kvstore.snapshot import etcd_schema as s
from kvstore.snapshot.errors import SnapshotError
from kvstore.snapshot.export import etcd_tree

SHA_SIZE = 32
_READ = 1 << 20


def has_checksum(size: int) -> bool:
    """etcd's hasChecksum: 512 is the smallest sector size, and bbolt files are whole pages."""
    return size % 512 == SHA_SIZE


def _sha256_of(f: BinaryIO, size: int) -> bytes:
    f.seek(0)
    h = hashlib.sha256()
    left = size
    while left:
        chunk = f.read(min(_READ, left))
        if not chunk:
            raise OSError(f"file ended {left} bytes early while hashing")
        h.update(chunk)
        left -= len(chunk)
    return h.digest()


def write_snapshot(backend: Backend, path: Path, server_version: str) -> int:
    """Writes a consistent copy of backend at path as etcd's snapshot; returns the db's size
    (the file has SHA_SIZE more). Blocking: run it on a worker thread."""
    with open(path, "w+b") as f, backend.begin_read() as txn:
        size = write_file(f, etcd_tree(backend, txn, server_version))
        f.flush()
        digest = _sha256_of(f, size)
        f.seek(size)
        f.write(digest)
        f.flush()
        os.fsync(f.fileno())
    return size


class Snapshot:
    """An opened, verified snapshot file: its bbolt database (close() when done)."""

    def __init__(self, path: Path, db: BoltFile, had_hash: bool) -> None:
        self.path = path
        self.db = db
        self.had_hash = had_hash

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_snapshot(path: Path, skip_hash_check: bool = False) -> Snapshot:
    """Opens path, verifying its sha256 (unless skip_hash_check, for a db copied out of a data
    directory) and bbolt's integrity check; raises SnapshotError naming the problem."""
    path = Path(path)
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below, the map outlives it
    except OSError as exc:
        raise SnapshotError(f"cannot open snapshot {path}: {exc.strerror}") from exc
    with f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise SnapshotError(f"snapshot {path} is empty")
        hashed = has_checksum(size)
        if hashed and not skip_hash_check:
            f.seek(size - SHA_SIZE)
            expected = f.read(SHA_SIZE)
            actual = _sha256_of(f, size - SHA_SIZE)
            if actual != expected:
                raise SnapshotError(
                    f"snapshot {path} is corrupt: the sha256 of its {size - SHA_SIZE} bytes of data is "
                    f"{actual.hex()}, but the file ends with {expected.hex()}"
                )
        elif not hashed and not skip_hash_check:
            raise SnapshotError(
                f"snapshot {path} has no sha256 at its end (its size, {size} bytes, is not 32 more than a "
                "multiple of 512): it is truncated, or a db file copied from a data directory "
                "(restore that with --skip-hash-check)"
            )
        db_size = size - SHA_SIZE if hashed else size
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    view = memoryview(mapped)[:db_size]
    try:
        db = BoltFile(view, str(path))
    except BboltError as exc:
        view.release()
        mapped.close()
        raise SnapshotError(f"snapshot {path} is not a valid bbolt database: {exc.problem}") from exc
    view.release()  # the BoltFile holds its own view
    db.attach(mapped)
    problems = db.check()
    if problems:
        db.close()
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise SnapshotError(f"snapshot {path} fails bbolt's integrity check: {shown}")
    return Snapshot(path, db, hashed)


@dataclass(frozen=True, slots=True)
class Status:
    """What etcdctl snapshot status reports."""

    hash: int
    revision: int
    total_key: int
    total_size: int


def status(db: BoltFile) -> Status:
    """etcdctl's snapshot status: crc32c of every bucket's name and pairs, the last revision in the
    key bucket, the number of pairs in all buckets, and the bytes in use."""
    h = 0
    revision = 0
    total = 0
    try:
        for name, bucket in db.root().buckets():
            h = crc32c.crc32c(name, h)
            is_key = name == s.KEY
            for key, value, flags in bucket.entries():
                h = crc32c.crc32c(key, h)
                if not flags & BUCKET_LEAF_FLAG:  # bbolt's ForEach gives a nested bucket a nil value
                    h = crc32c.crc32c(value, h)
                if is_key:
                    try:
                        revision = bytes_to_rev(key)[0]
                    except ValueError as exc:
                        raise SnapshotError(f"snapshot {db.name}: key bucket: {exc}") from exc
                total += 1
    except BboltError as exc:
        raise SnapshotError(f"snapshot {db.name} is damaged: {exc}") from exc
    return Status(h, revision, total, db.size())
