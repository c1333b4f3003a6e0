"""Time behind a seam: the real clock, and a fake one that tests step by hand."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def now(self) -> datetime: ...

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """Waits for the event or for ``timeout`` seconds of this clock; True if the event is set."""
        ...


class RealClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def wait(self, event: threading.Event, timeout: float) -> bool:
        return event.wait(max(0.0, timeout))


class FakeClock:
    """A clock that moves only when ``step`` is called; waiters wake up when their time comes."""

    def __init__(self, start: datetime | None = None) -> None:
        self._t = 1000.0
        self._start = start or datetime(2024, 1, 1, tzinfo=UTC)
        self._cond = threading.Condition()

    def monotonic(self) -> float:
        with self._cond:
            return self._t

    def now(self) -> datetime:
        from datetime import timedelta

        with self._cond:
            return self._start + timedelta(seconds=self._t - 1000.0)

    def step(self, seconds: float) -> None:
        with self._cond:
            self._t += seconds
            self._cond.notify_all()

    def wait(self, event: threading.Event, timeout: float) -> bool:
        deadline = self.monotonic() + timeout
        with self._cond:
            while not event.is_set() and self._t < deadline:
                self._cond.wait(0.01)
        return event.is_set()


REAL_CLOCK = RealClock()


def rfc3339(t: datetime) -> str:
    """Kubernetes' metav1.Time format: seconds precision, UTC, a Z suffix."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(s: str) -> datetime:
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
