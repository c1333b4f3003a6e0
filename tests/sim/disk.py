"""A simulated machine's storage: the WAL's disk (faults and all) and the backend's durability.

``SimDisk`` implements ``raft.disk.Disk`` in memory and keeps, for every file, what was written
apart from what was synced. A **process crash** keeps everything written (the OS still has it).
A **power failure** keeps what was synced, and of each file's unsynced tail a prefix cut at any
byte whose last sectors may read as zeros (sectors are written whole or not at all); a file whose
creation was not made durable (``fsync_dir``) may vanish, an unlink not made durable may be
undone. That is exactly the contract the WAL's recovery is written against (``raft.wal``: a torn
tail is cut short, or ends in zero sectors, with no intact record after it). A disk that keeps a
later sector while losing an earlier one of the same unsynced tail is not modelled: the WAL does
not claim to survive it.

Faults on command (``DiskFaults``): a full disk (``ENOSPC``, after a short write of what fits), a
failing ``fdatasync`` or ``write`` (``EIO``), short writes. After a failed sync the file's unsynced
tail is undefined: a later power failure may keep any prefix of it, as above.

The backend is LMDB in a real directory (tmpfs when there is one), opened with ``sync=False`` as
``raftkv serve`` opens it. ``SimBackend`` records the database file's bytes every time the member
makes it durable (``sync``, ``replace_file``, ``close``); a power failure puts that image back (or
removes the file if it was never synced), so the backend loses everything since its last sync,
which is the most a real crash can take from it; a process crash loses nothing. (LMDB without
syncs can in truth also be corrupted by a power failure when the file system reorders its page
writes; the simulation does not model that.) Received snapshots live in that real directory too:
the node only ever uses one that was completely received and made durable, so a crash cannot
take it away, and the snapshot directory's leftovers are removed at start (``raft.snapshot``).
"""

from __future__ import annotations

import errno
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

from kvstore.mvcc import Backend

SECTOR = 512


@dataclass
class DiskFaults:
    full: bool = False  # no space left: writes fail with ENOSPC (the first one short)
    fsync_error: float = 0.0  # chance that an fdatasync fails with EIO
    write_error: float = 0.0  # chance that a write fails with EIO
    short_write: float = 0.0  # chance that a write writes only part of its bytes


class _File:
    __slots__ = ("data", "entry_durable", "synced")

    def __init__(self) -> None:
        self.data = bytearray()
        self.synced = 0  # data[:synced] survives a power failure
        self.entry_durable = False  # the directory entry survives a power failure


