"""RaftLog: the node's view of the whole log, stable (Storage) plus unstable, with commit/apply cursors.

Invariant: applied <= applying <= committed <= last_index(), and every index in
[first_index()-1, last_index()] has a known term. ``applying`` is how far committed entries have
been handed to the application; ``applied`` how far it has applied them (the two differ only
while a driver applies asynchronously, see ``RawNode.advance``). Committed entries are never
truncated (Figure 2: Log Matching plus Leader Completeness guarantee a correct leader never
asks for it).
"""

from __future__ import annotations

from raft.core.errors import CompactedError, UnavailableError
from raft.core.log_unstable import Unstable
from raft.core.storage import Storage, limit_size
from raft.core.types import Entry, Snapshot, entry_size


class RaftLog:
    __slots__ = ("applied", "applying", "committed", "max_next_ents_size", "storage", "unstable")

    def __init__(self, storage: Storage, max_next_ents_size: int | None = None) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.unstable = Unstable(last + 1)
        # Everything up to the snapshot is committed and applied.
        self.committed = first - 1
        self.applied = first - 1
        self.applying = first - 1
        self.max_next_ents_size = max_next_ents_size

    def __repr__(self) -> str:
        return (
            f"RaftLog(committed={self.committed}, applying={self.applying}, applied={self.applied}, "
            f"unstable.offset={self.unstable.offset}, len(unstable)={len(self.unstable.entries)})"
        )

    # -- indexes and terms -----------------------------------------------------------------

    def first_index(self) -> int:
        i = self.unstable.maybe_first_index()
        return i if i is not None else self.storage.first_index()

    def last_index(self) -> int:
        u = self.unstable
        if u.entries:
            return u.offset + len(u.entries) - 1
        if u.snapshot is not None:
            return u.snapshot.metadata.index
        return self.storage.last_index()

    def last_term(self) -> int:
        return self.term(self.last_index())

    def term(self, i: int) -> int:
        """Term of entry i. Raises CompactedError below first_index()-1, UnavailableError past the end."""
        u = self.unstable
        t = u.maybe_term(i)
        if t is not None:
            return t
        if i >= u.offset:
            raise UnavailableError(f"term of {i} is past the last index {self.last_index()}")
        if u.snapshot is not None:
            raise CompactedError(f"term of {i} is before the pending snapshot")
        # Below the unstable part: storage knows it (or raises CompactedError itself).
        return self.storage.term(i)

    def term_or_zero(self, i: int) -> int:
        """Term of entry i, or 0 when it is unknown (compacted or past the end)."""
        try:
            return self.term(i)
        except (CompactedError, UnavailableError):
            return 0

    def match_term(self, i: int, t: int) -> bool:
        try:
            return self.term(i) == t
        except (CompactedError, UnavailableError):
            return False

    def is_up_to_date(self, lasti: int, term: int) -> bool:
        """§5.4.1: a candidate's log is at least as up-to-date as ours (compare last term, then length)."""
        our_term = self.last_term()
        return term > our_term or (term == our_term and lasti >= self.last_index())

    # -- appending -------------------------------------------------------------------------

    def maybe_append(self, index: int, log_term: int, committed: int, ents: list[Entry]) -> int | None:
        """The AppendEntries receiver rules of Figure 2. Returns the last new index, or None on mismatch."""
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(ents)
        ci = self.find_conflict(ents)
        if ci:
            if ci <= self.committed:
                raise AssertionError(f"entry {ci} conflicts with committed (committed {self.committed})")
            self.append(ents[ci - index - 1 :])
        self.commit_to(min(committed, last_new))
        return last_new

    def append(self, ents: list[Entry]) -> int:
        if not ents:
            return self.last_index()
        after = ents[0].index - 1
        if after < self.committed:
            raise AssertionError(f"appending after {after} is below committed {self.committed}")
        self.unstable.truncate_and_append(ents)
        return self.last_index()

    def find_conflict(self, ents: list[Entry]) -> int:
        """Index of the first entry whose term differs from ours (or that we lack); 0 if none.

        Entries we already hold are checked, so a stale or duplicated MsgApp never truncates.
        """
        last = self.last_index()
        for e in ents:
            if e.index > last or not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """Largest (i, term(i)) with i <= index and term(i) <= term: where logs may still match.

        Lets a rejected leader skip a whole term of conflicting entries per round trip (§5.3's
        optimisation, as etcd's findConflictByTerm). Term 0 means unknown (compacted).
        """
        while index > 0:
            try:
                our = self.term(index)
            except (CompactedError, UnavailableError):
                return index, 0
            if our <= term:
                return index, our
            index -= 1
        return 0, 0

    # -- commit / apply / stable cursors ---------------------------------------------------

    def commit_to(self, to_commit: int) -> None:
        if self.committed < to_commit:
            if self.last_index() < to_commit:
                raise AssertionError(f"commit {to_commit} is past last index {self.last_index()}")
            self.committed = to_commit

    def maybe_commit(self, max_index: int, term: int) -> bool:
        """§5.4.2: only entries of the current term are committed by counting replicas."""
        if max_index > self.committed and self.term_or_zero(max_index) == term:
            self.commit_to(max_index)
            return True
        return False

    def applied_to(self, i: int) -> None:
        if i == 0:
            return
        if self.committed < i or i < self.applied:
            raise AssertionError(f"applied {i} not in [applied {self.applied}, committed {self.committed}]")
        self.applied = i
        if self.applying < i:
            self.applying = i

    def applying_to(self, i: int) -> None:
        """Entries up to i were handed to the application, which applies them later."""
        if self.committed < i:
            raise AssertionError(f"applying {i} beyond committed {self.committed}")
        if self.applying < i:
            self.applying = i

    def stable_to(self, i: int, t: int) -> None:
        self.unstable.stable_to(i, t)

    def stable_snap_to(self, i: int) -> None:
        self.unstable.stable_snap_to(i)

    # -- reading ---------------------------------------------------------------------------

    def unstable_entries(self) -> list[Entry]:
        return list(self.unstable.entries)

    def has_next_ents(self) -> bool:
        return self.committed + 1 > max(self.applying + 1, self.first_index())

    def next_ents(self) -> list[Entry]:
        """Committed entries not yet handed to the application, cut at max_next_ents_size bytes."""
        off = max(self.applying + 1, self.first_index())
        if self.committed + 1 > off:
            return self.slice(off, self.committed + 1, self.max_next_ents_size)
        return []

    def snapshot(self) -> Snapshot:
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    def entries(self, i: int, max_size: int | None) -> list[Entry]:
        last = self.last_index()
        if i > last:
            return []
        return self.slice(i, last + 1, max_size)

    def slice(self, lo: int, hi: int, max_size: int | None) -> list[Entry]:
        """Entries [lo, hi) within max_size bytes (at least one). Raises CompactedError if lo is gone."""
        if lo > hi:
            raise AssertionError(f"invalid slice {lo} > {hi}")
        fi = self.first_index()
        if lo < fi:
            raise CompactedError(f"slice from {lo} but first index is {fi}")
        if hi > self.last_index() + 1:
            raise AssertionError(f"slice [{lo},{hi}) out of bound [{fi},{self.last_index()}]")
        if lo == hi:
            return []
        u_off = self.unstable.offset
        if lo < u_off:
            stored_hi = min(hi, u_off)
            ents = self.storage.entries(lo, stored_hi, max_size)
            if len(ents) < stored_hi - lo or hi <= u_off:
                return ents
            if max_size is not None:
                used = 0
                for e in ents:
                    used += entry_size(e)
                if used >= max_size:
                    return ents
                # The first unstable entry may not fit; limit_size keeps at least one overall.
                return limit_size(ents + self.unstable.slice(u_off, hi, max_size - used), max_size)
            return ents + self.unstable.slice(u_off, hi)
        return self.unstable.slice(lo, hi, max_size)

    def all_entries(self) -> list[Entry]:
        """Every entry still held (tests and debugging only)."""
        while True:
            try:
                return self.entries(self.first_index(), None)
            except CompactedError:  # raced with a compaction in storage; retry
                continue

    def restore(self, snap: Snapshot) -> None:
        self.committed = snap.metadata.index
        self.unstable.restore(snap)
