"""The work queue: dedupe, never two workers on one key, delays, per-key backoff, global rate limit."""

from __future__ import annotations

from controlplane.clock import FakeClock
from controlplane.workqueue import ItemExponentialBackoff, MaxOf, TokenBucket, WorkQueue


def test_a_key_is_queued_once():
    q = WorkQueue()
    q.add("a")
    q.add("a")
    q.add("b")
    assert len(q) == 2
    assert q.get(0) == "a"
    assert q.get(0) == "b"
    assert q.get(0) is None


def test_a_key_added_while_processing_waits_for_done():
    q = WorkQueue()
    q.add("a")
    assert q.get(0) == "a"
    q.add("a")  # dirty again, but a worker holds it
    assert q.get(0) is None, "no second worker gets a key being processed"
    q.done("a")
    assert q.get(0) == "a", "re-queued when the first worker is done"
    q.done("a")
    assert q.get(0) is None


def test_add_after_waits_for_the_clock():
    clock = FakeClock()
    q = WorkQueue(clock=clock)
    q.add_after("a", 5)
    assert q.get(0) is None
    clock.step(4.9)
    assert len(q) == 0
    clock.step(0.2)
    assert q.get(0) == "a"


def test_per_key_exponential_backoff_and_forget():
    clock = FakeClock()
    q = WorkQueue(clock=clock, rate_limiter=MaxOf(ItemExponentialBackoff(0.1, 1.0)))
    delays = []
    for _ in range(6):
        q.add_rate_limited("a")
        delays.append(q.pending_delayed())
        clock.step(10)
        assert q.get(0) == "a"
        q.done("a")
    assert q.num_requeues("a") == 6
    lim = ItemExponentialBackoff(0.1, 1.0)
    assert [lim.when("k") for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    q.forget("a")
    assert q.num_requeues("a") == 0


def test_global_token_bucket_spaces_out_a_burst():
    clock = FakeClock()
    bucket = TokenBucket(qps=10, burst=3, clock=clock)
    assert [bucket.when(str(i)) for i in range(3)] == [0, 0, 0]
    assert [round(bucket.when(str(i)), 3) for i in range(3, 6)] == [0.1, 0.2, 0.3]
    clock.step(1.0)
    assert bucket.when("x") == 0


def test_shutdown_wakes_getters():
    q = WorkQueue()
    q.shutdown()
    assert q.get() is None
