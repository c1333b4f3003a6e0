"""The file operations the WAL makes, behind one small interface: the real disk, or a simulated one.

``Disk`` is what ``raft.wal.WAL`` needs of a file system, and nothing more: list and read a
directory's files, create or open a file for appending, write, ``fdatasync``, sync a directory,
truncate, unlink. Handles are opaque integers (file descriptors on the real disk). Every call is
blocking: the node runs WAL calls through its executor (``raft.runtime.Executor``).

``OSDisk`` is the real one (``os`` calls; ``raftkv serve`` uses it). The deterministic simulator
(``tests/sim``) has its own, which keeps what was written apart from what was synced, loses the
unsynced part on a simulated power failure (tearing a record at any byte, leaving unwritten
sectors zero), and can fail a write or an fsync, or run out of space, on command.

The contract a caller may rely on is POSIX's, and no more: data written is durable once
``fdatasync`` on its handle returned; a file created, renamed or unlinked is durable once
``fsync_dir`` on its directory returned; a failed write or sync leaves the file's tail undefined.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol


class Disk(Protocol):
    def is_dir(self, path: Path) -> bool: ...

    def mkdir(self, path: Path) -> None:
        """Creates path and its parents if they do not exist."""
        ...

    def listdir(self, path: Path) -> list[str]:
        """The names of the entries of directory path (any order)."""
        ...

    def read(self, path: Path, limit: int = -1) -> bytes:
        """The file's bytes (its first limit bytes when limit >= 0)."""
        ...

    def create(self, path: Path) -> int:
        """Creates path (it must not exist) and opens it for appending; returns its handle."""
        ...

    def open_append(self, path: Path) -> int:
        """Opens the existing file path for appending; returns its handle."""
        ...

    def size(self, handle: int) -> int: ...

    def write(self, handle: int, data: bytes) -> int:
        """Appends data; returns how many bytes were written (maybe fewer). Raises OSError (ENOSPC, EIO)."""
        ...

    def fdatasync(self, handle: int) -> None:
        """Makes what was written through handle durable. Raises OSError when it cannot."""
        ...

    def close(self, handle: int) -> None: ...

    def fsync_dir(self, path: Path) -> None:
        """Makes the creations, renames and removals of entries of directory path durable."""
        ...

    def truncate(self, path: Path, size: int) -> None:
        """Cuts the file at size bytes, durably."""
        ...

    def unlink(self, path: Path) -> None: ...


class OSDisk:
    """The real file system."""

    def is_dir(self, path: Path) -> bool:
        return path.is_dir()

    def mkdir(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)

    def listdir(self, path: Path) -> list[str]:
        return os.listdir(path)

    def read(self, path: Path, limit: int = -1) -> bytes:
        with open(path, "rb") as f:
            return f.read(limit)

    def create(self, path: Path) -> int:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)

    def open_append(self, path: Path) -> int:
        return os.open(path, os.O_WRONLY | os.O_APPEND)

    def size(self, handle: int) -> int:
        return os.fstat(handle).st_size

    def write(self, handle: int, data: bytes) -> int:
        return os.write(handle, data)

    def fdatasync(self, handle: int) -> None:
        os.fdatasync(handle)

    def close(self, handle: int) -> None:
        os.close(handle)

    def fsync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def truncate(self, path: Path, size: int) -> None:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)

    def unlink(self, path: Path) -> None:
        path.unlink()


OS_DISK = OSDisk()
