"""Constructed schedules: anomalies made to happen on purpose, step by step, instead of hoped for.

A random chaos run (``chaos.runner`` with a nemesis) finds what it happens to hit. A scenario is
the opposite: a fixed script of client operations and faults, each step waiting for the cluster
state it needs (a leader elected among the others, a lease expired), so that against a build with
the flaw the anomaly happens on every run, however loaded the machine, and against the safe build
the same script must come out valid. They are how we show that each checker can fail.

- ``stale-read`` (register; the flaw: ``RAFTKV_UNSAFE=stale-reads``): write through the leader,
  cut the leader off from the others, wait until they elect a new leader among themselves and
  commit a second write, then read through the isolated old leader. Serving that read from local
  state returns the first value after the second was acknowledged: not linearizable. The safe
  build refuses the read (the old leader cannot confirm it still leads).
- ``lost-ack`` (register; the flaw: ``RAFTKV_UNSAFE=ack-before-fsync``): write through the
  leader, then kill every member at once (followers first), well inside the time a follower
  holds an acknowledged entry before writing it to its WAL. Restart the followers; they elect a
  leader among themselves; read the key through one of them. With the flaw both lost the write
  the leader acknowledged; the safe build cannot have acknowledged it before one of them had it
  on disk, and Raft's election rule makes that one the leader.
- ``lock-stall`` (lock; the flaw: using a lease-based lock without fencing): holder A takes the
  lock and reads the shared lists, then pauses with its keepalives stopped. Once its lease has
  expired (its lock key is gone), holder B takes the lock and appends to both lists. Then A wakes
  and writes back what it read: B's unfenced entry is lost, and A's fenced write is refused. The
  unfenced list shows the lost update; the fenced list must be exact.

``raftkv chaos scenario NAME [--unsafe MODE]`` runs one; the report is a chaos run's (history,
verdict, latency plot, and a timeline of the violation or the lost update).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc

from chaos.history import OK, Recorder
from chaos.nemesis import Fault, Nemesis
from chaos.targets import Target, status
from chaos.workloads.base import Channels, Client, Workload
from proto.etcdserverpb import rpc_pb2 as pb

T = TypeVar("T")

STEP_TIMEOUT_S = 60.0  # a step that waits longer than this for the cluster has found a real problem
PROCESS_STRIDE = 100  # client processes of a script: worker w is process w, then w + 100, ...


class ScenarioError(RuntimeError):
    """A step could not reach the state it waits for: the scenario proves nothing, the run is unknown."""


class Stage:
    """What a script works with: the target's members by name, clients bound to them, recorded faults."""

    def __init__(
        self,
        target: Target,
        nemesis: Nemesis,
        channels: Channels,
        recorder: Recorder,
        workload: Workload,
        op_timeout: float,
        say: Callable[[str], None],
    ) -> None:
        self.target = target
        self.nemesis = nemesis
        self.channels = channels
        self.recorder = recorder
        self.workload = workload
        self.op_timeout = op_timeout
        self.say = say
        self.notes: dict[str, Any] = {"steps": []}
        self._t0 = time.monotonic()

    # ---- plumbing ----

    def step(self, text: str) -> None:
        self.notes["steps"].append({"t": round(time.monotonic() - self._t0, 2), "step": text})
        self.say(text)

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args))

    def client(self, worker: int, name: str) -> Client:
        member = self.target.names.index(name)
        return Client(worker, PROCESS_STRIDE, self.channels, self.recorder, self.op_timeout, member=member)

    async def until(self, what: str, check: Callable[[], Awaitable[bool]], timeout: float = STEP_TIMEOUT_S) -> None:
        """Polls check until it holds; ScenarioError naming what was awaited after timeout."""
        deadline = time.monotonic() + timeout
        while not await check():
            if time.monotonic() > deadline:
                raise ScenarioError(f"gave up after {timeout:.0f}s waiting until {what}")
            await asyncio.sleep(0.1)

    # ---- cluster state ----

    async def leader_among(self, names: list[str], other_than: str | None = None) -> str:
        """Waits until every member in names answers and names the same leader, one of them."""
        found: list[str] = []

        async def agreed() -> bool:
            sts = [await self.blocking(status, self.target.endpoint(n), 0.5) for n in names]
            leaders = {s.leader if s is not None else 0 for s in sts}
            if len(leaders) != 1 or 0 in leaders:
                return False
            name = await self.blocking(self.target.member_name, leaders.pop())
            if name not in names or name == other_than:
                return False
            found[:] = [name]
            return True

        await self.until(f"{', '.join(names)} agree on a leader among themselves", agreed)
        return found[0]

    # ---- faults, recorded in the history ----

    async def isolate(self, name: str) -> Fault:
        part = self.target.partitioner()
        others = [n for n in self.target.names if n != name]
        host = self.target.host
        await self.blocking(part.partition, [[host(name)], [host(n) for n in others]])

        def heal() -> str:
            part.heal()
            return "healed"

        return self.nemesis.record("partition", "leader", f"partition: {name} | {','.join(others)}", heal)

    async def kill(self, names: list[str]) -> Fault:
        """SIGKILLs names in order; healing restarts whichever are still down."""
        for name in names:
            await self.blocking(self.target.kill, name)

        def heal() -> str:
            down = [n for n in names if not self.target.running(n)]
            for n in down:
                self.target.restart(n, wait=False)
            return "restarted " + ",".join(down) if down else "all running"

        return self.nemesis.record("kill", "all", f"kill: {','.join(names)}", heal)

    async def restart(self, names: list[str]) -> None:
        for name in names:
            await self.blocking(functools.partial(self.target.restart, name, wait=False))

    async def heal(self, fault: Fault) -> None:
        await self.blocking(self.nemesis.heal, fault)

    # ---- operations that must succeed for the schedule to go on ----

    async def until_ok(self, what: str, op: Callable[[], Awaitable[str]]) -> None:
        """Repeats a recorded operation until it is ok (failures and unknowns stay in the history)."""
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while await op() != OK:
            if time.monotonic() > deadline:
                raise ScenarioError(f"gave up after {STEP_TIMEOUT_S:.0f}s: {what} never succeeded")


