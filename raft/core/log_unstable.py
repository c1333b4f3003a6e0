"""The unstable part of the log: entries (and maybe a snapshot) not yet persisted by the driver.

Entry `i` of the unstable log is `entries[i - offset]`. When a snapshot is pending, `offset`
is `snapshot.index + 1`. Entries handed out in a Ready stay here until `stable_to` says the
driver has persisted them.
"""

from __future__ import annotations

from raft.core.storage import limited_end
from raft.core.types import Entry, Snapshot


class Unstable:
    __slots__ = ("entries", "offset", "snapshot")

    def __init__(self, offset: int) -> None:
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        self.offset = offset

    def maybe_first_index(self) -> int | None:
        """First index of the log if a snapshot is pending (snapshot index + 1)."""
        if self.snapshot is not None:
            return self.snapshot.metadata.index + 1
        return None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.metadata.index
        return None

    def maybe_term(self, i: int) -> int | None:
        offset = self.offset
        if i < offset:
            snap = self.snapshot
            if snap is not None and snap.metadata.index == i:
                return snap.metadata.term
            return None
        k = i - offset
        if k < len(self.entries):
            return self.entries[k].term
        return None

    def stable_to(self, i: int, t: int) -> None:
        """Entries up to (i, t) are persisted; drop them unless they were replaced since."""
        if i < self.offset:
            return
        gt = self.maybe_term(i)
        if gt is not None and gt == t:
            self.entries = self.entries[i + 1 - self.offset :]
            self.offset = i + 1

    def stable_snap_to(self, i: int) -> None:
        if self.snapshot is not None and self.snapshot.metadata.index == i:
            self.snapshot = None

    def restore(self, snap: Snapshot) -> None:
        self.offset = snap.metadata.index + 1
        self.entries = []
        self.snapshot = snap

    def truncate_and_append(self, ents: list[Entry]) -> None:
        after = ents[0].index
        end = self.offset + len(self.entries)
        if after > end:
            raise IndexError(f"gap in unstable log: appending {after} after {end - 1}")
        if after == end:
            # The common case: a plain append.
            self.entries.extend(ents)
        elif after <= self.offset:
            # Replace the whole unstable log; the driver's append truncates storage too.
            self.offset = after
            self.entries = list(ents)
        else:
            # Keep [offset, after) and replace the rest.
            del self.entries[after - self.offset :]
            self.entries.extend(ents)

    def slice(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        """Entries [lo, hi), cut at max_size bytes (at least one)."""
        offset = self.offset
        if lo < offset or hi > offset + len(self.entries) or lo > hi:
            raise IndexError(f"unstable slice [{lo},{hi}) not in [{offset},{offset + len(self.entries)})")
        start = lo - offset
        return self.entries[start : limited_end(self.entries, start, hi - offset, max_size)]
