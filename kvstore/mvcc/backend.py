"""The durable state of the store: one LMDB environment with etcd's buckets.

Buckets (LMDB named databases), as in etcd's bbolt backend:

- ``key``: encoded revision -> serialized ``mvccpb.KeyValue``; tombstones carry the ``t`` mark.
- ``meta``: ``consistent_index`` and ``term`` (the last applied log entry, written in the same
  transaction as the data it covers, so restart replays exactly the log tail), and
  ``scheduledCompactRev`` / ``finishedCompactRev``.
- ``lease``, ``members`` (with ``members_removed``), ``alarm``, ``auth``: owned by the modules of
  those names (``kvstore.lease``, ``kvstore.membership``, ``kvstore.alarms``, auth).
- ``members_removed``, ``alarm``, ``auth``, ``authUsers``, ``authRoles`` hold etcd's own encodings
  (a removed member's hex id -> ``removed``; an alarm's key is a serialized ``AlarmMember``; users
  and roles are ``authpb`` records), so snapshots carry them to and from etcd byte for byte
  (``kvstore.snapshot.etcd_schema`` has the whole mapping).

Commits are not fsynced one by one: the Raft WAL is the durable record and replays whatever the
backend has not applied. The backend is synced in the background (``sync``), and before the WAL
is allowed to drop entries it covers. A file LMDB cannot open, or one whose pages fail its
checks, stops start-up with a ``StartupError`` naming the file.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import TypeAlias

import lmdb

from raft.errors import StartupError

_U64 = struct.Struct(">Q")

BUCKETS = (b"key", b"meta", b"lease", b"members", b"members_removed", b"alarm", b"auth", b"authUsers", b"authRoles")
DEFAULT_MAP_SIZE = 64 << 30  # address space only; the file grows with the data


Txn: TypeAlias = "lmdb.Transaction[bytes]"
"""A backend transaction (read or write); its values are bytes, never buffers (``begin(buffers=False)``)."""


def u64(value: int) -> bytes:
    return _U64.pack(value)


def from_u64(data: bytes) -> int:
    value: int = _U64.unpack(data)[0]
    return value


class Backend:
    """An LMDB environment in ``<dir>/data.mdb`` with etcd's buckets."""

    def __init__(self, path: Path, map_size: int = DEFAULT_MAP_SIZE) -> None:
        self.path = Path(path)
        self.file = self.path / "data.mdb"
        self.map_size = map_size
        self.path.mkdir(parents=True, exist_ok=True)
        self.dbs: dict[bytes, lmdb._Database] = {}
        self._open()

    def _open(self) -> None:
        try:
            self.env = lmdb.open(
                str(self.path),
                map_size=self.map_size,
                max_dbs=len(BUCKETS) + 2,
                sync=False,
                metasync=False,
                readahead=False,
                max_readers=512,
            )
            dbs = {name: self.env.open_db(name) for name in BUCKETS}
            with self.env.begin() as txn:  # touch every bucket once so a corrupt tree fails now
                for db in dbs.values():
                    txn.stat(db)
        except lmdb.Error as exc:
            raise StartupError(f"backend database {self.file} cannot be opened: {exc}") from exc
        self.dbs.clear()  # the same dict: holders of backend.dbs see the new handles
        self.dbs.update(dbs)
        self.key_db = self.dbs[b"key"]
        self.meta_db = self.dbs[b"meta"]

    def copy_compacted(self, directory: Path) -> Path:
        """Writes a compacted copy (no free pages) of the current state to directory/data.mdb, from one
        read transaction; safe from another thread. Raises lmdb.Error (a full disk, ...)."""
        directory.mkdir(parents=True, exist_ok=True)
        self.env.copy(str(directory), compact=True)
        copied = directory / "data.mdb"
        fd = os.open(copied, os.O_RDONLY)
        try:
            os.fsync(fd)  # durable before it replaces the original
        finally:
            os.close(fd)
        return copied

    def replace_file(self, new_file: Path) -> None:
        """Replaces the database file by new_file (a compacted copy of it, or a snapshot from the leader)
        and reopens the environment in place: the same Backend object, new handles. Nobody may use the
        environment meanwhile."""
        self.env.sync(True)
        self.env.close()
        (self.path / "lock.mdb").unlink(missing_ok=True)
        os.replace(new_file, self.file)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._open()

    def close(self) -> None:
        self.env.sync(True)
        self.env.close()

    def sync(self) -> None:
        """Flushes committed transactions to disk (safe to call from another thread)."""
        self.env.sync(True)

    def begin_read(self) -> Txn:
        return self.env.begin(buffers=False)

    def begin_write(self) -> Txn:
        return self.env.begin(write=True, buffers=False)

    # ---- meta ----

    def get_meta(self, txn: Txn, name: bytes, default: int = 0) -> int:
        raw = txn.get(name, db=self.meta_db)
        if raw is None:
            return default
        if len(raw) != 8:
            raise StartupError(f"backend database {self.file}: meta {name.decode()} is corrupt ({raw!r})")
        return from_u64(raw)

    def put_meta(self, txn: Txn, name: bytes, value: int) -> None:
        txn.put(name, u64(value), db=self.meta_db)

    def consistent_index(self) -> tuple[int, int]:
        """(index, term) of the last log entry whose effects are stored."""
        with self.env.begin() as txn:
            return self.get_meta(txn, b"consistent_index"), self.get_meta(txn, b"term")

    # ---- key bucket ----

    def iter_revisions(self, txn: Txn, start: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        cursor = txn.cursor(db=self.key_db)
        if start:
            if not cursor.set_range(start):
                return
        elif not cursor.first():
            return
        yield from cursor.iternext()

    def last_revision_key(self, txn: Txn) -> bytes | None:
        cursor = txn.cursor(db=self.key_db)
        return cursor.key() if cursor.last() else None

    # ---- sizes ----

    def size(self) -> int:
        """Bytes of the database file."""
        try:
            return os.path.getsize(self.file)
        except OSError:
            return 0

    def size_in_use(self) -> int:
        """Bytes up to LMDB's high-water page (LMDB does not expose its free-page count)."""
        return (self.env.info()["last_pgno"] + 1) * self.env.stat()["psize"]
