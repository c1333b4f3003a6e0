"""Leader election through a lease and a Txn, with a fake store and a fake clock."""

from __future__ import annotations

import threading

from controlplane.clock import FakeClock
from controlplane.leader_election import LeaderElector
from controlplane.store.fake import FakeStore
from tests.controlplane.harness import wait_for


def test_one_leader_and_takeover_when_its_lease_expires():
    clock = FakeClock()
    store = FakeStore(clock)
    a = LeaderElector(store, "lock", "a", ttl=3, clock=clock)
    b = LeaderElector(store, "lock", "b", ttl=3, clock=clock)
    assert a.try_acquire()
    assert not b.try_acquire(), "the Txn lets only one create the lock"
    assert a.holder() == "a"
    clock.step(2)
    assert a.renew()
    clock.step(2)  # renewed at t=2, so alive until t=5
    assert not b.try_acquire()
    clock.step(1.1)  # a has died: no renewal since t=2
    assert b.try_acquire()
    assert b.holder() == "b"
    assert not a.renew(), "the old leader learns it lost"


def test_release_hands_over_at_once():
    clock = FakeClock()
    store = FakeStore(clock)
    a = LeaderElector(store, "lock", "a", ttl=15, clock=clock)
    b = LeaderElector(store, "lock", "b", ttl=15, clock=clock)
    assert a.try_acquire()
    a.release()
    assert b.try_acquire()


def test_run_calls_back_while_leading_and_stops_on_loss():
    store = FakeStore()
    e = LeaderElector(store, "lock", "a", ttl=1, retry_period=0.05)
    started, lost_seen = threading.Event(), threading.Event()

    def lead(lost: threading.Event) -> None:
        started.set()
        lost.wait()
        lost_seen.set()

    stop = threading.Event()
    t = threading.Thread(target=e.run, args=(stop, lead), daemon=True)
    t.start()
    try:
        assert started.wait(60)
        store.delete(e.key)  # someone removed the lock: the next renewal notices
        assert lost_seen.wait(60)
        wait_for("leading again", lambda: e.holder() == "a", timeout=60)
    finally:
        stop.set()
        t.join(60)
    assert not t.is_alive()
    assert store.get(e.key) is None, "stopping releases the lock"
