"""Auto-compaction (``--auto-compaction-mode`` / ``--auto-compaction-retention``), as etcd 3.4+ does it.

Only the leader compacts, through the log (a Compact request like a client's), so every member
compacts at the same revision; on the other members the loops run but do nothing, like etcd's
paused compactors.

- **periodic** (etcd's ``v3compactor.Periodic``): the retention is a number of hours ("5") or a Go
  duration ("30m"). Every tenth of min(retention, 1 hour) the current revision is recorded (the
  last retention / interval + 1 of them are kept); once a whole retention has passed since the
  last success, and then every min(retention, 1 hour), the oldest recorded revision (the one of
  one retention ago) is compacted. A failed compaction is retried one interval later; one that
  is already compacted counts as done.
- **revision** (etcd's ``v3compactor.Revision``): the retention is a number of revisions N. Every
  five minutes, if the current revision minus N is positive and not what was last compacted,
  that revision is compacted.

``parse_retention`` reads the retention exactly as etcd's ``parseCompactionRetention``: an
integer means hours (periodic) or revisions (revision), anything else is a Go duration (which
etcd, in revision mode, takes as that many nanoseconds' worth of revisions). Zero disables
auto-compaction.

The clock and the revision mode's check interval are injected so tests need not wait minutes;
``raftkv serve`` takes the interval from ``RAFTKV_REVISION_COMPACTION_INTERVAL`` (seconds, a test
knob; etcd's fixed 5 minutes by default).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from kvstore.errors import Compacted, EtcdError
from kvstore.godur import parse_duration

log = logging.getLogger("raftkv.compactor")

PERIODIC = "periodic"
REVISION = "revision"
REVISION_INTERVAL = 300.0  # etcd's revInterval
RETRY_DIVISOR = 10  # etcd's retryDivisor
HOUR = 3600.0


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class CompactHost(Protocol):
    """What a compactor needs from the member."""

    def is_leader(self) -> bool: ...

    def current_revision(self) -> int: ...

    async def compact(self, revision: int) -> None:
        """Compacts through the log; raises Compacted if already compacted there, EtcdError on failure."""
        ...


def parse_retention(mode: str, retention: str) -> float:
    """Hours as seconds (periodic) or revisions (revision) of an --auto-compaction-retention value."""
    if mode not in (PERIODIC, REVISION):
        raise ValueError(f'unknown auto-compaction-mode "{mode}"')
    text = retention.strip() if retention else "0"
    try:
        n = int(text, 10)
    except ValueError:
        n = -1
    if n >= 0 and text.lstrip("+").isdigit():
        return float(n) * (HOUR if mode == PERIODIC else 1)
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise ValueError(f"error parsing CompactionRetention: {exc}") from None
    return seconds if mode == PERIODIC else float(round(seconds * 1e9))


async def _compact(host: CompactHost, rev: int, what: str) -> bool:
    log.info(f"starting auto {what} compaction", extra={"revision": rev})
    try:
        await host.compact(rev)
    except Compacted:
        pass
    except EtcdError as exc:
        log.warning(f"failed auto {what} compaction", extra={"revision": rev, "error": exc.message})
        return False
    log.info(f"completed auto {what} compaction", extra={"revision": rev})
    return True


class Periodic:
    def __init__(self, period: float, host: CompactHost, clock: Clock | None = None) -> None:
        self.period = period
        self.host = host
        self.clock = clock or MonotonicClock()
        self.revs: list[int] = []

    @property
    def compact_interval(self) -> float:
        return min(self.period, HOUR)

    @property
    def retry_interval(self) -> float:
        return self.compact_interval / RETRY_DIVISOR

    @property
    def retentions(self) -> int:
        return int(self.period / self.retry_interval) + 1

    async def run(self) -> None:
        clock, host = self.clock, self.host
        last_success = clock.now()
        base_interval = self.period
        while True:
            self.revs.append(host.current_revision())
            if len(self.revs) > self.retentions:
                self.revs = self.revs[1:]  # revs[0] is always the revision of one period ago
            await clock.sleep(self.retry_interval)
            if not host.is_leader():
                continue
            if clock.now() - last_success < base_interval:
                continue
            if base_interval == self.period:  # the first wait is a whole period, then every interval
                base_interval = self.compact_interval
            if await _compact(host, self.revs[0], "periodic"):
                last_success = clock.now()


class Revision:
    def __init__(
        self, retention: int, host: CompactHost, clock: Clock | None = None, interval: float = REVISION_INTERVAL
    ) -> None:
        self.retention = retention
        self.host = host
        self.clock = clock or MonotonicClock()
        self.interval = interval

    async def run(self) -> None:
        prev = 0
        while True:
            await self.clock.sleep(self.interval)
            if not self.host.is_leader():
                continue
            rev = self.host.current_revision() - self.retention
            if rev <= 0 or rev == prev:
                continue
            if await _compact(self.host, rev, "revision"):
                prev = rev


def new_compactor(
    mode: str,
    retention: str,
    host: CompactHost,
    clock: Clock | None = None,
    revision_interval: float = REVISION_INTERVAL,
) -> Periodic | Revision | None:
    """The compactor the flags ask for, or None when auto-compaction is off (a zero retention)."""
    value = parse_retention(mode, retention)
    if value == 0:
        return None
    if mode == PERIODIC:
        return Periodic(value, host, clock)
    return Revision(int(value), host, clock, revision_interval)
