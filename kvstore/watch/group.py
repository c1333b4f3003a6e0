"""Watcher groups: which watchers want an event on a given key.

A ``WatcherGroup`` holds watchers of three shapes, with the key conventions of the store's index
(``kvstore.mvcc.index``): ``end is None`` watches the single key ``key``; ``end == b""`` watches
every key ``>= key`` (etcd's "from key"); otherwise the half-open range ``[key, end)``.

Single-key watchers sit in a dict (key -> set of watchers). Range and from-key watchers are
grouped by their exact interval (most watchers share a few prefixes), and the distinct intervals
are indexed by an ``IntervalIndex``: intervals sorted by start in an implicit balanced tree whose
nodes carry the largest end below them, so a stabbing query visits O(log n + matches) nodes.
The index is static and rebuilt lazily, only when a distinct interval came or went since the
last query; adding a watcher to an interval that already exists costs nothing.

Every watcher is in exactly one set (its key's, or its interval's), so the sets a query returns
never share a watcher. The "sets" are insertion-ordered dicts (watcher -> None): events reach
watchers in the order they were added, whatever their ids hash to, so a run replays exactly
(the deterministic simulator relies on it).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol


class Watched(Protocol):
    """What a group needs of a watcher: its key range (hashable by identity)."""

    key: bytes
    end: bytes | None


Interval = tuple[bytes, bytes]  # (start, end); end == b"" means unbounded


class IntervalIndex:
    """A static stabbing index over distinct intervals ``[start, end)`` (``end == b""``: unbounded)."""

    __slots__ = ("_ends", "_max_end", "_sets", "_starts")

    def __init__(self, intervals: dict[Interval, dict]) -> None:
        items = sorted(intervals.items(), key=lambda kv: kv[0])
        self._starts: list[bytes] = [iv[0] for iv, _ in items]
        # None stands for an unbounded end in _ends and _max_end
        self._ends: list[bytes | None] = [iv[1] or None for iv, _ in items]
        self._sets: list[dict] = [s for _, s in items]
        self._max_end: list[bytes | None] = [b""] * len(items)
        if items:
            self._build(0, len(items))

    def _build(self, lo: int, hi: int) -> bytes | None:
        """Fills _max_end for the implicit subtree over [lo, hi) rooted at its midpoint."""
        mid = (lo + hi) // 2
        best = self._ends[mid]
        if lo < mid:
            left = self._build(lo, mid)
            if best is not None and (left is None or left > best):
                best = left
        if mid + 1 < hi:
            right = self._build(mid + 1, hi)
            if best is not None and (right is None or right > best):
                best = right
        self._max_end[mid] = best
        return best

    def stab(self, key: bytes, out: list[dict]) -> None:
        """Appends to out the watcher set of every interval containing key."""
        starts, ends, max_end, sets = self._starts, self._ends, self._max_end, self._sets
        n = len(starts)
        if n <= 8:  # a short scan beats the tree walk
            for i in range(n):
                if starts[i] > key:
                    return
                e = ends[i]
                if e is None or key < e:
                    out.append(sets[i])
            return
        stack = [(0, n)]
        pop, push = stack.pop, stack.append
        while stack:
            lo, hi = pop()
            mid = (lo + hi) // 2
            m = max_end[mid]
            if m is not None and m <= key:
                continue  # every interval below ends at or before key
            if starts[mid] <= key:
                e = ends[mid]
                if e is None or key < e:
                    out.append(sets[mid])
                if mid + 1 < hi:
                    push((mid + 1, hi))
            if lo < mid:
                push((lo, mid))


class WatcherGroup:
    """A set of watchers indexed by what they watch."""

    __slots__ = ("_index", "_ranges", "keys", "size")

    def __init__(self) -> None:
        self.keys: dict[bytes, dict] = {}
        self._ranges: dict[Interval, dict] = {}
        self._index: IntervalIndex | None = None
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def __bool__(self) -> bool:
        return self.size > 0

    def __iter__(self) -> Iterator:
        for s in self.keys.values():
            yield from s
        for s in self._ranges.values():
            yield from s

    def add(self, w: Watched) -> None:
        if w.end is None:
            s = self.keys.get(w.key)
            if s is None:
                self.keys[w.key] = s = {}
        else:
            iv = (w.key, w.end)
            s = self._ranges.get(iv)
            if s is None:
                self._ranges[iv] = s = {}
                self._index = None
        s[w] = None
        self.size += 1

    def discard(self, w: Watched) -> bool:
        """Removes w; False if it was not in the group."""
        if w.end is None:
            s = self.keys.get(w.key)
            if s is None or w not in s:
                return False
            del s[w]
            if not s:
                del self.keys[w.key]
        else:
            iv = (w.key, w.end)
            s = self._ranges.get(iv)
            if s is None or w not in s:
                return False
            del s[w]
            if not s:
                del self._ranges[iv]
                self._index = None
        self.size -= 1
        return True

    def match(self, key: bytes) -> list[dict]:
        """The sets of watchers that watch key (disjoint; possibly empty list)."""
        out: list[dict] = []
        s = self.keys.get(key)
        if s is not None:
            out.append(s)
        if self._ranges:
            index = self._index
            if index is None:
                index = self._index = IntervalIndex(self._ranges)
            index.stab(key, out)
        return out

    def contains(self, key: bytes) -> bool:
        """Whether any watcher of the group watches key."""
        if key in self.keys:
            return True
        if not self._ranges:
            return False
        out: list[dict] = []
        index = self._index
        if index is None:
            index = self._index = IntervalIndex(self._ranges)
        index.stab(key, out)
        return bool(out)
