"""The Storage protocol (the core's read-only view of the durable log) and MemoryStorage.

The core never writes to Storage: the driver persists what a Ready hands it, then mirrors
it into storage (`append`, `set_hard_state`, `apply_snapshot`) before calling `advance`.
MemoryStorage keeps entries in a list whose element 0 is a dummy entry standing for the
snapshot (its index and term), so entry `i` lives at position `i - ents[0].index`.
"""

from __future__ import annotations

from typing import Protocol

from raft.core.errors import CompactedError, SnapshotOutOfDateError, UnavailableError
from raft.core.types import (
    EMPTY_HARD_STATE,
    ConfState,
    Entry,
    HardState,
    Snapshot,
    SnapshotMetadata,
    entry_size,
)


class Storage(Protocol):
    """What the core reads from the durable log. All methods must be cheap."""

    def initial_state(self) -> tuple[HardState, ConfState]:
        """The saved HardState and the ConfState of the latest snapshot."""
        ...

    def entries(self, lo: int, hi: int, max_size: int | None) -> list[Entry]:
        """Entries [lo, hi), cut at max_size bytes but never empty if lo < hi.

        Raises CompactedError if lo is at or below the snapshot index,
        UnavailableError if hi - 1 is past the last entry.
        """
        ...

    def term(self, i: int) -> int:
        """Term of entry i; valid for i in [first_index()-1, last_index()]."""
        ...

    def last_index(self) -> int: ...

    def first_index(self) -> int:
        """Index of the first entry that may be read (snapshot index + 1)."""
        ...

    def snapshot(self) -> Snapshot:
        """The latest snapshot. May raise SnapshotTemporarilyUnavailableError."""
        ...


def limited_end(ents: list[Entry], start: int, end: int, max_size: int | None) -> int:
    """The end of the longest run ents[start:k] within max_size bytes (k > start if start < end).

    Walks only as far as the limit, so cutting a long log costs the size of the result.
    """
    if max_size is None or end - start <= 1:
        return end
    size = entry_size(ents[start])
    for k in range(start + 1, end):
        size += entry_size(ents[k])
        if size > max_size:
            return k
    return end


def limit_size(ents: list[Entry], max_size: int | None) -> list[Entry]:
    """The longest prefix of ents within max_size bytes, but at least one entry."""
    if max_size is None or len(ents) <= 1:
        return ents
    size = entry_size(ents[0])
    for i in range(1, len(ents)):
        size += entry_size(ents[i])
        if size > max_size:
            return ents[:i]
    return ents


class MemoryStorage:
    """An in-memory Storage, also used by the driver as the mirror of its durable WAL."""

    __slots__ = ("_ents", "_hard_state", "_snapshot")

    def __init__(self) -> None:
        self._hard_state: HardState = EMPTY_HARD_STATE
        self._snapshot: Snapshot = Snapshot()
        # _ents[0] is a dummy entry holding the snapshot's index and term.
        self._ents: list[Entry] = [Entry(0, 0)]

    # -- Storage protocol ------------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._snapshot.metadata.conf_state

    def entries(self, lo: int, hi: int, max_size: int | None) -> list[Entry]:
        ents = self._ents
        offset = ents[0].index
        if lo <= offset:
            raise CompactedError(f"entry {lo} is compacted (first index {offset + 1})")
        if hi > offset + len(ents):
            raise UnavailableError(f"entries up to {hi - 1} asked, last index is {offset + len(ents) - 1}")
        if len(ents) == 1:
            raise UnavailableError("no entries")
        start = lo - offset
        return ents[start : limited_end(ents, start, hi - offset, max_size)]

    def term(self, i: int) -> int:
        ents = self._ents
        offset = ents[0].index
        if i < offset:
            raise CompactedError(f"term of {i} is compacted (snapshot index {offset})")
        if i - offset >= len(ents):
            raise UnavailableError(f"term of {i} asked, last index is {offset + len(ents) - 1}")
        return ents[i - offset].term

    def last_index(self) -> int:
        ents = self._ents
        return ents[0].index + len(ents) - 1

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- writes (by the driver only) -------------------------------------------------------

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    def set_hard_state(self, hs: HardState) -> None:
        self._hard_state = hs

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the whole log by the snapshot (the entries after it are discarded)."""
        if snap.metadata.index < self._snapshot.metadata.index:
            raise SnapshotOutOfDateError(
                f"snapshot {snap.metadata.index} older than current {self._snapshot.metadata.index}"
            )
        self._snapshot = snap
        self._ents = [Entry(snap.metadata.term, snap.metadata.index)]

    def create_snapshot(self, index: int, conf_state: ConfState | None, data: bytes) -> Snapshot:
        """Record a snapshot of the state machine as of `index` (<= applied); returns it.

        Does not compact: call `compact` afterwards to drop the entries it covers.
        """
        if index <= self._snapshot.metadata.index:
            raise SnapshotOutOfDateError(f"snapshot {index} not newer than {self._snapshot.metadata.index}")
        offset = self._ents[0].index
        if index > self.last_index():
            raise ValueError(f"snapshot {index} is out of bound (last index {self.last_index()})")
        cs = conf_state if conf_state is not None else self._snapshot.metadata.conf_state
        self._snapshot = Snapshot(SnapshotMetadata(index, self._ents[index - offset].term, cs), data)
        return self._snapshot

    def compact(self, index: int) -> None:
        """Discard entries up to and including `index`; entry `index` becomes the dummy."""
        ents = self._ents
        offset = ents[0].index
        if index <= offset:
            raise CompactedError(f"already compacted up to {offset}")
        if index > self.last_index():
            raise ValueError(f"compact {index} is out of bound (last index {self.last_index()})")
        i = index - offset
        ents[0 : i + 1] = [Entry(ents[i].term, index)]

    def append(self, entries: list[Entry]) -> None:
        """Append entries, replacing any existing tail from entries[0].index on.

        Entries at or below the snapshot are skipped; a gap after the last index is an error.
        """
        if not entries:
            return
        ents = self._ents
        first = ents[0].index + 1
        e0 = entries[0].index
        if e0 + len(entries) - 1 < first:
            return
        if first > e0:
            entries = entries[first - e0 :]
            e0 = first
        pos = e0 - ents[0].index
        n = len(ents)
        if pos < n:
            del ents[pos:]
        elif pos > n:
            raise ValueError(f"missing log entry [last: {self.last_index()}, append at: {e0}]")
        ents.extend(entries)
