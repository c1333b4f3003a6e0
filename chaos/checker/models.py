"""Sequential specifications for the linearizability search, and how histories project onto them.

A model turns a workload's operations into independent per-key lists of ``Call``s (Porcupine's
P-compositionality: a history is linearizable iff each key's sub-history is) and steps a state
through one call at a time: ``step(state, inp, out)`` returns the next state, or ``ILLEGAL`` when
the call cannot have returned ``out`` in ``state``. States must be hashable: the search memoizes
(set of linearized calls, state) pairs.

Operations of unknown outcome (info) become calls with ``ret=None``: they may take effect at
any point after their invocation, or never. Before the search, each model drops what cannot
matter: failed operations (they did not happen), info reads (they change nothing), and info
writes whose values nobody ever observed (``prune``). The last is sound because values are unique: such a
write, wherever it is placed, is either overwritten before anyone looks or never applied,
and both leave every observation unchanged.

``ANY`` is a wildcard initial state ("some state we do not know"), used to cut a small window
out of a long history that still cannot be linearized from whatever state came before it.

Models:

- ``RegisterModel``: a register per key with read, write and compare-and-set. A CAS completion
  says whether it swapped, and when it did not, which value it found (the workload's Txn reads
  the key in its failure branch), so a failed compare is an observation like a read.
- ``ListAppendModel``: a list per key; a transaction's micro-operations on that key (appends of
  unique values, reads of the whole list) apply in order. This checks each key's projection of
  the ``append`` workload; ``chaos.checker.listappend`` checks the transactions across keys.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Any

from chaos.history import FAIL, OK, Operation


class _Illegal:
    def __repr__(self) -> str:
        return "ILLEGAL"


class _Any:
    def __repr__(self) -> str:
        return "ANY"


ILLEGAL: Any = _Illegal()
ANY: Any = _Any()


@dataclass(slots=True)
class Call:
    """One operation on one key, as the search sees it."""

    call: int
    ret: int | None  # None: unknown outcome, may take effect any time after call, or never
    inp: Any
    out: Any
    op: int  # index of the Operation in the history's operation list


class Model:
    name = "model"

    def init(self) -> Hashable:
        raise NotImplementedError

    def step(self, state: Any, inp: Any, out: Any) -> Any:
        raise NotImplementedError

    def calls(self, ops: list[Operation]) -> dict[Any, list[Call]]:
        """Per-key calls, in invocation order, after dropping what cannot matter (see ``prune``)."""
        raise NotImplementedError

    def prune(self, calls: list[Call]) -> list[Call]:
        """Drops optional calls (``ret=None``) that cannot change any observation."""
        return calls

    def describe(self, call: Call) -> str:
        return f"{call.inp!r} -> {call.out!r}"


# ---- register ----------------------------------------------------------------------------------

R, W, CAS = 0, 1, 2


class RegisterModel(Model):
    """Read/write/compare-and-set register; the state is the value (None: the key does not exist)."""

    name = "register"

    def init(self) -> Hashable:
        return None

    def step(self, state: Any, inp: Any, out: Any) -> Any:
        kind = inp[0]
        if kind == W:
            return inp[1]
        if kind == R:
            if state is ANY or state == out:
                return out
            return ILLEGAL
        # compare-and-set
        expect, new = inp[1], inp[2]
        if out is None:  # unknown outcome: if it ran, it swapped iff the compare held
            if state is ANY:
                return new  # the unknown state may have been the expected one (not swapping = not running it)
            return new if state == expect else state
        swapped, actual = out
        if swapped:
            return new if (state is ANY or state == expect) else ILLEGAL
        if actual == expect:
            return ILLEGAL  # a compare that failed against the value it compared with
        return actual if (state is ANY or state == actual) else ILLEGAL

    def calls(self, ops: list[Operation]) -> dict[Any, list[Call]]:
        per_key: dict[Any, list[Call]] = {}
        for i, op in enumerate(ops):
            if op.type == FAIL or op.f not in ("read", "write", "cas"):
                continue
            v = op.value if op.type == OK else op.invoke_value
            if op.f == "read":
                if op.type != OK:
                    continue  # a read of unknown outcome changes nothing
                inp, out = (R,), v.get("value")
            elif op.f == "write":
                inp, out = (W, v["value"]), None
            else:
                inp = (CAS, v["expect"], v["new"])
                out = (bool(v["swapped"]), v.get("actual")) if op.type == OK else None
            per_key.setdefault(v["key"], []).append(Call(op.call, op.ret, inp, out, i))
        return {key: self.prune(calls) for key, calls in per_key.items()}

    def prune(self, calls: list[Call]) -> list[Call]:
        observed: set[Any] = {None}
        maybe: list[Call] = []
        for c in calls:
            kind = c.inp[0]
            if c.ret is None:
                if kind != R:
                    maybe.append(c)
            elif kind == R:
                observed.add(c.out)
            elif kind == CAS:
                observed.add(c.inp[1] if c.out[0] else c.out[1])
        kept = {id(c) for c in calls if c.ret is not None}
        changed = True
        while changed:  # an optional CAS that is kept needs its expected value written: a fixpoint
            changed = False
            rest = []
            for c in maybe:
                new = c.inp[1] if c.inp[0] == W else c.inp[2]
                if new in observed:
                    kept.add(id(c))
                    changed = True
                    if c.inp[0] == CAS:
                        observed.add(c.inp[1])
                else:
                    rest.append(c)
            maybe = rest
        return [c for c in calls if id(c) in kept]

    def describe(self, call: Call) -> str:
        inp, out = call.inp, call.out
        if inp[0] == R:
            return f"read {out!r}"
        if inp[0] == W:
            return f"write {inp[1]!r}"
        if out is None:
            return f"cas {inp[1]!r}->{inp[2]!r} ?"
        return f"cas {inp[1]!r}->{inp[2]!r} " + ("swapped" if out[0] else f"failed, found {out[1]!r}")


# ---- list append -------------------------------------------------------------------------------

APPEND, READ = 0, 1
_EMPTY = (0, 0)  # (length, chain hash) of the empty list


def chain(values: Iterable[int], start: tuple[int, int] = _EMPTY) -> tuple[int, int]:
    """(length, hash) of a list, built one element at a time, as the model's state is."""
    n, h = start
    for v in values:
        n, h = n + 1, hash((h, v))
    return n, h


