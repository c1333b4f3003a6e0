"""Inflights: the bounded window of MsgApp a leader has sent a follower but not yet seen acked.

Each in-flight message is remembered by the last index it carried. Flow control stops
sending to a follower whose window is full (pipelining with a bound, thesis §10.2.1).
"""

from __future__ import annotations

from collections import deque


class Inflights:
    __slots__ = ("_q", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._q: deque[int] = deque()

    def add(self, last_index: int) -> None:
        if len(self._q) >= self.size:
            raise AssertionError("cannot add into a full inflights window")
        self._q.append(last_index)

    def free_le(self, to: int) -> None:
        """Forget every in-flight message whose last index is <= to (they were acked)."""
        q = self._q
        while q and q[0] <= to:
            q.popleft()

    def free_first_one(self) -> None:
        if self._q:
            self._q.popleft()

    def full(self) -> bool:
        return len(self._q) >= self.size

    def count(self) -> int:
        return len(self._q)

    def reset(self) -> None:
        self._q.clear()