def _last(recorder: Recorder, process: int, f: str) -> dict[str, Any]:
    """The latest completion of f by process: its outcome, value and error."""
    for ev in reversed(recorder.events):
        if ev.process == process and ev.f == f and ev.type != "invoke":
            return {"outcome": ev.type, "value": ev.value, "error": ev.error}
    return {"outcome": None}


# ---- stale-read ----


async def stale_read(stage: Stage) -> dict[str, Any]:
    wl: Any = stage.workload
    key = wl.keys[0]
    names = stage.target.names
    old = await stage.leader_among(names)
    others = [n for n in names if n != old]
    stage.step(f"{old} leads; write through it")
    at_old, at_new = stage.client(0, old), stage.client(1, others[0])
    await stage.until_ok("the first write", functools.partial(wl.write, at_old, key))
    first = wl.last_seen[key]
    fault = await stage.isolate(old)
    stage.step(f"{old} cut off from {', '.join(others)}")
    new = await stage.leader_among(others, other_than=old)
    stage.step(f"{new} elected by {', '.join(others)}; write through {others[0]}")
    await stage.until_ok("the second write", functools.partial(wl.write, at_new, key))
    second = wl.last_seen[key]
    stage.step(f"read through the old leader {old}")
    await wl.read(at_old, key)
    read = _last(stage.recorder, at_old.process, "read")
    await stage.heal(fault)
    stage.step("partition healed")
    return {
        "old_leader": old,
        "new_leader": new,
        "first_write": first,
        "second_write": second,
        "read_through_old_leader": read,
        "stale": read["outcome"] == OK and (read["value"] or {}).get("value") == first,
    }


# ---- lost-ack ----

LOST_ACK_PERSIST_DELAY_MS = 1000  # how long a flawed follower holds an acknowledged entry unwritten
# longer than that delay, so a leader whose followers are busy "persisting" never loses its quorum
LOST_ACK_ELECTION_MS = 2500