class ListAppendModel(Model):
    """Per-key lists of unique values; the state is (length, chain hash) of the list.

    Under the ``ANY`` wildcard the state is ``(ANY, appended)``: an unknown prefix followed by
    the values appended since, which the first read pins down.
    """

    name = "list-append"

    def init(self) -> Hashable:
        return _EMPTY

    def step(self, state: Any, inp: Any, out: Any) -> Any:
        for micro in inp:
            if micro[0] == APPEND:
                if state is ANY:
                    state = (ANY, (micro[1],))
                elif state[0] is ANY:
                    state = (ANY, (*state[1], micro[1]))
                else:
                    state = (state[0] + 1, hash((state[1], micro[1])))
            else:
                _, n, h, values = micro
                if state is ANY:
                    state = (n, h)
                elif state[0] is ANY:
                    suffix = state[1]
                    if len(values) < len(suffix) or tuple(values[len(values) - len(suffix) :]) != suffix:
                        return ILLEGAL
                    state = (n, h)
                elif state != (n, h):
                    return ILLEGAL
        return state

    def calls(self, ops: list[Operation]) -> dict[Any, list[Call]]:
        per_key: dict[Any, list[Call]] = {}
        for i, op in enumerate(ops):
            if op.f != "txn" or op.type == FAIL:
                continue
            txn = op.value["txn"] if op.type == OK else op.invoke_value["txn"]
            by_key: dict[Any, list[tuple]] = {}
            for f, key, v in txn:
                if f == "append":
                    by_key.setdefault(key, []).append((APPEND, v))
                elif op.type == OK:  # reads of unknown outcome change nothing
                    values = tuple(v or ())
                    n, h = chain(values)
                    by_key.setdefault(key, []).append((READ, n, h, values))
            for key, micro in by_key.items():
                per_key.setdefault(key, []).append(Call(op.call, op.ret, tuple(micro), None, i))
        return {key: self.prune(calls) for key, calls in per_key.items()}

    def prune(self, calls: list[Call]) -> list[Call]:
        observed: set[int] = set()
        for c in calls:
            if c.ret is not None:
                for micro in c.inp:
                    if micro[0] == READ:
                        observed.update(micro[3])
        out = []
        for c in calls:
            if c.ret is not None:
                out.append(c)
                continue
            micro = tuple(m for m in c.inp if m[0] == APPEND and m[1] in observed)
            if micro:
                out.append(Call(c.call, c.ret, micro, c.out, c.op))
        return out

    def describe(self, call: Call) -> str:
        parts = []
        for micro in call.inp:
            if micro[0] == APPEND:
                parts.append(f"append {micro[1]}")
            else:
                shown = list(micro[3][-6:])
                parts.append(f"read {'...' if len(micro[3]) > 6 else ''}{shown} (len {micro[1]})")
        return ", ".join(parts) + (" ?" if call.ret is None else "")


MODELS: dict[str, Model] = {"register": RegisterModel(), "list-append": ListAppendModel()}
