"""The lessor's time-ordered queue of leases (etcd's ``lease_queue.go``).

``LeaseQueue`` is a binary min-heap of (time, lease id) that holds at most one entry per lease
and can move a lease's entry in place when its time changes, as etcd's ``LeaseExpiredNotifier``
does with ``heap.Fix``. The primary lessor keeps two of them: one ordered by expiry (what the
expiry loop polls) and one ordered by next checkpoint time. Times are plain floats from
whatever monotonic clock the lessor was given; the queue itself never reads a clock.

Every operation is O(log n) except ``peek`` and ``__len__`` (O(1)); ties are broken by lease id
so that the order never depends on insertion history.
"""

from __future__ import annotations


class _Entry:
    __slots__ = ("lease_id", "pos", "time")

    def __init__(self, lease_id: int, time: float, pos: int) -> None:
        self.lease_id = lease_id
        self.time = time
        self.pos = pos

    def before(self, other: _Entry) -> bool:
        if self.time != other.time:
            return self.time < other.time
        return self.lease_id < other.lease_id


class LeaseQueue:
    """A min-heap of leases by time with one updatable entry per lease."""

    __slots__ = ("_by_id", "_heap")

    def __init__(self) -> None:
        self._heap: list[_Entry] = []
        self._by_id: dict[int, _Entry] = {}

    def __len__(self) -> int:
        return len(self._heap)

    def __contains__(self, lease_id: object) -> bool:
        return lease_id in self._by_id

    def time_of(self, lease_id: int) -> float | None:
        entry = self._by_id.get(lease_id)
        return None if entry is None else entry.time

    def register_or_update(self, lease_id: int, time: float) -> None:
        """Puts the lease in the queue at time, or moves its entry there if it is already queued."""
        entry = self._by_id.get(lease_id)
        if entry is None:
            entry = _Entry(lease_id, time, len(self._heap))
            self._heap.append(entry)
            self._by_id[lease_id] = entry
            self._up(entry.pos)
            return
        old = entry.time
        entry.time = time
        if time < old:
            self._up(entry.pos)
        elif time > old:
            self._down(entry.pos)

    def peek(self) -> tuple[int, float] | None:
        """(lease id, time) of the earliest entry, or None when empty."""
        if not self._heap:
            return None
        top = self._heap[0]
        return top.lease_id, top.time

    def pop(self) -> tuple[int, float]:
        """Removes and returns the earliest (lease id, time); IndexError when empty."""
        if not self._heap:
            raise IndexError("pop from an empty LeaseQueue")
        top = self._heap[0]
        self._remove_at(0)
        return top.lease_id, top.time

    def remove(self, lease_id: int) -> bool:
        """Drops the lease's entry; False if it was not queued."""
        entry = self._by_id.get(lease_id)
        if entry is None:
            return False
        self._remove_at(entry.pos)
        return True

    def clear(self) -> None:
        self._heap.clear()
        self._by_id.clear()

    # ---- heap maintenance ----

    def _remove_at(self, pos: int) -> None:
        heap = self._heap
        entry = heap[pos]
        del self._by_id[entry.lease_id]
        last = heap.pop()
        if last is entry:
            return
        heap[pos] = last
        last.pos = pos
        self._down(pos)
        self._up(last.pos)

    def _up(self, pos: int) -> None:
        heap = self._heap
        entry = heap[pos]
        while pos > 0:
            parent_pos = (pos - 1) >> 1
            parent = heap[parent_pos]
            if not entry.before(parent):
                break
            heap[pos] = parent
            parent.pos = pos
            pos = parent_pos
        heap[pos] = entry
        entry.pos = pos

    def _down(self, pos: int) -> None:
        heap = self._heap
        n = len(heap)
        entry = heap[pos]
        while True:
            child_pos = 2 * pos + 1
            if child_pos >= n:
                break
            right = child_pos + 1
            if right < n and heap[right].before(heap[child_pos]):
                child_pos = right
            child = heap[child_pos]
            if not child.before(entry):
                break
            heap[pos] = child
            child.pos = pos
            pos = child_pos
        heap[pos] = entry
        entry.pos = pos
