"""The in-memory ordered index: key -> KeyIndex, with point, range and compaction queries.

Keys are kept in a sorted list (for ranges) next to a dict (for point lookups), which is what
sortedcontainers' SortedDict is. Range bounds follow etcd: ``end is None`` means the single key,
``end == b""`` means every key >= key, otherwise the half-open interval [key, end).
"""

from __future__ import annotations

from collections.abc import Iterator

from sortedcontainers import SortedDict

from kvstore.mvcc.key_index import KeyIndex
from kvstore.mvcc.revision import Revision


class TreeIndex:
    __slots__ = ("_tree",)

    def __init__(self) -> None:
        self._tree: SortedDict[bytes, KeyIndex] = SortedDict()

    def __len__(self) -> int:
        return len(self._tree)

    def alive(self, at_rev: int) -> int:
        """How many keys are alive at a revision (a full pass: for opening the store, not for requests)."""
        return sum(1 for ki in self._tree.values() if ki.get(at_rev) is not None)

    def key_index(self, key: bytes) -> KeyIndex | None:
        return self._tree.get(key)

    def get(self, key: bytes, at_rev: int) -> tuple[Revision, Revision, int] | None:
        ki = self._tree.get(key)
        return None if ki is None else ki.get(at_rev)

    def put(self, key: bytes, rev: Revision) -> None:
        ki = self._tree.get(key)
        if ki is None:
            ki = KeyIndex(key)
            self._tree[key] = ki
        ki.put(rev)

    def tombstone(self, key: bytes, rev: Revision) -> None:
        ki = self._tree.get(key)
        if ki is None:
            raise AssertionError(f"tombstone of unknown key {key!r}")
        ki.tombstone(rev)

    def restore(self, key: bytes, created: Revision, modified: Revision, ver: int) -> None:
        """Loads one stored revision of key (called in revision order when the store opens)."""
        ki = self._tree.get(key)
        if ki is None:
            ki = KeyIndex(key)
            ki.restore(created, modified, ver)
            self._tree[key] = ki
        else:
            ki.put(modified)

    def restore_tombstone(self, key: bytes, rev: Revision) -> None:
        """Loads one stored deletion of key (in revision order, like restore)."""
        ki = self._tree.get(key)
        if ki is None:
            # the key's history before it was compacted away, and a compaction at rev kept the
            # tombstone for watchers starting at rev: the index must know it, so that the next
            # compaction (or the resumed one) decides its fate
            ki = KeyIndex(key)
            ki.restore_tombstone(rev)
            self._tree[key] = ki
        elif ki.generations[-1].revs:
            ki.tombstone(rev)

    def key_indexes(self, key: bytes, end: bytes | None) -> Iterator[KeyIndex]:
        """The KeyIndex of every key in the range, in key order (including deleted keys)."""
        tree = self._tree
        if end is None:
            ki = tree.get(key)
            if ki is not None:
                yield ki
            return
        if end and end <= key:
            return
        keys = tree.irange(key, end or None, inclusive=(True, False))
        for k in keys:
            yield tree[k]

    def revisions(self, key: bytes, end: bytes | None, at_rev: int) -> list[tuple[KeyIndex, Revision]]:
        """(key index, revision) of each key alive at at_rev in the range, in key order."""
        out = []
        for ki in self.key_indexes(key, end):
            got = ki.get(at_rev)
            if got is not None:
                out.append((ki, got[0]))
        return out

    def count(self, key: bytes, end: bytes | None, at_rev: int) -> int:
        n = 0
        for ki in self.key_indexes(key, end):
            if ki.get(at_rev) is not None:
                n += 1
        return n

    def compact(self, at_rev: int) -> set[Revision]:
        """Compacts every key at at_rev; returns the revisions <= at_rev that must stay stored."""
        available: set[Revision] = set()
        tree = self._tree
        empty = []
        for key, ki in tree.items():
            ki.compact(at_rev, available)
            if ki.is_empty():
                empty.append(key)
        for key in empty:
            del tree[key]
        return available
