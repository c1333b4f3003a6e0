"""Histories of operations, recorded as Jepsen records them, and read back as paired operations.

A history is a list of events. A client *invokes* an operation (type ``invoke``), and later the
operation *completes* with one of three outcomes:

- ``ok``: it happened, and the completion's value says what it returned;
- ``fail``: it certainly did not happen (a read that errored, a transaction whose guard failed);
- ``info``: nobody knows (a timeout, a crashed connection): it may have happened, at any time
  after its invocation, or never.

A process has at most one operation in flight. After an ``info`` a process is never reused
(its operation may still be in flight on some server), so workers take a fresh process number.
Faults are recorded too, under the process ``"nemesis"``, with ``f`` naming the fault, and
observations that are not operations (what a watcher received) under processes named by
strings. Client processes are numbers.

Times are nanoseconds since the recorder started, from the monotonic clock. On disk a history
is JSON lines, one event per line (``history.jsonl``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

INVOKE, OK, FAIL, INFO = "invoke", "ok", "fail", "info"
NEMESIS = "nemesis"
COMPLETIONS = (OK, FAIL, INFO)


@dataclass(slots=True)
class Event:
    index: int
    time: int  # ns since the start of the history
    process: int | str
    type: str
    f: str
    value: Any = None
    error: str | None = None
    node: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "index": self.index,
            "time": self.time,
            "process": self.process,
            "type": self.type,
            "f": self.f,
            "value": self.value,
        }
        if self.error is not None:
            out["error"] = self.error
        if self.node is not None:
            out["node"] = self.node
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Event:
        return cls(
            d["index"], d["time"], d["process"], d["type"], d["f"], d.get("value"), d.get("error"), d.get("node")
        )


class Recorder:
    """Appends events from any thread; the index is the event's position in the history."""

    def __init__(self, clock: Callable[[], int] = time.monotonic_ns) -> None:
        self._clock = clock
        self.t0 = clock()
        self.events: list[Event] = []
        self._lock = threading.Lock()
        self._counts = {OK: 0, FAIL: 0, INFO: 0}

    def restart_clock(self) -> None:
        """Makes time 0 now (before the first event: a run starts its clock when its clients start)."""
        with self._lock:
            if self.events:
                raise RuntimeError("the clock of a history with events cannot be moved")
            self.t0 = self._clock()

    def now(self) -> int:
        return self._clock() - self.t0

    def _add(self, process: int | str, type_: str, f: str, value: Any, error: str | None, node: str | None) -> Event:
        with self._lock:
            ev = Event(len(self.events), self._clock() - self.t0, process, type_, f, value, error, node)
            self.events.append(ev)
            if type_ in self._counts and isinstance(process, int):
                self._counts[type_] += 1
        return ev

    def invoke(self, process: int | str, f: str, value: Any = None, node: str | None = None) -> Event:
        return self._add(process, INVOKE, f, value, None, node)

    def complete(self, inv: Event, type_: str, value: Any = None, error: str | None = None) -> Event:
        if type_ not in COMPLETIONS:
            raise ValueError(f"not a completion type: {type_}")
        return self._add(inv.process, type_, inv.f, value, error, inv.node)

    def ok(self, inv: Event, value: Any = None) -> Event:
        return self.complete(inv, OK, value)

    def fail(self, inv: Event, value: Any = None, error: str | None = None) -> Event:
        return self.complete(inv, FAIL, value, error)

    def info(self, inv: Event, value: Any = None, error: str | None = None) -> Event:
        return self.complete(inv, INFO, value, error)

    def count(self) -> dict[str, int]:
        """Completions of client operations (processes that are numbers) by type."""
        with self._lock:
            return dict(self._counts)


def write_jsonl(events: Iterable[Event], path: Path) -> None:
    with open(path, "w") as out:
        for ev in events:
            out.write(json.dumps(ev.to_json(), separators=(",", ":")))
            out.write("\n")


def read_jsonl(path: Path) -> list[Event]:
    with open(path) as src:
        return [Event.from_json(json.loads(line)) for line in src if line.strip()]


@dataclass(slots=True)
class Operation:
    """An invocation and its completion. ``ret`` is None when the outcome is unknown (info)."""

    process: int | str
    f: str
    type: str  # ok, fail or info
    call: int
    ret: int | None
    invoke_value: Any
    value: Any  # the completion's value (the invocation's for info and fail)
    invoke_index: int
    complete_index: int | None
    error: str | None = None
    node: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def latency_ns(self) -> int | None:
        return None if self.ret is None else self.ret - self.call


def pair(events: Iterable[Event]) -> list[Operation]:
    """Operations in invocation order; an invocation never completed counts as info.

    An info operation's ``ret`` is None: it may take effect at any time after its call. A
    completion without a value keeps the invocation's.
    """
    pending: dict[int | str, int] = {}
    ops: list[Operation] = []
    for ev in events:
        if ev.process == NEMESIS:
            continue
        if ev.type == INVOKE:
            if ev.process in pending:
                other = ops[pending[ev.process]].invoke_index
                raise ValueError(f"process {ev.process} invoked at event {ev.index} with event {other} still open")
            pending[ev.process] = len(ops)
            ops.append(
                Operation(ev.process, ev.f, INFO, ev.time, None, ev.value, ev.value, ev.index, None, node=ev.node)
            )
            continue
        if ev.process not in pending:
            raise ValueError(f"event {ev.index}: completion for process {ev.process} without an invocation")
        op = ops[pending.pop(ev.process)]
        op.type = ev.type
        op.complete_index = ev.index
        op.error = ev.error
        op.ret = None if ev.type == INFO else ev.time
        if ev.value is not None:
            op.value = ev.value
    return ops


def nemesis_windows(events: Iterable[Event], end_time: int) -> list[tuple[int, int, str]]:
    """Fault windows (start ns, end ns, description) from the nemesis's start-/stop- events."""
    open_: dict[str, tuple[int, str]] = {}
    windows: list[tuple[int, int, str]] = []
    for ev in events:
        if ev.process != NEMESIS:
            continue
        fault_id = str((ev.value or {}).get("id", ev.f)) if isinstance(ev.value, dict) else ev.f
        desc = (ev.value or {}).get("desc", ev.f) if isinstance(ev.value, dict) else ev.f
        if ev.f == "start":
            open_[fault_id] = (ev.time, desc)
        elif ev.f == "stop" and fault_id in open_:
            start, d = open_.pop(fault_id)
            windows.append((start, ev.time, d))
    for start, d in open_.values():
        windows.append((start, end_time, d))
    return sorted(windows)


def client_ops(ops: Iterable[Operation], f: Iterable[str] | None = None) -> Iterator[Operation]:
    wanted = set(f) if f is not None else None
    for op in ops:
        if wanted is None or op.f in wanted:
            yield op
