"""client-go's work queue in miniature.

- A key is in the queue at most once (the *dirty* set), and never handed to two workers at
  once (the *processing* set): a key added while it is being processed is queued again only
  when that worker calls ``done``.
- ``add_after`` delays a key; ``add_rate_limited`` delays it by the larger of a per-key
  exponential backoff and a global token bucket (client-go's DefaultControllerRateLimiter:
  5 ms doubling to 1000 s per key, 10 qps with a burst of 100 overall); ``forget`` resets the
  key's backoff after a successful sync.
"""

from __future__ import annotations

import heapq
import itertools
import threading

from controlplane.clock import REAL_CLOCK, Clock


class ItemExponentialBackoff:
    def __init__(self, base: float = 0.005, cap: float = 1000.0) -> None:
        self.base, self.cap = base, cap
        self._failures: dict[str, int] = {}

    def when(self, key: str) -> float:
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        return min(self.base * 2**n, self.cap)

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)

    def num_requeues(self, key: str) -> int:
        return self._failures.get(key, 0)


class TokenBucket:
    """Reserves one token per call; the answer is how long to wait until that token exists."""

    def __init__(self, qps: float = 10.0, burst: int = 100, clock: Clock = REAL_CLOCK) -> None:
        self.qps, self.burst, self.clock = qps, burst, clock
        self._tokens = float(burst)
        self._last = clock.monotonic()

    def when(self, key: str) -> float:
        now = self.clock.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.qps)
        self._last = now
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self.qps

    def forget(self, key: str) -> None:
        return

    def num_requeues(self, key: str) -> int:
        return 0


class MaxOf:
    def __init__(self, *limiters: ItemExponentialBackoff | TokenBucket) -> None:
        self.limiters = limiters

    def when(self, key: str) -> float:
        return max(lim.when(key) for lim in self.limiters)

    def forget(self, key: str) -> None:
        for lim in self.limiters:
            lim.forget(key)

    def num_requeues(self, key: str) -> int:
        return max(lim.num_requeues(key) for lim in self.limiters)


def default_rate_limiter(clock: Clock = REAL_CLOCK, base: float = 0.005, cap: float = 1000.0) -> MaxOf:
    return MaxOf(ItemExponentialBackoff(base, cap), TokenBucket(10.0, 100, clock))


class WorkQueue:
    def __init__(self, name: str = "", clock: Clock = REAL_CLOCK, rate_limiter: MaxOf | None = None) -> None:
        self.name = name
        self.clock = clock
        self.limiter = rate_limiter or default_rate_limiter(clock)
        self._cond = threading.Condition()
        self._queue: list[str] = []
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        self._delayed: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._shutdown = False

    # ---- the basic queue ----

    def add(self, key: str) -> None:
        with self._cond:
            self._add(key)

    def _add(self, key: str) -> None:
        if self._shutdown or key in self._dirty:
            return
        self._dirty.add(key)
        if key in self._processing:
            return
        self._queue.append(key)
        self._cond.notify()

    def get(self, timeout: float | None = None) -> str | None:
        """The next key (now marked processing), or None on shutdown or when timeout passes."""
        deadline = None if timeout is None else self.clock.monotonic() + timeout
        with self._cond:
            while True:
                self._promote()
                if self._queue:
                    key = self._queue.pop(0)
                    self._processing.add(key)
                    self._dirty.discard(key)
                    return key
                if self._shutdown:
                    return None
                now = self.clock.monotonic()
                if deadline is not None and now >= deadline:
                    return None
                wait = 0.1
                if self._delayed:
                    wait = min(wait, max(0.0, self._delayed[0][0] - now))
                if deadline is not None:
                    wait = min(wait, deadline - now)
                self._cond.wait(max(wait, 0.001))

    def done(self, key: str) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._queue.append(key)
                self._cond.notify()

    def __len__(self) -> int:
        with self._cond:
            self._promote()
            return len(self._queue)

    def shutdown(self) -> None:
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()

    @property
    def shutting_down(self) -> bool:
        return self._shutdown

    # ---- delaying ----

    def add_after(self, key: str, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        with self._cond:
            if self._shutdown:
                return
            heapq.heappush(self._delayed, (self.clock.monotonic() + delay, next(self._seq), key))
            self._cond.notify()

    def _promote(self) -> None:
        now = self.clock.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            _, _, key = heapq.heappop(self._delayed)
            self._add(key)

    def pending_delayed(self) -> list[str]:
        with self._cond:
            return [k for _, _, k in sorted(self._delayed)]

    # ---- rate limiting ----

    def add_rate_limited(self, key: str) -> None:
        with self._cond:
            delay = self.limiter.when(key)
        self.add_after(key, delay)

    def forget(self, key: str) -> None:
        with self._cond:
            self.limiter.forget(key)

    def num_requeues(self, key: str) -> int:
        with self._cond:
            return self.limiter.num_requeues(key)
