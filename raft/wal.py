"""The write-ahead log: the durable record of Raft's entries, hard state and snapshot marks.

Layout: ``<dir>/<seq:016x>-<first index:016x>.wal`` segment files, written in order; a new
segment starts when the current one passes ``SEGMENT_BYTES``. Each record is framed as::

    u32 length (little-endian) | u32 CRC-32 of the payload | payload (msgpack array)

Payloads: ``[METADATA, member_id, cluster_id]`` opens every segment; ``[ENTRY, term, index,
type, data]``; ``[HARD_STATE, term, vote, commit]``; ``[SNAPSHOT, index, term, voters, learners, replaces_log]``
marks that entries up to index are covered by a snapshot (the backend, synced before the mark is
written) whose membership was voters and learners; a snapshot received from the leader
(``replaces_log``) also discards every entry read so far, as it replaces the whole log. An entry
whose index is at or below the last one read replaces the tail from there on (a follower's log
being overwritten by a leader).

``save`` writes a batch of records with one ``write`` and one ``fdatasync`` (``sync=False`` skips
the sync, for a commit index alone): a caller may acknowledge what it saved only after ``save``
returns. A failed write or sync poisons the WAL:
every later call raises ``WALError``, since after a failed fsync nothing about the file can be
trusted (the member must stop).

All file operations go through a ``raft.disk.Disk`` (the real disk by default; the simulator's
in ``tests/sim``).

Recovery (``WAL.open``): a record cut short at the end of the last segment, or one whose unwritten
sectors are still zero, with no intact record after it, is a torn write from a crash and is
truncated away (it was never acknowledged). Any other damage (a bad CRC in written data, an intact
record after the damage, a record that does not decode, a gap in the entries) refuses to start
with a ``StartupError`` naming the file and offset: nothing is dropped silently.
"""

from __future__ import annotations

import logging
import re
import struct
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import msgpack

from raft import failpoints
from raft.disk import OS_DISK, Disk
from raft.errors import StartupError
from raft.stats import Histogram

log = logging.getLogger("raftkv.wal")

METADATA, ENTRY, HARD_STATE, SNAPSHOT = 0, 1, 2, 3
SEGMENT_BYTES = 64 << 20
_FRAME = struct.Struct("<II")
_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.wal$")


class WALError(OSError):
    """The WAL could not persist a batch; nothing in it may be acknowledged and the member must stop."""


class EntryLike(Protocol):
    term: int
    index: int
    type: Any
    data: bytes


@dataclass(slots=True)
class WalEntry:
    term: int
    index: int
    type: int = 0
    data: bytes = b""


@dataclass(slots=True)
class WalState:
    """What a WAL held when opened."""

    member_id: int = 0
    cluster_id: int = 0
    term: int = 0
    vote: int = 0
    commit: int = 0
    snapshot_index: int = 0
    snapshot_term: int = 0
    snapshot_voters: tuple[int, ...] = ()
    snapshot_learners: tuple[int, ...] = ()
    snapshot_replaces_log: bool = False  # the last snapshot mark is one received from a leader
    entries: list[Any] = field(default_factory=list)  # entries after snapshot_index, contiguous


def _frame(payload: Sequence[Any]) -> bytes:
    body = msgpack.packb(payload)
    return _FRAME.pack(len(body), zlib.crc32(body)) + body


def _segments(disk: Disk, directory: Path) -> list[Path]:
    return sorted(directory / n for n in disk.listdir(directory) if _NAME.match(n))


