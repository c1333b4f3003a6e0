"""Auto-compaction as etcd 3.4+ does it, on a virtual clock: when each mode compacts, at which
revision, only on the leader; and how --auto-compaction-retention is read (Go durations included)."""

from __future__ import annotations

import asyncio

import pytest

from kvstore.compactor import HOUR, Periodic, Revision, new_compactor, parse_retention
from kvstore.errors import Compacted, EtcdError, NoLeader
from kvstore.godur import parse_bool, parse_duration


class VirtualClock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds
        await asyncio.sleep(0)


class Host:
    """A store whose revision grows by one per virtual second; records the compactions asked."""

    def __init__(self, clock: VirtualClock, fail_at: set[int] | None = None) -> None:
        self.clock = clock
        self.leader = True
        self.compactions: list[tuple[float, int]] = []
        self.fail_at = fail_at or set()
        self.compacted = 0

    def is_leader(self) -> bool:
        return self.leader

    def current_revision(self) -> int:
        return 1 + int(self.clock.t)

    async def compact(self, revision: int) -> None:
        self.compactions.append((self.clock.t, revision))
        if len(self.compactions) in self.fail_at:
            raise NoLeader()
        if revision <= self.compacted:
            raise Compacted()
        self.compacted = revision


async def run_until(compactor: Periodic | Revision, clock: VirtualClock, t: float) -> None:
    task = asyncio.create_task(compactor.run())
    while clock.t < t:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_periodic_short_window_compacts_every_window_keeping_the_window() -> None:
    clock = VirtualClock()
    host = Host(clock)
    await run_until(Periodic(10.0, host, clock), clock, 45)
    times = [round(t, 6) for t, _ in host.compactions]
    assert times == [10.0, 20.0, 30.0, 40.0]  # after a whole window, then every window
    for t, rev in host.compactions:
        kept = (1 + int(t)) - rev  # revisions of history still there when it compacted
        assert 10 <= kept <= 11  # one window (etcd keeps one retry interval more at most)


async def test_periodic_long_window_compacts_hourly_keeping_the_window() -> None:
    clock = VirtualClock()
    host = Host(clock)
    await run_until(Periodic(5 * HOUR, host, clock), clock, 8.1 * HOUR)
    times = [round(t / HOUR, 3) for t, _ in host.compactions]
    assert times == [5.0, 6.0, 7.0, 8.0]  # the first after 5 hours, then every hour
    for t, rev in host.compactions:
        kept = (1 + int(t)) - rev
        assert 5 * HOUR <= kept <= 5 * HOUR + 6 * 60  # five hours, give or take one retry interval (6 min)


async def test_periodic_retries_a_failure_one_interval_later_and_takes_compacted_as_done() -> None:
    clock = VirtualClock()
    host = Host(clock, fail_at={1})
    await run_until(Periodic(10.0, host, clock), clock, 25)
    times = [round(t, 6) for t, _ in host.compactions]
    assert times[:2] == [10.0, 11.0]  # the first failed: again after one retry interval (a tenth)
    assert times[2] == 21.0  # then a whole interval after the success


async def test_only_the_leader_compacts() -> None:
    clock = VirtualClock()
    host = Host(clock)
    host.leader = False
    await run_until(Periodic(10.0, host, clock), clock, 35)
    assert host.compactions == []
    host.leader = True
    await run_until(Revision(5, host, clock, interval=1.0), clock, 40)
    assert host.compactions


async def test_revision_mode_keeps_the_last_n_revisions_checked_every_interval() -> None:
    clock = VirtualClock()
    host = Host(clock)
    await run_until(Revision(20, host, clock, interval=300.0), clock, 1250)
    assert [round(t) for t, _ in host.compactions] == [300, 600, 900, 1200]
    for t, rev in host.compactions:
        assert rev == 1 + int(t) - 20


async def test_revision_mode_skips_nonpositive_and_repeated_revisions() -> None:
    clock = VirtualClock()
    host = Host(clock)
    host.current_revision = lambda: 15  # type: ignore[method-assign]
    await run_until(Revision(20, host, clock, interval=1.0), clock, 10)
    assert host.compactions == []  # 15 - 20 <= 0
    host.current_revision = lambda: 50  # type: ignore[method-assign]
    await run_until(Revision(20, host, clock, interval=1.0), clock, 20)
    assert [rev for _, rev in host.compactions] == [30]  # once, not again at the same revision


@pytest.mark.parametrize(
    ("mode", "retention", "value"),
    [
        ("periodic", "0", 0.0),
        ("periodic", "1", HOUR),
        ("periodic", "+2", 2 * HOUR),
        ("periodic", "30m", 1800.0),
        ("periodic", "1h30m", 5400.0),
        ("periodic", "1.5h", 5400.0),
        ("periodic", "500ms", 0.5),
        ("revision", "1000", 1000.0),
        ("revision", "0", 0.0),
        ("revision", "1s", 1e9),  # etcd takes a duration as that many nanoseconds of revisions
        ("periodic", "", 0.0),
    ],
)
def test_retention_as_etcd_reads_it(mode: str, retention: str, value: float) -> None:
    assert parse_retention(mode, retention) == pytest.approx(value)


@pytest.mark.parametrize(
    ("mode", "retention", "message"),
    [
        ("periodic", "abc", 'error parsing CompactionRetention: time: invalid duration "abc"'),
        ("periodic", "-1", 'error parsing CompactionRetention: time: missing unit in duration "-1"'),
        ("revision", "5x", 'error parsing CompactionRetention: time: unknown unit "x" in duration "5x"'),
        ("daily", "1", 'unknown auto-compaction-mode "daily"'),
    ],
)
def test_bad_retention_gets_etcds_message(mode: str, retention: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_retention(mode, retention)
    assert str(err.value) == message


def test_zero_retention_means_no_compactor() -> None:
    host = Host(VirtualClock())
    assert new_compactor("periodic", "0", host) is None
    assert isinstance(new_compactor("periodic", "2s", host), Periodic)
    assert isinstance(new_compactor("revision", "10", host), Revision)


def test_go_durations_and_booleans() -> None:
    assert parse_duration("0") == 0.0
    assert parse_duration("-1.5s") == -1.5
    assert parse_duration("2h45m0.5s") == pytest.approx(9900.5)
    assert parse_duration("10µs") == pytest.approx(1e-5)
    for bad in ("", "s", ".s", "1", "1 s"):
        with pytest.raises(ValueError, match="time: "):
            parse_duration(bad)
    assert parse_bool("true") and parse_bool("1") and parse_bool("T")
    assert not parse_bool("false") and not parse_bool("0")
    with pytest.raises(ValueError, match="invalid syntax"):
        parse_bool("yes")


async def test_a_failing_compaction_does_not_stop_the_loop() -> None:
    clock = VirtualClock()

    class Failing(Host):
        async def compact(self, revision: int) -> None:
            self.compactions.append((self.clock.t, revision))
            raise EtcdError("etcdserver: request timed out")

    host = Failing(clock)
    await run_until(Revision(1, host, clock, interval=1.0), clock, 5)
    assert len(host.compactions) >= 4