async def lost_ack(stage: Stage) -> dict[str, Any]:
    wl: Any = stage.workload
    key = wl.keys[0]
    names = stage.target.names
    leader = await stage.leader_among(names)
    followers = [n for n in names if n != leader]
    stage.step(f"{leader} leads; write through it")
    writer = stage.client(0, leader)
    await stage.until_ok("the write", functools.partial(wl.write, writer, key))
    written = wl.last_seen[key]
    fault = await stage.kill([*followers, leader])
    stage.step(f"acknowledged; killed {', '.join(followers)}, then {leader}")
    await stage.restart(followers)
    new = await stage.leader_among(followers)
    stage.step(f"{', '.join(followers)} restarted and elected {new}; read through {followers[0]}")
    reader = stage.client(1, followers[0])
    await stage.until_ok("the read", functools.partial(wl.read, reader, key))
    read = _last(stage.recorder, reader.process, "read")
    await stage.heal(fault)
    stage.step(f"{leader} restarted")
    return {
        "leader": leader,
        "new_leader": new,
        "acknowledged_write": written,
        "read_after_restart": read,
        "lost": (read["value"] or {}).get("value") != written,
    }


# ---- lock-stall ----


async def lock_stall(stage: Stage) -> dict[str, Any]:
    wl: Any = stage.workload
    names = stage.target.names
    a, b = stage.client(0, names[0]), stage.client(1, names[1])
    a_paused, b_done = asyncio.Event(), asyncio.Event()

    async def a_pause() -> None:
        a_paused.set()
        await b_done.wait()

    wl.stall_until[a.worker] = a_pause
    stage.step("holder A takes the lock and reads the lists")
    holder_a = asyncio.create_task(wl.operate(a), name="holder-a")
    waiting = asyncio.create_task(a_paused.wait())
    await asyncio.wait([holder_a, waiting], timeout=STEP_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    if not a_paused.is_set():
        holder_a.cancel()
        raise ScenarioError("holder A never got to its critical section")
    session = wl.sessions[a.worker]
    my_key = wl.lock_prefix + f"{session.lease:x}".encode()
    stall = stage.nemesis.record("stall", "holder", "holder A paused, keepalives stopped", lambda: "resumed")
    stage.step(f"A pauses with its keepalives stopped; waiting for its lease {session.lease:x} to expire")

    async def a_key_gone() -> bool:
        try:
            got = await stage.channels.kv[0].Range(pb.RangeRequest(key=my_key, serializable=False), timeout=2)
        except grpc.aio.AioRpcError:
            return False
        return not got.kvs

    await stage.until("A's lease expires and its lock key is deleted", a_key_gone, timeout=STEP_TIMEOUT_S)
    stage.step("A's lease expired; holder B takes the lock and appends to both lists")
    try:
        await asyncio.wait_for(wl.operate(b), STEP_TIMEOUT_S)
    finally:
        b_done.set()
        await stage.heal(stall)
    stage.step("B released; A wakes and writes back what it read")
    await asyncio.wait_for(holder_a, STEP_TIMEOUT_S)
    return {"a_lease": f"{session.lease:x}", "b_lease": f"{wl.sessions[b.worker].lease:x}"}


@dataclass(frozen=True)
class Scenario:
    name: str
    workload: str
    flaw: str  # what the scenario shows being caught
    unsafe_mode: str | None  # the RAFTKV_UNSAFE mode it is meant for, if the flaw is the server's
    play: Callable[[Stage], Awaitable[dict[str, Any]]]
    member_args: tuple[str, ...] = ()
    member_env: Mapping[str, str] = field(default_factory=dict)
    # a safe cluster agrees again within seconds of the last step; a flawed one may never (lost-ack
    # leaves the restarted old leader with a committed entry the others overwrote)
    converge_timeout: float = 20.0


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("stale-read", "register", "a stale read from an isolated old leader", "stale-reads", stale_read),
        Scenario(
            "lost-ack",
            "register",
            "a write acknowledged by followers before it was on their disks, lost in a crash",
            "ack-before-fsync",
            lost_ack,
            member_args=(f"--election-timeout={LOST_ACK_ELECTION_MS}",),
            member_env={"RAFTKV_UNSAFE_PERSIST_DELAY_MS": str(LOST_ACK_PERSIST_DELAY_MS)},
        ),
        Scenario("lock-stall", "lock", "a lost update through a lock used without fencing", None, lock_stall),
    )
}


def get(name: str) -> Scenario:
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r} (known: {', '.join(SCENARIOS)})")
    return SCENARIOS[name]
