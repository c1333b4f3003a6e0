"""The Elle-style list-append checker: the anomalies of Adya's hierarchy, real time, and scale."""

from __future__ import annotations

import random
import time

from chaos.checker.listappend import INVALID, VALID, check
from chaos.history import FAIL, INFO, Operation
from tests.chaos.histories import Builder


def run(b: Builder) -> tuple[str, list[str]]:
    result = check(b.operations())
    return result.verdict, sorted({a.type for a in result.anomalies})


def test_serial_history_is_valid() -> None:
    b = Builder()
    b.txn(0, [["append", "a", 1], ["append", "b", 1]], 0, 10)
    b.txn(1, [["r", "a", None], ["r", "b", None]], 20, 30, out=[["r", "a", [1]], ["r", "b", [1]]])
    b.txn(0, [["append", "a", 2]], 40, 50)
    b.txn(1, [["r", "a", None]], 60, 70, out=[["r", "a", [1, 2]]])
    assert run(b) == (VALID, [])


def test_g0_write_cycle() -> None:
    b = Builder()
    b.txn(0, [["append", "a", 1], ["append", "b", 2]], 0, 10)
    b.txn(1, [["append", "a", 2], ["append", "b", 1]], 0, 10)
    b.txn(2, [["r", "a", None], ["r", "b", None]], 20, 30, out=[["r", "a", [1, 2]], ["r", "b", [1, 2]]])
    verdict, kinds = run(b)
    assert verdict == INVALID and "G0" in kinds


def test_g1c_circular_information_flow() -> None:
    b = Builder()
    b.txn(0, [["append", "a", 1], ["r", "b", None]], 0, 10, out=[["append", "a", 1], ["r", "b", [1]]])
    b.txn(1, [["append", "b", 1], ["r", "a", None]], 0, 10, out=[["append", "b", 1], ["r", "a", [1]]])
    verdict, kinds = run(b)
    assert verdict == INVALID and "G1c" in kinds


def test_g_single_read_skew() -> None:
    b = Builder()
    b.txn(0, [["append", "a", 1], ["append", "b", 1]], 0, 100)
    b.txn(1, [["r", "a", None], ["r", "b", None]], 0, 100, out=[["r", "a", []], ["r", "b", [1]]])
    verdict, kinds = run(b)
    assert verdict == INVALID and kinds == ["G-single"]


def test_g2_write_skew() -> None:
    b = Builder()
    b.txn(0, [["r", "a", None], ["append", "b", 1]], 0, 100, out=[["r", "a", []], ["append", "b", 1]])
    b.txn(1, [["r", "b", None], ["append", "a", 1]], 0, 100, out=[["r", "b", []], ["append", "a", 1]])
    b.txn(2, [["r", "a", None], ["r", "b", None]], 200, 300, out=[["r", "a", [1]], ["r", "b", [1]]])
    verdict, kinds = run(b)
    assert verdict == INVALID and "G2" in kinds


def test_lost_append_is_a_real_time_violation() -> None:
    # acknowledged, then never seen by a read that began afterwards (an ack before fsync, say)
    b = Builder()
    b.txn(0, [["append", "a", 1]], 0, 10)
    b.txn(1, [["r", "a", None]], 20, 30, out=[["r", "a", []]])
    verdict, kinds = run(b)
    assert verdict == INVALID and kinds == ["G-single-realtime"]


def test_stale_read_is_a_real_time_violation() -> None:
    b = Builder()
    b.txn(0, [["append", "a", 1]], 0, 10)
    b.txn(0, [["append", "a", 2]], 20, 30)
    b.txn(1, [["r", "a", None]], 40, 50, out=[["r", "a", [1]]])
    b.txn(1, [["r", "a", None]], 60, 70, out=[["r", "a", [1, 2]]])
    verdict, kinds = run(b)
    assert verdict == INVALID and kinds == ["G-single-realtime"]


def test_concurrent_read_may_miss_an_append() -> None:
    b = Builder()
    b.txn(0, [["append", "a", 1]], 0, 50)
    b.txn(1, [["r", "a", None]], 20, 30, out=[["r", "a", []]])
    assert run(b) == (VALID, [])


def test_non_cycle_anomalies() -> None:
    b = Builder()
    b.txn(0, [["append", "a", 1]], 0, 10)
    b.txn(0, [["append", "a", 2]], 20, 30, FAIL)
    b.txn(1, [["r", "a", None]], 40, 50, out=[["r", "a", [1, 2]]])  # aborted read
    b.txn(1, [["r", "a", None]], 60, 70, out=[["r", "a", [1, 9]]])  # garbage, and out of order
    b.txn(1, [["r", "a", None]], 80, 90, out=[["r", "a", [1, 1]]])  # duplicates
    verdict, kinds = run(b)
    assert verdict == INVALID
    assert {"aborted-read", "garbage-read", "incompatible-order", "duplicate-elements"} <= set(kinds)


def test_info_append_counts_only_when_read() -> None:
    b = Builder()
    b.txn(0, [["append", "a", 1]], 0, 10, INFO)
    b.txn(1, [["r", "a", None]], 20, 30, out=[["r", "a", []]])  # never happened: fine
    b.txn(2, [["append", "a", 2]], 40, None, INFO)
    b.txn(1, [["r", "a", None]], 500, 510, out=[["r", "a", [2]]])  # happened, late: fine
    assert run(b) == (VALID, [])


def random_append_history(n: int, keys: int = 8, concurrency: int = 10, seed: int = 1) -> list[Operation]:
    """Serializable by construction: each transaction takes effect atomically at an instant in its interval."""
    rng = random.Random(seed)
    b = Builder()
    free = [0] * concurrency
    plans = []
    for value in range(1, n + 1):
        c = min(range(concurrency), key=lambda i: free[i])
        call = free[c] + rng.randint(0, 3)
        ret = call + rng.randint(1, 40)
        free[c] = ret + 1
        ks = rng.sample(range(keys), rng.randint(1, 3))
        mops = [
            ["append", f"k{k}", value * 10 + j] if rng.random() < 0.5 else ["r", f"k{k}", None]
            for j, k in enumerate(ks)
        ]
        plans.append((rng.uniform(call, ret), c, call, ret, mops))
    state: dict[str, list[int]] = {}
    for _, c, call, ret, mops in sorted(plans, key=lambda p: p[0]):
        out = []
        for f, k, v in mops:
            if f == "append":
                state.setdefault(k, []).append(v)
                out.append([f, k, v])
            else:
                out.append([f, k, list(state.get(k, []))])
        b.txn(c, mops, call, ret, out=out)
    return b.operations()


def test_large_valid_history_is_valid() -> None:
    """How long the check takes is printed (``pytest -s``), not asserted: speed is a benchmark's business."""
    ops = random_append_history(20_000)
    t0 = time.monotonic()
    result = check(ops)
    print(f"20,000 list-append transactions checked in {time.monotonic() - t0:.2f}s")
    assert result.verdict == VALID, result.summary()


def test_large_history_with_one_lost_append_is_invalid() -> None:
    ops = random_append_history(5000, seed=2)
    # pretend an acknowledged append was lost: every read after it forgets the value
    victim = next(op for op in ops[2000:] if any(m[0] == "append" for m in op.value["txn"]))
    key, value = next((m[1], m[2]) for m in victim.value["txn"] if m[0] == "append")
    for op in ops:
        for m in op.value["txn"]:
            if m[0] == "r" and m[1] == key and value in m[2]:
                m[2] = [v for v in m[2] if v != value]
    result = check(ops)
    assert result.verdict == INVALID
    assert any(victim is ops[i] for a in result.anomalies for i in a.ops)