class WAL:
    def __init__(
        self,
        directory: Path,
        member_id: int,
        cluster_id: int,
        segments: list[Path],
        next_index: int,
        disk: Disk = OS_DISK,
    ) -> None:
        self.dir = directory
        self.disk = disk
        self.member_id = member_id
        self.cluster_id = cluster_id
        self.segments = segments  # oldest first; the last is open for appending
        self._fd = -1
        self._size = 0
        self._next_index = next_index  # index the next appended entry is expected to have
        self._poisoned: BaseException | None = None
        self._hard_state: tuple[int, int, int] = (0, 0, 0)
        self.fsync_seconds: Histogram | None = None  # the node's WAL fsync histogram (metrics)

    # ---- opening ----

    @staticmethod
    def exists(directory: Path, disk: Disk = OS_DISK) -> bool:
        return disk.is_dir(directory) and any(_NAME.match(n) for n in disk.listdir(directory))

    @staticmethod
    def read_identity(directory: Path, disk: Disk = OS_DISK) -> tuple[int, int] | None:
        """(member id, cluster id) the log in directory belongs to, from its first record; None if
        there is no log (a torn or corrupt first record is left for ``open`` to report)."""
        if not WAL.exists(directory, disk):
            return None
        first = _segments(disk, directory)[0]
        data = disk.read(first, 1 << 16)
        head = data[: _FRAME.size]
        if len(head) < _FRAME.size:
            return None
        length, crc = _FRAME.unpack(head)
        body = data[_FRAME.size : _FRAME.size + length]
        if len(body) != length or zlib.crc32(body) != crc:
            return None
        try:
            kind, member_id, cluster_id = msgpack.unpackb(body)
        except (ValueError, TypeError, msgpack.UnpackException):
            return None
        return (member_id, cluster_id) if kind == METADATA else None

    @classmethod
    def create(cls, directory: Path, member_id: int, cluster_id: int, disk: Disk = OS_DISK) -> WAL:
        disk.mkdir(directory)
        if cls.exists(directory, disk):
            raise StartupError(f"WAL directory {directory} already holds a log")
        wal = cls(directory, member_id, cluster_id, [], 1, disk)
        wal._start_segment(1)
        return wal

    @classmethod
    def open(
        cls,
        directory: Path,
        entry_factory: Callable[[int, int, int, bytes], Any] = WalEntry,
        disk: Disk = OS_DISK,
    ) -> tuple[WAL, WalState]:
        names = _segments(disk, directory)
        if not names:
            raise StartupError(f"WAL directory {directory} holds no segments")
        state = WalState()
        entries: list[Any] = state.entries
        last_index = 0
        for n, path in enumerate(names):
            last = n == len(names) - 1
            data = disk.read(path)
            pos = 0
            while pos < len(data):
                problem = None
                if len(data) - pos < _FRAME.size:
                    problem = "short record header"
                else:
                    length, crc = _FRAME.unpack_from(data, pos)
                    end = pos + _FRAME.size + length
                    if length == 0:
                        # every record has a body; an all-zero header (length 0, CRC 0, which is the
                        # CRC of nothing) is a sector the disk never wrote, not an empty record
                        problem = "zero-length record"
                    elif end > len(data):
                        problem = f"record of {length} bytes cut short"
                    else:
                        body = data[pos + _FRAME.size : end]
                        if zlib.crc32(body) != crc:
                            problem = "CRC mismatch"
                if problem is not None:
                    torn = (problem != "CRC mismatch" or _has_zero_sector(data, pos)) and not _valid_record_after(
                        data, pos
                    )
                    if last and torn:
                        log.warning(
                            "repairing torn WAL tail",
                            extra={"file": str(path), "offset": pos, "dropped_bytes": len(data) - pos, "why": problem},
                        )
                        disk.truncate(path, pos)
                        break
                    raise StartupError(
                        f"WAL file {path} is corrupt at offset {pos} ({problem}); refusing to start. "
                        "The log before this point is intact; restore the member from a snapshot or a peer."
                    )
                try:
                    rec = msgpack.unpackb(body)
                    kind = rec[0]
                    if kind == ENTRY:
                        _, term, index, etype, edata = rec
                        if index <= last_index:  # the tail from index on was replaced
                            del entries[max(0, index - state.snapshot_index - 1) :]
                        elif index != last_index + 1 and last_index:
                            raise ValueError(f"entry {index} follows entry {last_index}")
                        entries.append(entry_factory(term, index, etype, edata))
                        last_index = index
                    elif kind == HARD_STATE:
                        _, state.term, state.vote, state.commit = rec
                    elif kind == SNAPSHOT:
                        _, sindex, sterm, voters, learners, replaces_log = rec
                        state.snapshot_index, state.snapshot_term = sindex, sterm
                        state.snapshot_voters, state.snapshot_learners = tuple(voters), tuple(learners)
                        state.snapshot_replaces_log = bool(replaces_log)
                        if replaces_log:
                            entries.clear()
                            last_index = sindex
                        else:
                            entries[:] = [e for e in entries if e.index > sindex]
                            last_index = max(last_index, sindex)
                    elif kind == METADATA:
                        _, mid, cid = rec
                        if state.member_id and (mid, cid) != (state.member_id, state.cluster_id):
                            raise ValueError(f"member/cluster ids {mid:x}/{cid:x} differ from earlier segments")
                        state.member_id, state.cluster_id = mid, cid
                    else:
                        raise ValueError(f"unknown record type {kind}")
                except (ValueError, TypeError, IndexError, msgpack.UnpackException) as exc:
                    raise StartupError(
                        f"WAL file {path} has an undecodable record at offset {pos}: {exc}; refusing to start"
                    ) from exc
                pos = end
        if entries and entries[0].index != state.snapshot_index + 1:
            raise StartupError(
                f"WAL in {directory} starts at entry {entries[0].index} but its snapshot mark is "
                f"{state.snapshot_index}: entries are missing; refusing to start"
            )
        wal = cls(directory, state.member_id, state.cluster_id, names, last_index + 1, disk)
        wal._hard_state = (state.term, state.vote, state.commit)
        wal._open_last()
        return wal, state

    def _open_last(self) -> None:
        path = self.segments[-1]
        self._fd = self.disk.open_append(path)
        self._size = self.disk.size(self._fd)
        # What was read may be only in the OS's cache: written by a process that died before its
        # fdatasync returned (or whose fdatasync failed). The member is about to act on it (apply the
        # committed part to a backend that syncs on its own), so it must be durable first, or a power
        # failure could leave the backend ahead of the log. Found by the simulator (seed 239).
        try:
            self.disk.fdatasync(self._fd)
            self.disk.fsync_dir(self.dir)
        except OSError as exc:
            self._poisoned = exc
            raise WALError(f"cannot make WAL {path} durable on opening it: {exc}") from exc

    def _start_segment(self, first_index: int) -> None:
        seq = 0
        if self.segments:
            m = _NAME.match(self.segments[-1].name)
            assert m is not None
            seq = int(m.group(1), 16) + 1
        path = self.dir / f"{seq:016x}-{first_index:016x}.wal"
        disk = self.disk
        fd = disk.create(path)
        head = _frame((METADATA, self.member_id, self.cluster_id))
        term, vote, commit = self._hard_state
        if term or vote or commit:
            head += _frame((HARD_STATE, term, vote, commit))
        self._write_all(fd, head)
        disk.fdatasync(fd)
        disk.fsync_dir(self.dir)
        if self._fd >= 0:
            disk.close(self._fd)
        self._fd = fd
        self._size = len(head)
        self.segments.append(path)

    # ---- writing ----

    def save(
        self, entries: Sequence[EntryLike] = (), hard_state: tuple[int, int, int] | None = None, sync: bool = True
    ) -> None:
        """Appends entries, then the hard state (term, vote, commit), durably (one fdatasync) when sync."""
        if self._poisoned is not None:
            raise WALError(f"WAL in {self.dir} failed earlier and cannot be written: {self._poisoned}")
        parts = []
        pack = msgpack.packb
        frame = _FRAME.pack
        crc = zlib.crc32
        for e in entries:
            body = pack((ENTRY, e.term, e.index, int(e.type), e.data))
            parts.append(frame(len(body), crc(body)))
            parts.append(body)
        if hard_state is not None and hard_state != self._hard_state:
            parts.append(_frame((HARD_STATE, *hard_state)))
        if not parts:
            return
        buf = b"".join(parts)
        try:
            failpoints.hit("beforeWALSave")
            if self._size + len(buf) > SEGMENT_BYTES and self._size > 0 and entries:
                self._start_segment(entries[0].index)
            self._write_all(self._fd, buf)
            if sync or entries:
                started = time.perf_counter()
                self.disk.fdatasync(self._fd)
                if self.fsync_seconds is not None:
                    self.fsync_seconds.observe(time.perf_counter() - started)
            failpoints.hit("afterWALSave")
        except OSError as exc:
            self._poisoned = exc
            raise WALError(f"cannot persist to WAL {self.segments[-1]}: {exc}") from exc
        self._size += len(buf)
        if hard_state is not None:
            self._hard_state = hard_state
        if entries:
            self._next_index = entries[-1].index + 1

    def save_snapshot_mark(
        self,
        index: int,
        term: int,
        voters: Sequence[int] = (),
        learners: Sequence[int] = (),
        replaces_log: bool = False,
    ) -> None:
        """Records that entries up to index are covered by a snapshot (durable on return)."""
        body = _frame((SNAPSHOT, index, term, list(voters), list(learners), replaces_log))
        if self._poisoned is not None:
            raise WALError(f"WAL in {self.dir} failed earlier and cannot be written: {self._poisoned}")
        try:
            self._write_all(self._fd, body)
            self.disk.fdatasync(self._fd)
        except OSError as exc:
            self._poisoned = exc
            raise WALError(f"cannot persist to WAL {self.segments[-1]}: {exc}") from exc
        self._size += len(body)

    def release_to(self, index: int) -> None:
        """Deletes whole segments holding only entries below index (never the open one)."""
        keep_from = len(self.segments) - 1
        for i in range(1, len(self.segments)):
            m = _NAME.match(self.segments[i].name)
            assert m is not None
            if int(m.group(2), 16) > index:
                keep_from = i - 1
                break
        for path in self.segments[:keep_from]:
            self.disk.unlink(path)
        if keep_from:
            self.segments = self.segments[keep_from:]
            self.disk.fsync_dir(self.dir)

    def close(self) -> None:
        if self._fd >= 0:
            self.disk.close(self._fd)
            self._fd = -1

    def _write_all(self, fd: int, buf: bytes) -> None:
        written = self.disk.write(fd, buf)
        while written < len(buf):  # a short write: keep going, ENOSPC will surface as OSError
            written += self.disk.write(fd, buf[written:])


SECTOR = 512


def _has_zero_sector(data: bytes, pos: int) -> bool:
    """True when a sector-aligned piece of data[pos:] is all zeros: a write the disk never made.

    Sector writes are atomic, so a torn record is one whose later sectors were never written.
    """
    start = pos
    while start < len(data):
        stop = min(len(data), (start // SECTOR + 1) * SECTOR)
        if not data[start:stop].strip(b"\x00"):
            return True
        start = stop
    return False


def _valid_record_after(data: bytes, pos: int) -> bool:
    """True when an intact record starts anywhere after pos: the damage is not a torn tail."""
    end = len(data)
    unpack = _FRAME.unpack_from
    for start in range(pos + 1, end - _FRAME.size):
        length, crc = unpack(data, start)
        stop = start + _FRAME.size + length
        if length > 0 and stop <= end and zlib.crc32(data[start + _FRAME.size : stop]) == crc:
            return True
    return False
