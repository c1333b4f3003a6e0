"""LeaseQueue: one updatable entry per lease, earliest first, checked against a sorted-list model."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from kvstore.lease.expiry import LeaseQueue


def drain(q: LeaseQueue) -> list[tuple[int, float]]:
    out = []
    while len(q):
        out.append(q.pop())
    return out


def test_empty():
    q = LeaseQueue()
    assert len(q) == 0
    assert q.peek() is None
    with pytest.raises(IndexError):
        q.pop()
    assert not q.remove(1)


def test_orders_by_time_then_id():
    q = LeaseQueue()
    for lease_id, t in [(5, 3.0), (1, 1.0), (9, 2.0), (2, 2.0)]:
        q.register_or_update(lease_id, t)
    assert q.peek() == (1, 1.0)
    assert drain(q) == [(1, 1.0), (2, 2.0), (9, 2.0), (5, 3.0)]


def test_update_moves_entry_both_ways():
    q = LeaseQueue()
    for i in range(10):
        q.register_or_update(i, float(i))
    q.register_or_update(0, 100.0)  # later
    q.register_or_update(9, -1.0)  # earlier
    assert len(q) == 10
    assert q.time_of(0) == 100.0
    assert 9 in q
    order = [lease_id for lease_id, _ in drain(q)]
    assert order == [9, 1, 2, 3, 4, 5, 6, 7, 8, 0]


def test_remove_middle_and_last():
    q = LeaseQueue()
    for i in range(7):
        q.register_or_update(i, float(7 - i))
    assert q.remove(3)
    assert q.remove(0)  # the latest one
    assert not q.remove(3)
    assert 3 not in q
    assert q.time_of(3) is None
    assert [i for i, _ in drain(q)] == [6, 5, 4, 2, 1]


def test_clear():
    q = LeaseQueue()
    q.register_or_update(1, 1.0)
    q.clear()
    assert len(q) == 0
    assert 1 not in q


ops = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.integers(0, 15), st.integers(0, 20).map(float)),
        st.tuples(st.just("remove"), st.integers(0, 15), st.just(0.0)),
        st.tuples(st.just("pop"), st.just(0), st.just(0.0)),
    ),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_matches_model(script):
    q = LeaseQueue()
    model: dict[int, float] = {}
    for op, lease_id, t in script:
        if op == "set":
            q.register_or_update(lease_id, t)
            model[lease_id] = t
        elif op == "remove":
            assert q.remove(lease_id) == (lease_id in model)
            model.pop(lease_id, None)
        elif model:
            want = min(model.items(), key=lambda kv: (kv[1], kv[0]))
            assert q.pop() == want
            del model[want[0]]
        assert len(q) == len(model)
        expected_top = min(model.items(), key=lambda kv: (kv[1], kv[0])) if model else None
        assert q.peek() == expected_top
    assert drain(q) == sorted(model.items(), key=lambda kv: (kv[1], kv[0]))
