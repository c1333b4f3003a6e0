"""The snapshot directory: where snapshot files are made, received, kept and found again.

A snapshot is a consistent copy of the member's whole state (the LMDB backend, which holds the
keys, their history, the leases and the membership), made by the state machine; the WAL records
only its index, term and configuration. This module owns the files in between and their names:

- ``outgoing-*/``: copies being sent to a peer, made by ``StateMachine.snapshot_file``; removed
  once the transfer ends, and at start-up.
- ``received-<from>-<index>-*.tmp``: a snapshot arriving from the leader, written chunk by chunk
  with a running CRC-32; removed if the stream breaks, and at start-up.
- ``received-<from>-<term>-<index>.snap`` (hex): a complete, fsynced snapshot (file and directory),
  renamed into place only after its length and CRC matched the sender's. The WAL marks it before
  it is installed (installing moves it into the backend); if a crash comes in between, start-up
  finds it by (term, index) and finishes the install, then removes every other one.

The functions that read, write and sync are blocking: callers run them on a worker thread.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import BinaryIO

CHUNK_SIZE = 1 << 20
"""Bytes per chunk read from a snapshot file being sent."""


class SnapshotDir:
    """The files of one member's snapshot directory (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def prepare(self) -> None:
        """Creates the directory and removes what a previous run left behind. Called once the WAL's
        last snapshot mark is honoured (an install finished moves its file into the backend)."""
        self.path.mkdir(parents=True, exist_ok=True)
        for stale in (*self.path.glob("*.tmp"), *self.path.glob("received-*.snap")):
            stale.unlink()
        for stale in self.path.glob("outgoing-*"):
            shutil.rmtree(stale, ignore_errors=True)

    def received_path(self, sender: int, term: int, index: int) -> Path:
        return self.path / f"received-{sender:x}-{term:x}-{index:x}.snap"

    def find_received(self, term: int, index: int) -> Path | None:
        """The complete snapshot received for (term, index), from whichever leader sent it."""
        return next(iter(sorted(self.path.glob(f"received-*-{term:x}-{index:x}.snap"))), None)

    def open_incoming(self, sender: int, index: int) -> tuple[BinaryIO, Path]:
        """A new temporary file for a snapshot arriving from sender."""
        fd, name = tempfile.mkstemp(prefix=f"received-{sender:x}-{index:x}-", suffix=".tmp", dir=self.path)
        return os.fdopen(fd, "wb"), Path(name)


def remove_outgoing(file: Path) -> None:
    """Removes a sent copy (the folder ``StateMachine.snapshot_file`` made for it)."""
    shutil.rmtree(file.parent, ignore_errors=True)


def open_read(path: Path) -> tuple[BinaryIO, int]:
    f = open(path, "rb")  # noqa: SIM115 - the sender closes it
    return f, os.fstat(f.fileno()).st_size


def read_chunk(f: BinaryIO, crc: int) -> tuple[bytes, int]:
    """The next chunk (empty at the end) and the CRC-32 of everything read so far."""
    data = f.read(CHUNK_SIZE)
    return data, zlib.crc32(data, crc)


def write_chunk(f: BinaryIO, data: bytes, crc: int) -> int:
    f.write(data)
    return zlib.crc32(data, crc)


def commit(f: BinaryIO, tmp: Path, final: Path) -> None:
    """Makes the received file durable under its final name: fsync, rename, fsync the directory."""
    f.flush()
    os.fsync(f.fileno())
    f.close()
    os.replace(tmp, final)
    dfd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def discard(f: BinaryIO, tmp: Path | None) -> None:
    """Closes f and removes tmp (if given): a transfer that did not complete."""
    with contextlib.suppress(OSError):
        f.close()
    if tmp is not None:
        with contextlib.suppress(OSError):
            tmp.unlink()
