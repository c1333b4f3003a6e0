"""Linearizability checking: the Wing-Gong-Lowe search with memoization, per key.

The search (Wing & Gong 1993, with Lowe's memoization, as Porcupine implements it) walks a
doubly linked list of call and return events in time order. At each point it may linearize
any call that comes before the first pending return: if the model accepts the call and the pair
(set of linearized calls, model state) has not been tried before, the call and its return are
lifted out of the list and the walk restarts from the head. Reaching a return whose call is not
yet linearized means the current path is a dead end: the last lifted call is put back and the
walk resumes after it. The history is linearizable when every call with a known return has
been linearized.

Calls of unknown outcome (``ret=None``) have no return event: they may be linearized at any
point after their invocation, or never. Events at the same instant order calls before returns,
so operations that touch in time count as concurrent.

``check`` runs the search for each key separately (P-compositionality) against a shared time
budget; a key whose search runs out of time is "unknown", never a false answer. For a key that
is not linearizable, ``check`` also finds the smallest window that shows it. The search itself
tells where the shortest failing prefix ends (the furthest return any path was stopped at;
prefixes of a linearizable history are linearizable); the window then starts as late as it
can while the operations in it still cannot be linearized from *any* state, operations
already in flight at its start being optional. Such a window proves the violation on its own.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from chaos.checker.models import ANY, ILLEGAL, Call, Model
from chaos.history import Operation

VALID, INVALID, UNKNOWN = "valid", "invalid", "unknown"


class OutOfTime(Exception):
    pass


def search(model: Model, calls: list[Call], init: Hashable, deadline: float) -> int | None:
    """None if calls are linearizable from init, else the call whose return no path gets past.

    That call ends the shortest failing prefix: a path that linearized every call returning
    before it would otherwise have been stopped there. Raises OutOfTime past the deadline.
    """
    n = len(calls)
    if n == 0:
        return None
    events: list[tuple[int, int, int]] = []
    for i, c in enumerate(calls):
        events.append((c.call, 0, i))
        if c.ret is not None:
            events.append((c.ret, 1, i))
    events.sort()
    size = len(events)
    head = size  # sentinel index
    nxt = [*range(1, size), -1, 0]  # nxt[head] = first event
    prv = [head, *range(size - 1), size - 1]
    is_call = [kind == 0 for _, kind, _ in events]
    cid = [i for _, _, i in events]
    ret_pos = [-1] * n
    for pos, (_, kind, i) in enumerate(events):
        if kind == 1:
            ret_pos[i] = pos
    inps = [c.inp for c in calls]
    outs = [c.out for c in calls]
    step = model.step
    remaining = sum(1 for c in calls if c.ret is not None)

    def unlink(pos: int) -> None:
        p, q = prv[pos], nxt[pos]
        nxt[p] = q
        if q != -1:
            prv[q] = p

    def relink(pos: int) -> None:
        p, q = prv[pos], nxt[pos]
        nxt[p] = pos
        if q != -1:
            prv[q] = pos

    cache: set[tuple[int, Any]] = set()
    stack: list[tuple[int, Any, int]] = []
    state: Any = init
    linearized = 0
    entry = nxt[head]
    furthest = -1
    budget_check = 0
    while remaining:
        budget_check += 1
        if budget_check >= 4096:
            budget_check = 0
            if time.monotonic() > deadline:
                raise OutOfTime()
        if is_call[entry]:
            i = cid[entry]
            new_state = step(state, inps[i], outs[i])
            if new_state is not ILLEGAL:
                bits = linearized | (1 << i)
                memo = (bits, new_state)
                if memo not in cache:
                    cache.add(memo)
                    stack.append((entry, state, linearized))
                    state, linearized = new_state, bits
                    unlink(entry)
                    rp = ret_pos[i]
                    if rp != -1:
                        unlink(rp)
                        remaining -= 1
                    entry = nxt[head]
                    continue
            entry = nxt[entry]
        else:  # a return whose call is not linearized: a dead end, undo the last choice
            if entry > furthest:
                furthest = entry
            if not stack:
                return cid[furthest]
            entry, state, linearized = stack.pop()
            i = cid[entry]
            rp = ret_pos[i]
            if rp != -1:
                relink(rp)
                remaining += 1
            relink(entry)
            entry = nxt[entry]
    return None


@dataclass
class KeyResult:
    key: Any
    verdict: str
    calls: int
    elapsed: float
    fail_op: int | None = None  # operation whose return no linearization reaches (end of the window)
    window: list[int] = field(default_factory=list)  # operation indices that show the violation
    window_from_any_state: bool = False


@dataclass
class Result:
    verdict: str
    model: str
    keys: dict[Any, KeyResult]
    elapsed: float
    dropped: int = 0  # operations that cannot matter and were not searched

    @property
    def invalid_keys(self) -> list[KeyResult]:
        return [k for k in self.keys.values() if k.verdict == INVALID]

    def summary(self) -> dict[str, Any]:
        counts = {VALID: 0, INVALID: 0, UNKNOWN: 0}
        for k in self.keys.values():
            counts[k.verdict] += 1
        return {
            "verdict": self.verdict,
            "model": self.model,
            "keys": counts,
            "calls": sum(k.calls for k in self.keys.values()),
            "elapsed_s": round(self.elapsed, 3),
            "invalid": [
                {"key": k.key, "fail_op": k.fail_op, "window": k.window, "from_any_state": k.window_from_any_state}
                for k in self.invalid_keys
            ],
            "unknown_keys": [k.key for k in self.keys.values() if k.verdict == UNKNOWN],
        }


def _prefix(calls: list[Call], t: int) -> list[Call]:
    """The history as it stood at time t: calls begun by then, those still running made optional."""
    out = []
    for c in calls:
        if c.call > t:
            continue
        out.append(c if c.ret is not None and c.ret <= t else Call(c.call, None, c.inp, c.out, c.op))
    return out


def _window(calls: list[Call], start: int, end: int) -> list[Call]:
    """Calls that finish at or after start and begin by end; those begun before start are optional."""
    out = []
    for c in _prefix(calls, end):
        if c.ret is not None and c.ret < start:
            continue
        out.append(c if c.call >= start else Call(c.call, None, c.inp, c.out, c.op))
    return out


def smallest_window(model: Model, calls: list[Call], blocked: int, deadline: float) -> tuple[list[int], bool]:
    """(ops of the window, whether it fails from any state) for a history that fails at call ``blocked``.

    Windows are tried from the end backwards, doubling, then narrowed by bisection: small windows
    are cheap to search, and the violation is usually close to where the search got stuck.
    """
    end = calls[blocked].ret
    assert end is not None
    starts = sorted({c.call for c in calls if c.call <= end}, reverse=True)  # latest first

    def fails(k: int) -> bool:
        probe_deadline = min(deadline, time.monotonic() + 5.0)
        return search(model, model.prune(_window(calls, starts[k], end)), ANY, probe_deadline) is not None

    good, k = -1, 1  # good: the largest index known to pass; k: next probe
    try:
        while True:
            k = min(k, len(starts) - 1)
            if fails(k):
                break
            if k == len(starts) - 1:
                raise OutOfTime()  # only the initial state explains it: fall back to the prefix
            good, k = k, k * 2
        lo, hi = good + 1, k  # fails at hi; find the smallest failing index
        while lo < hi:
            mid = (lo + hi) // 2
            if fails(mid):
                hi = mid
            else:
                lo = mid + 1
        return [c.op for c in model.prune(_window(calls, starts[hi], end))], True
    except OutOfTime:
        prefix = _prefix(calls, end)
        return [c.op for c in prefix[-40:]], False


def check_calls(model: Model, key: Any, calls: list[Call], deadline: float, explain: bool = True) -> KeyResult:
    t0 = time.monotonic()
    try:
        blocked = search(model, calls, model.init(), deadline)
    except OutOfTime:
        return KeyResult(key, UNKNOWN, len(calls), time.monotonic() - t0)
    if blocked is None:
        return KeyResult(key, VALID, len(calls), time.monotonic() - t0)
    result = KeyResult(key, INVALID, len(calls), 0.0, fail_op=calls[blocked].op)
    if explain:
        window_deadline = max(deadline, time.monotonic() + 10.0)  # explaining may overrun the budget a little
        result.window, result.window_from_any_state = smallest_window(model, calls, blocked, window_deadline)
    result.elapsed = time.monotonic() - t0
    return result


def check(model: Model, ops: list[Operation], budget_s: float = 60.0, explain: bool = True) -> Result:
    """Checks each key's sub-history; unknown if the budget runs out before every key is decided."""
    t0 = time.monotonic()
    deadline = t0 + budget_s
    per_key = model.calls(ops)
    results: dict[Any, KeyResult] = {}
    for key, calls in sorted(per_key.items(), key=lambda kv: len(kv[1])):
        if time.monotonic() > deadline:
            results[key] = KeyResult(key, UNKNOWN, len(calls), 0.0)
            continue
        results[key] = check_calls(model, key, calls, deadline, explain)
    verdicts = {r.verdict for r in results.values()}
    verdict = INVALID if INVALID in verdicts else UNKNOWN if UNKNOWN in verdicts else VALID
    used = {c.op for calls in per_key.values() for c in calls}
    return Result(verdict, model.name, results, time.monotonic() - t0, len(ops) - len(used))
