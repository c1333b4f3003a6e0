"""Key permissions as intervals, and etcd's rule for whether a user's permissions cover a request.

A permission is a key, a key range ``[key, range_end)``, or every key from ``key`` on
(``range_end`` = ``\\0``); a request's range is the same, with an empty ``range_end`` meaning
the key alone. ``None`` stands for the end of the keyspace. A single key is permitted when any
interval holds it; a range when the intervals it meets leave no gap over the whole of it (etcd's
``IntervalTree.Contains``). A request range that is empty or inverted is never permitted, as in
etcd, where such an interval meets nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

End = bytes | None  # None: the end of the keyspace

READ, WRITE, READWRITE = 0, 1, 2  # authpb.Permission.Type


def _before(a: End, b: End) -> bool:
    """a < b, with None after every key."""
    if a is None:
        return False
    return b is None or a < b


def perm_interval(key: bytes, range_end: bytes) -> tuple[bytes, End]:
    """The interval a granted permission covers."""
    if not range_end:
        return key, key + b"\x00"
    if range_end == b"\x00":
        return key, None
    return key, range_end


@dataclass(slots=True)
class Intervals:
    """Sorted intervals of one kind (read or write) of one user."""

    items: list[tuple[bytes, End]] = field(default_factory=list)

    def add(self, begin: bytes, end: End) -> None:
        self.items.append((begin, end))
        self.items.sort(key=lambda iv: iv[0])

    def holds(self, key: bytes) -> bool:
        return any(b <= key and _before(key, e) for b, e in self.items)

    def covers(self, begin: bytes, end: End) -> bool:
        met = [(b, e) for b, e in self.items if _before(begin, e) and _before(b, end)]
        if not met:
            return False
        low, high = met[0]
        if begin < low:
            return False
        for b, e in met[1:]:
            if _before(high, b):
                return False  # a gap
            if _before(high, e):
                high = e
        return not _before(high, end)


@dataclass(slots=True)
class UserPerms:
    read: Intervals = field(default_factory=Intervals)
    write: Intervals = field(default_factory=Intervals)

    @classmethod
    def merge(cls, perms: Iterable[tuple[int, bytes, bytes]]) -> UserPerms:
        """From (perm type, key, range_end) of every role the user has."""
        up = cls()
        for kind, key, range_end in perms:
            begin, end = perm_interval(key, range_end)
            if kind in (READ, READWRITE):
                up.read.add(begin, end)
            if kind in (WRITE, READWRITE):
                up.write.add(begin, end)
        return up

    def permits(self, kind: int, key: bytes, range_end: bytes) -> bool:
        """Whether a request on key (with range_end as the request gives it) is covered."""
        ivs = self.read if kind == READ else self.write
        if not range_end:
            return ivs.holds(key)
        return ivs.covers(key, None if range_end == b"\x00" else range_end)
