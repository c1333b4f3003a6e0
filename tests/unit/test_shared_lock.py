"""The backend's shared/exclusive lock: sharers overlap, an exclusive holder waits for them and is not
starved by new sharers, and misuse is refused."""

from __future__ import annotations

import threading

import pytest

from kvstore.mvcc.shared_lock import SharedLock


def test_sharers_overlap_and_exclusive_waits_for_them() -> None:
    lock = SharedLock()
    lock.acquire_shared()
    lock.acquire_shared()  # a second sharer does not wait for the first
    order: list[str] = []

    def exclusive() -> None:
        with lock.exclusive():
            order.append("exclusive")

    def late_sharer() -> None:
        with lock.shared():
            order.append("late sharer")

    t = threading.Thread(target=exclusive)
    t.start()
    while not lock._waiting_exclusive:  # until the exclusive request is queued
        threading.Event().wait(0.001)
    s = threading.Thread(target=late_sharer)
    s.start()
    assert order == []  # the exclusive request waits for the two sharers
    lock.release_shared()
    lock.release_shared()
    t.join(10)
    s.join(10)
    assert order == ["exclusive", "late sharer"]  # a sharer that came later does not overtake it
    assert not lock.held


def test_misuse_is_refused() -> None:
    lock = SharedLock()
    with pytest.raises(RuntimeError):
        lock.release_shared()
    with pytest.raises(RuntimeError):
        lock.release_exclusive()
