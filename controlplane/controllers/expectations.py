"""Controller expectations: creates/deletes a controller has issued but not yet seen in its cache.

While a ReplicaSet has outstanding expectations its pod count in the informer cache is stale,
so the controller does not act on it (which would create or delete twice); the expectations
are lowered by the pod informer's events, and expire after a timeout in case an event is lost.
"""

from __future__ import annotations

import threading

from controlplane.clock import REAL_CLOCK, Clock


class Expectations:
    def __init__(self, clock: Clock = REAL_CLOCK, timeout: float = 300.0) -> None:
        self.clock = clock
        self.timeout = timeout
        self._lock = threading.Lock()
        self._exp: dict[str, tuple[int, int, float]] = {}  # key -> (adds, deletes, set at)

    def expect(self, key: str, adds: int = 0, deletes: int = 0) -> None:
        with self._lock:
            self._exp[key] = (adds, deletes, self.clock.monotonic())

    def _lower(self, key: str, adds: int, deletes: int) -> None:
        with self._lock:
            if key in self._exp:
                a, d, t = self._exp[key]
                self._exp[key] = (a - adds, d - deletes, t)

    def creation_observed(self, key: str) -> None:
        self._lower(key, 1, 0)

    def deletion_observed(self, key: str) -> None:
        self._lower(key, 0, 1)

    def satisfied(self, key: str) -> bool:
        with self._lock:
            if key not in self._exp:
                return True
            a, d, t = self._exp[key]
            return (a <= 0 and d <= 0) or self.clock.monotonic() - t > self.timeout

    def delete(self, key: str) -> None:
        with self._lock:
            self._exp.pop(key, None)