class SimDisk:
    """raft.disk.Disk in memory, for one machine."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.faults = DiskFaults()
        self.files: dict[str, _File] = {}
        self.dirs: set[str] = set()
        self._unlinked: dict[str, _File] = {}  # removed, but not durably
        self._handles: dict[int, str] = {}
        self._next_handle = 3
        self._room: int | None = None  # bytes left on a full disk
        self.stats = {"writes": 0, "syncs": 0, "enospc": 0, "eio": 0, "short": 0, "torn": 0, "lost_files": 0}

    # ---- raft.disk.Disk ----

    def is_dir(self, path: Path) -> bool:
        return str(path) in self.dirs

    def mkdir(self, path: Path) -> None:
        for p in (path, *path.parents):
            self.dirs.add(str(p))

    def listdir(self, path: Path) -> list[str]:
        prefix = str(path) + "/"
        return sorted(name[len(prefix) :] for name in self.files if name.startswith(prefix))

    def read(self, path: Path, limit: int = -1) -> bytes:
        f = self._file(str(path))
        return bytes(f.data if limit < 0 else f.data[:limit])

    def create(self, path: Path) -> int:
        key = str(path)
        if key in self.files:
            raise FileExistsError(errno.EEXIST, "file exists", key)
        self.files[key] = _File()
        return self._open(key)

    def open_append(self, path: Path) -> int:
        key = str(path)
        self._file(key)
        return self._open(key)

    def size(self, handle: int) -> int:
        return len(self._by_handle(handle).data)

    def write(self, handle: int, data: bytes) -> int:
        f = self._by_handle(handle)
        faults, rng = self.faults, self.rng
        self.stats["writes"] += 1
        if faults.write_error and rng.random() < faults.write_error:
            self.stats["eio"] += 1
            raise OSError(errno.EIO, "simulated I/O error on write")
        n = len(data)
        if faults.full:
            if self._room is None:
                self._room = rng.randrange(n)  # what still fits when the disk fills up
            if self._room == 0:
                self.stats["enospc"] += 1
                raise OSError(errno.ENOSPC, "simulated full disk")
            n = min(n, self._room)
            self._room -= n
        elif n > 1 and faults.short_write and rng.random() < faults.short_write:
            self.stats["short"] += 1
            n = rng.randrange(1, n)
        if not faults.full:
            self._room = None
        f.data += data[:n]
        return n

    def fdatasync(self, handle: int) -> None:
        f = self._by_handle(handle)
        self.stats["syncs"] += 1
        if self.faults.fsync_error and self.rng.random() < self.faults.fsync_error:
            self.stats["eio"] += 1
            raise OSError(errno.EIO, "simulated I/O error on fdatasync")
        f.synced = len(f.data)

    def close(self, handle: int) -> None:
        self._handles.pop(handle, None)

    def fsync_dir(self, path: Path) -> None:
        prefix = str(path) + "/"
        for name, f in self.files.items():
            if name.startswith(prefix):
                f.entry_durable = True
        for name in [n for n in self._unlinked if n.startswith(prefix)]:
            del self._unlinked[name]

    def truncate(self, path: Path, size: int) -> None:
        f = self._file(str(path))
        del f.data[size:]
        f.synced = len(f.data)

    def unlink(self, path: Path) -> None:
        key = str(path)
        f = self.files.pop(key, None)
        if f is None:
            raise FileNotFoundError(errno.ENOENT, "no such file", key)
        if f.entry_durable:
            self._unlinked[key] = f

    # ---- crashes ----

    def process_crash(self) -> None:
        """The process died; the OS keeps every byte written, synced or not."""
        self._handles.clear()

    def power_failure(self) -> None:
        """The machine lost power: only what was durable survives, and unsynced tails tear."""
        rng = self.rng
        self._handles.clear()
        for key in list(self.files):
            f = self.files[key]
            if not f.entry_durable and rng.random() < 0.5:
                del self.files[key]
                self.stats["lost_files"] += 1
                continue
            f.entry_durable = True
            tail = len(f.data) - f.synced
            if tail:
                roll = rng.random()
                keep = f.synced if roll < 0.35 else len(f.data) if roll < 0.55 else f.synced + rng.randint(0, tail)
                del f.data[keep:]
                if keep > f.synced and rng.random() < 0.3:
                    z = max(f.synced, rng.randint(f.synced, keep) // SECTOR * SECTOR)
                    f.data[z:keep] = bytes(keep - z)
                if keep < f.synced + tail:
                    self.stats["torn"] += 1
                f.synced = len(f.data)
        for key, f in self._unlinked.items():
            if rng.random() < 0.5 and key not in self.files:
                del f.data[f.synced :]
                self.files[key] = f
        self._unlinked.clear()

    # ---- internals ----

    def _open(self, key: str) -> int:
        handle = self._next_handle
        self._next_handle += 1
        self._handles[handle] = key
        return handle

    def _file(self, key: str) -> _File:
        f = self.files.get(key)
        if f is None:
            raise FileNotFoundError(errno.ENOENT, "no such file", key)
        return f

    def _by_handle(self, handle: int) -> _File:
        key = self._handles.get(handle)
        if key is None:
            raise OSError(errno.EBADF, "bad file handle (its process died)")
        return self._file(key)


class SimBackend(Backend):
    """The LMDB backend of a simulated machine: every durable point is recorded for power failures."""

    def __init__(self, path: Path, machine: Machine) -> None:
        self.machine = machine
        super().__init__(path)

    def _capture(self) -> None:
        self.machine.backend_image = self.file.read_bytes()

    def sync(self) -> None:
        super().sync()
        self._capture()

    def replace_file(self, new_file: Path) -> None:
        super().replace_file(new_file)
        self._capture()

    def close(self) -> None:
        super().close()
        self._capture()


class Machine:
    """What outlives a member's process: its WAL disk, its backend's files and its snapshot directory."""

    def __init__(self, member_id: int, root: Path, rng: random.Random) -> None:
        self.member_id = member_id
        self.root = root / f"m{member_id}"
        self.disk = SimDisk(rng)
        self.rng = rng
        self.backend_image: bytes | None = None
        self.backend: SimBackend | None = None
        self.wal_dir = Path(f"/sim/m{member_id}/wal")  # a path in the SimDisk only
        self.db_dir = self.root / "db"
        self.snap_dir = self.root / "snap"
        self.power_failures = 0

    def open_backend(self) -> SimBackend:
        self.backend = SimBackend(self.db_dir, self)
        return self.backend

    def crash(self, power_failure: bool) -> None:
        """The member's process is gone; with power_failure, so is everything not durable."""
        if self.backend is not None:
            try:
                self.backend.env.close()  # no sync: what LMDB wrote is in the OS's hands
            finally:
                self.backend = None
        (self.db_dir / "lock.mdb").unlink(missing_ok=True)
        if not power_failure:
            self.disk.process_crash()
            return
        self.power_failures += 1
        self.disk.power_failure()
        data = self.db_dir / "data.mdb"
        if self.backend_image is None:
            data.unlink(missing_ok=True)
        else:
            data.write_bytes(self.backend_image)
        for tmp in self.snap_dir.glob("*.tmp") if self.snap_dir.exists() else ():
            tmp.unlink()

    def destroy(self) -> None:
        if self.backend is not None:
            self.backend.env.close()
            self.backend = None
        shutil.rmtree(self.root, ignore_errors=True)
