"""What a member's consensus side counts, for its metrics: read at scrape time, never pushed.

Each event costs an integer increment or one histogram observation (a bisect and two additions):
leader changes, WAL fsync durations, bytes to and from each peer, and heartbeat round trips the
leader measures to each follower (the time from a heartbeat to its answer). ``Histogram`` keeps
cumulative-ready bucket counts with Prometheus's ``le`` bounds.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence


def exponential_buckets(start: float, factor: float, count: int) -> tuple[float, ...]:
    """Prometheus's ExponentialBuckets: start, start*factor, ... (count bounds)."""
    return tuple(start * factor**i for i in range(count))


class Histogram:
    """Observations in buckets: counts[i] is how many fell at or below bounds[i] (and above bounds[i-1])."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it), ending with +Inf."""
        out = []
        total = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out


FSYNC_BUCKETS = exponential_buckets(0.001, 2, 14)  # etcd: 1 ms .. 8.192 s
RTT_BUCKETS = exponential_buckets(0.0001, 2, 16)  # etcd: 0.1 ms .. 3.2768 s


class RaftStats:
    def __init__(self) -> None:
        self.leader_changes = 0
        self.wal_fsync = Histogram(FSYNC_BUCKETS)
        self.sent_bytes: dict[int, int] = {}  # peer id -> bytes written to it
        self.received_bytes: dict[int, int] = {}  # peer id -> bytes read from it
        self.rtt: dict[int, Histogram] = {}  # peer id -> heartbeat round trips

    def round_trip(self, peer: int, seconds: float) -> None:
        hist = self.rtt.get(peer)
        if hist is None:
            hist = self.rtt[peer] = Histogram(RTT_BUCKETS)
        hist.observe(seconds)
