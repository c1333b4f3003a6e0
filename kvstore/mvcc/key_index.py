"""The revision history of one key: its generations.

A key's life is a list of generations. A generation starts when the key is created, records
every revision that modified it, and ends with a tombstone when the key is deleted; a new,
empty generation is then opened for the key's next life. For example
``put(1.0); put(2.0); delete(3.0); put(4.0); delete(5.0)`` on key ``foo`` gives::

    generations:
        {empty}
        {4.0, 5.0(t)}
        {1.0, 2.0, 3.0(t)}

Compacting at revision R keeps what is needed to read at R or later, and every event of
revision R and later, for watchers that start at R: it removes every revision below R except the
largest one (still needed to read at R, unless R itself modified the key), and a generation
that ended with a tombstone below R (a deleted key reads as absent anyway). A tombstone *at* R
stays, with nothing before it, until a later compaction: a watcher starting at R must see that
deletion (etcd dropped it, and fixed that in 3.4.34 and 3.5.15: etcd-io/etcd#18089). A key whose
only generation is empty is removed from the index altogether. Continuing the example:
``compact(2)`` keeps ``{2.0, 3.0(t)}``; ``compact(4)`` keeps ``{4.0, 5.0(t)}`` only;
``compact(5)`` keeps ``{5.0(t)}``; ``compact(6)`` leaves just ``{empty}``: the key is gone.
"""

from __future__ import annotations

from bisect import bisect_left

from kvstore.mvcc.revision import Revision

_ZERO: Revision = (0, 0)


class Generation:
    """One life of a key: from its creation to its tombstone (the last rev, if ended)."""

    __slots__ = ("created", "revs", "ver")

    def __init__(self, ver: int = 0, created: Revision = _ZERO, revs: list[Revision] | None = None) -> None:
        self.ver = ver  # version of the key at the last revision in revs
        self.created = created
        self.revs: list[Revision] = revs if revs is not None else []

    def __repr__(self) -> str:
        return f"Generation(ver={self.ver}, created={self.created}, revs={self.revs})"


class KeyIndex:
    """All generations of one key. Invariant: only the last generation may be empty or open."""

    __slots__ = ("generations", "key", "modified")

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.modified: Revision = _ZERO  # the last revision that touched the key
        self.generations: list[Generation] = [Generation()]

    def __repr__(self) -> str:
        return f"KeyIndex({self.key!r}, modified={self.modified}, generations={self.generations})"

    def is_empty(self) -> bool:
        return len(self.generations) == 1 and not self.generations[0].revs

    def put(self, rev: Revision) -> None:
        if rev <= self.modified:
            raise AssertionError(f"put of {self.key!r} at {rev} is not after {self.modified}")
        g = self.generations[-1]
        if not g.revs:
            g.created = rev
        g.revs.append(rev)
        g.ver += 1
        self.modified = rev

    def restore(self, created: Revision, modified: Revision, ver: int) -> None:
        """Starts the index of a key whose earlier history was compacted away (used on load)."""
        if not self.is_empty():
            raise AssertionError(f"restore of non-empty key index {self.key!r}")
        self.modified = modified
        self.generations = [Generation(ver, created, [modified])]

    def tombstone(self, rev: Revision) -> None:
        """Ends the current generation with a deletion at rev and opens an empty one."""
        if not self.generations[-1].revs:
            raise AssertionError(f"tombstone of {self.key!r}, which does not exist")
        self.put(rev)
        self.generations.append(Generation())

    def get(self, at_rev: int) -> tuple[Revision, Revision, int] | None:
        """(modified, created, version) of the key as of main revision at_rev, None if absent."""
        gens = self.generations
        if at_rev >= self.modified[0]:  # fast path: the newest state
            newest = gens[-1]
            if not newest.revs:
                return None
            return newest.revs[-1], newest.created, newest.ver
        g = self._find_generation(at_rev)
        if g is None:
            return None
        revs = g.revs
        for n in range(len(revs) - 1, -1, -1):
            if revs[n][0] <= at_rev:
                return revs[n], g.created, g.ver - (len(revs) - n - 1)
        return None

    def _find_generation(self, at_rev: int) -> Generation | None:
        """The generation alive at at_rev, or None when the key did not exist then."""
        gens = self.generations
        last = len(gens) - 1
        for i in range(last, -1, -1):
            g = gens[i]
            if not g.revs:
                continue
            if i != last and g.revs[-1][0] <= at_rev:
                return None  # the generation ended (tombstone) at or before at_rev
            if g.revs[0][0] <= at_rev:
                return g
        return None

    def since(self, rev: int) -> list[Revision]:
        """Revisions with main >= rev, oldest first (used to replay history to watchers)."""
        out: list[Revision] = []
        for g in self.generations:
            for r in g.revs:
                if r[0] >= rev:
                    out.append(r)
        return out

    def restore_tombstone(self, rev: Revision) -> None:
        """Starts the index of a key whose stored history begins with its deletion at rev: a tombstone
        a compaction at rev kept (used on load)."""
        if not self.is_empty():
            raise AssertionError(f"restore of non-empty key index {self.key!r}")
        self.modified = rev
        self.generations = [Generation(0, rev, [rev]), Generation()]

    def compact(self, at_rev: int, available: set[Revision]) -> None:
        """Drops what reads and watches at at_rev or later do not need; adds the kept revisions
        at or below at_rev to available (the stored ones the compaction must not delete)."""
        gens = self.generations
        first = 0
        # generations that ended (tombstone) below at_rev are gone; one that ended at at_rev stays
        while first < len(gens) - 1 and gens[first].revs[-1][0] < at_rev:
            first += 1
        for g in gens[first:]:
            if not g.revs or g.revs[0][0] > at_rev:
                break
            g.revs = g.revs[_kept_from(g.revs, at_rev) :]
            available.update(r for r in g.revs if r[0] <= at_rev)
        self.generations = gens[first:]


def _kept_from(revs: list[Revision], at_rev: int) -> int:
    """Where the revisions a compaction at at_rev keeps start: the first one of at_rev if the key
    changed then (each is an event of at_rev), else the last one before (what a read at at_rev sees)."""
    k = bisect_left(revs, (at_rev, 0))
    if k < len(revs) and revs[k][0] == at_rev:
        return k
    return max(k - 1, 0)
