"""The revision history of one key: its generations.

A key's life is a list of generations. A generation starts when the key is created, records
every revision that modified it, and ends with a tombstone when the key is deleted; a new,
empty generation is then opened for the key's next life. For example
``put(1.0); put(2.0); delete(3.0); put(4.0); delete(5.0)`` on key ``foo`` gives::

    generations:
        {empty}
        {4.0, 5.0(t)}
        {1.0, 2.0, 3.0(t)}

Compacting at revision R removes every revision <= R except the largest one (which is still
needed to read at R), and removes that one too when it is a tombstone, since a deleted key
reads as absent anyway. Generations that become empty are dropped, and a key whose only
generation is empty is removed from the index altogether. Continuing the example:
``compact(2)`` keeps ``{2.0, 3.0(t)}``; ``compact(4)`` keeps ``{4.0, 5.0(t)}`` only;
``compact(5)`` leaves just ``{empty}``: the key is gone.
"""

from __future__ import annotations

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
            g = gens[-1]
            if not g.revs:
                return None
            return g.revs[-1], g.created, g.ver
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

    def compact(self, at_rev: int, available: set[Revision]) -> None:
        """Drops revisions not needed to read at at_rev or later; adds the kept one to available."""
        gen_idx, rev_idx = self._do_compact(at_rev, available)
        gens = self.generations
        g = gens[gen_idx]
        if g.revs:
            if rev_idx != -1:
                g.revs = g.revs[rev_idx:]
            # the only revision left at or below at_rev is a tombstone: drop the generation
            if len(g.revs) == 1 and gen_idx != len(gens) - 1:
                available.discard(g.revs[0])
                gen_idx += 1
        self.generations = gens[gen_idx:]

    def keep(self, at_rev: int, available: set[Revision]) -> None:
        """Like compact, but only reports what would be kept (for finishing an interrupted compaction)."""
        if self.is_empty():
            return
        gen_idx, rev_idx = self._do_compact(at_rev, available)
        gens = self.generations
        g = gens[gen_idx]
        if g.revs and rev_idx == len(g.revs) - 1 and gen_idx != len(gens) - 1:
            available.discard(g.revs[rev_idx])

    def _do_compact(self, at_rev: int, available: set[Revision]) -> tuple[int, int]:
        gens = self.generations
        gen_idx = 0
        # skip generations that ended (tombstone) at or before at_rev
        while gen_idx < len(gens) - 1 and gens[gen_idx].revs[-1][0] <= at_rev:
            gen_idx += 1
        revs = gens[gen_idx].revs
        for n in range(len(revs) - 1, -1, -1):
            if revs[n][0] <= at_rev:
                available.add(revs[n])
                return gen_idx, n
        return gen_idx, -1
