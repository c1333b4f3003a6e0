"""Building histories by hand for checker tests: operations with explicit call and return times."""

from __future__ import annotations

import random
from typing import Any

from chaos.history import INFO, OK, Event, Operation, pair


class Builder:
    """Operations as (process, f, invoke value, call, ret, type, completion value), times in ticks."""

    def __init__(self) -> None:
        self.ops: list[tuple[int, int, Any, Any]] = []  # (time, order, process, event args)
        self._n = 0

    def op(
        self, process: int, f: str, value: Any, call: int, ret: int | None, type_: str = OK, out: Any = None
    ) -> None:
        self._n += 1
        self.ops.append((call, 0, self._n, (process, "invoke", f, value)))
        if ret is not None:
            self.ops.append((ret, 1, self._n, (process, type_, f, out if out is not None else value)))

    def events(self) -> list[Event]:
        evs = []
        for t, _, _, (process, type_, f, value) in sorted(self.ops, key=lambda o: (o[0], o[1], o[2])):
            evs.append(Event(len(evs), t, process, type_, f, value))
        return evs

    def operations(self) -> list[Operation]:
        return pair(self.events())

    # register shorthands
    def write(self, p: int, key: str, v: Any, call: int, ret: int | None, type_: str = OK) -> None:
        self.op(p, "write", {"key": key, "value": v}, call, ret, type_)

    def read(self, p: int, key: str, v: Any, call: int, ret: int | None, type_: str = OK) -> None:
        self.op(p, "read", {"key": key}, call, ret, type_, {"key": key, "value": v})

    def cas(
        self,
        p: int,
        key: str,
        expect: Any,
        new: Any,
        call: int,
        ret: int | None,
        swapped: bool | None,
        actual: Any = None,
    ) -> None:
        inv = {"key": key, "expect": expect, "new": new}
        if swapped is None:
            self.op(p, "cas", inv, call, ret, INFO)
        else:
            self.op(p, "cas", inv, call, ret, OK, {**inv, "swapped": swapped, "actual": actual})

    def txn(self, p: int, mops: list[list[Any]], call: int, ret: int | None, type_: str = OK, out: Any = None) -> None:
        self.op(p, "txn", {"txn": mops}, call, ret, type_, {"txn": out} if out is not None else None)


def random_register_history(
    n_ops: int, concurrency: int = 10, seed: int = 1, info_rate: float = 0.02, key: str = "k"
) -> list[Operation]:
    """A linearizable register history made by simulating a register under concurrent clients.

    Every operation takes effect at a random instant inside its interval; some completions are
    lost (info) and some of those never take effect at all.
    """
    rng = random.Random(seed)
    b = Builder()
    value: Any = None
    free_at = [0] * concurrency
    process = list(range(concurrency))
    effects = []
    for next_value in range(1, n_ops + 1):
        c = min(range(concurrency), key=lambda i: free_at[i])
        call = free_at[c] + rng.randint(0, 3)
        ret = call + rng.randint(1, 40)
        effect = rng.uniform(call, ret)
        kind = rng.choices(["read", "write", "cas"], [5, 3, 2])[0]
        effects.append((effect, c, kind, next_value, call, ret))
        free_at[c] = ret + 1
    effects.sort()
    for _, c, kind, v, call, ret in effects:
        lost = rng.random() < info_rate
        applied = not lost or rng.random() < 0.5
        p = process[c]
        if lost:
            process[c] += concurrency
        if kind == "read":
            if lost:
                continue
            b.read(p, key, value, call, ret)
        elif kind == "write":
            if applied:
                value = v
            b.write(p, key, v, call, None if lost else ret, INFO if lost else OK)
        else:
            expect = value if rng.random() < 0.6 else rng.randint(0, max(1, v))
            swapped = expect == value
            if applied and swapped:
                value = v
            if lost:
                b.cas(p, key, expect, v, call, None, None)
            else:
                b.cas(p, key, expect, v, call, ret, swapped, None if swapped else value)
    return b.operations()


class WatchBuilder(Builder):
    """Writes with their revisions, and watch sessions as the watch workload records them."""

    def __init__(self) -> None:
        super().__init__()
        self.t = 0

    def tick(self) -> int:
        self.t += 10
        return self.t

    def put(self, puts: list[tuple[str, str]], rev: int | None, type_: str = OK) -> None:
        t = self.tick()
        out = {"puts": [list(p) for p in puts], "revision": rev} if type_ == OK else None
        self.op(0, "put", {"puts": [list(p) for p in puts]}, t, t + 5 if type_ != INFO else None, type_, out)

    def delete(self, key: str, rev: int, deleted: int = 1) -> None:
        t = self.tick()
        self.op(0, "delete", {"key": key}, t, t + 5, OK, {"key": key, "deleted": deleted, "revision": rev})

    def compact(self, rev: int) -> None:
        t = self.tick()
        self.op(7, "compact", {"revision": rev}, t, t + 5, OK)

    def note(self, watcher: str, session: int, kind: str, **fields: Any) -> None:
        t = self.tick()
        self.op(watcher, "watch", {"watcher": watcher, "session": session, "kind": kind, **fields}, t, t)  # type: ignore[arg-type]

    def open(
        self,
        watcher: str,
        session: int,
        start: int,
        key: str = "k",
        range_end: str = "l",
        prev_kv: bool = False,
        created_at: int = 0,
    ) -> None:
        self.note(watcher, session, "open", key=key, range_end=range_end, start=start, prev_kv=prev_kv)
        self.note(
            watcher,
            session,
            "recv",
            header=created_at,
            created=True,
            canceled=False,
            compact=0,
            progress=False,
            events=[],
        )

    def recv(self, watcher: str, session: int, events: list[list[Any]], header: int = 0) -> None:
        self.note(
            watcher,
            session,
            "recv",
            header=header or max((e[3] for e in events), default=0),
            created=False,
            canceled=False,
            compact=0,
            progress=False,
            events=events,
        )

    def progress(self, watcher: str, session: int, rev: int) -> None:
        self.note(
            watcher, session, "recv", header=rev, created=False, canceled=False, compact=0, progress=True, events=[]
        )

    def final(self, kvs: list[list[Any]], rev: int, member: int = 0) -> None:
        t = self.tick()
        self.op(1_000_000 + member, "final-read", {}, t, t + 1, OK, {"kvs": kvs, "revision": rev})


def put_event(key: str, value: str, rev: int, create: int, version: int, prev: list[Any] | None = None) -> list[Any]:
    return ["put", key, value, rev, create, version, prev]


def delete_event(key: str, rev: int, prev: list[Any] | None = None) -> list[Any]:
    return ["delete", key, "", rev, 0, 0, prev]
