"""One simulated run: a seed in, a verdict out.

``Simulation(seed).run()`` builds N complete members on one ``SimLoop``, lets them elect a leader,
runs the clients while the nemesis injects faults for ``chaos_time`` virtual seconds, heals
everything, waits for the members to converge, runs the final reads, and checks:

- after every step of every member, Raft's invariants (``tests.sim.invariants``);
- that every crashed member starts again (its disk is never worse than the WAL's contract);
- that no member's code raised where it should not (an exception nobody expected);
- after every applied batch, that every member makes the same changes at every revision
  (``tests.sim.oracle``);
- the history: linearizability of the register keys (``chaos.checker.linearizable``), etcd's
  watch guarantees and the keys' canonical history (``chaos.checker.watch``), lease safety
  (``chaos.checker.lease``), serializable reads against the store's history (``tests.sim.oracle``);
- that every member ends with the same store (keys, values, revisions, versions, leases).

A failure raises ``SimulationFailed``: its message names the seed, the violation, the one-line
command that replays it, and a minimal trace (the operations that show it, with the faults and
membership events of that time). One seed always replays the same run (``trace_digest``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import os
import random
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos.checker import lease as lease_checker
from chaos.checker import linearizable
from chaos.checker import watch as watch_checker
from chaos.checker.models import RegisterModel
from chaos.history import Operation, pair
from kvstore.errors import StartupError
from raft import failpoints
from raft.core import StateRole
from tests.sim.bugs import injected
from tests.sim.faults import FaultOptions, Faults
from tests.sim.invariants import MemberInvariants
from tests.sim.loop import SimLoop, current_process
from tests.sim.member import MemberOptions, SimMember
from tests.sim.network import NetOptions, SimNetwork
from tests.sim.oracle import KVOracle
from tests.sim.workload import Workload, WorkloadOptions

LEASE_GRACE = 4.0  # seconds past TTL + election timeouts by which an abandoned lease must be gone
CHECK_BUDGET_S = 20.0  # wall-clock seconds the linearizability search may take


class SimulationFailed(AssertionError):
    def __init__(self, seed: int, what: str, replay: str, trace: str, digest: str = "") -> None:
        self.seed = seed
        self.what = what
        self.replay = replay
        self.trace = trace
        self.digest = digest
        super().__init__(f"seed {seed}: {what}\nreplay: {replay}\ntrace hash: {digest}\n{trace}")


class _Stop(BaseException):
    """Unwinds the member code that found a violation (the run stops at once)."""


class _Killed(BaseException):
    """Unwinds the member code of a process killed at a failpoint."""


@dataclass
class SimOptions:
    members: int = 3
    chaos_time: float = 10.0
    settle_time: float = 30.0
    bug: str = ""
    verbose: bool = False
    member: MemberOptions = field(default_factory=MemberOptions)
    workload: WorkloadOptions = field(default_factory=WorkloadOptions)
    net: NetOptions = field(default_factory=NetOptions)
    faults: FaultOptions = field(default_factory=FaultOptions)

    def replay_command(self, seed: int) -> str:
        cmd = f"python -m tests.sim --seed {seed}"
        if self.members != 3:
            cmd += f" --members {self.members}"
        if self.chaos_time != SimOptions.chaos_time:
            cmd += f" --time {self.chaos_time:g}"
        if self.bug:
            cmd += f" --bug {self.bug}"
        return cmd + " -v"


def _root() -> Path:
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="raftkv-sim-", dir=base))


class Simulation:
    def __init__(self, seed: int, opts: SimOptions | None = None) -> None:
        self.seed = seed
        self.opts = opts = opts or SimOptions()
        self.loop = SimLoop()
        self.root = _root()
        self.net = SimNetwork(self.loop, self.rng_for("net"), opts.net)
        self.invariants = MemberInvariants(self.fail)
        self.oracle = KVOracle(self.fail)
        names = [f"m{i + 1}" for i in range(opts.members)]
        self.members = [SimMember(self, n, names, self.root, opts.member) for n in names]
        for m in self.members:
            m.on_exit = self._exited
        self.workload = Workload(self, opts.workload)
        self.faults = Faults(self, opts.faults)
        self.trace: list[tuple[float, str]] = []
        self._digest = hashlib.blake2b(digest_size=16)
        self.violation: str | None = None
        self.failure_ops: list[int] = []
        self.healed = False
        self.stats: dict[str, Any] = {}
        self._restarts: dict[str, int] = {}
        self.promotions: list[int] = []  # when a lessor was promoted (a new leader), on the history's clock

    def rng_for(self, name: str) -> random.Random:
        return random.Random(f"{self.seed}/{name}")

    # ---- trace and failures ----

    def event(self, what: str) -> None:
        now = self.loop.time()
        self.trace.append((now, what))
        self._digest.update(f"{now:.9f} {what}\n".encode())
        if self.opts.verbose:
            print(f"[{now:9.4f}] {what}", flush=True)

    def fail(self, what: str) -> None:
        if self.violation is None:
            self.violation = what
            self.event(f"VIOLATION: {what}")
        self.loop.stop()
        raise _Stop(what)

    @property
    def trace_digest(self) -> str:
        return self._digest.hexdigest()

    # ---- members ----

    def member_of(self, proc: object) -> SimMember | None:
        for m in self.members:
            if m.process is proc:
                return m
        return None

    async def start(self, m: SimMember) -> None:
        try:
            up = await m.start(self.net)
        except StartupError as exc:
            self.fail(f"{m} cannot start again after a crash: {exc}")
        except OSError as exc:  # its disk failed while it started: it exits (code 1) and is restarted
            self.event(f"{m} exits while starting ({type(exc).__name__}: {exc})")
            m.crash(False)
            self.restart_later(m, 0.05 if self.healed else self.faults.rng.uniform(0.1, 1.0))
            return
        if up:
            self.event(f"{m} started (applied {m.member.applied_index if m.member else '?'})")

    def crash(self, m: SimMember, power_failure: bool, why: str) -> None:
        self.event(f"{m} killed ({why}){' with a power failure' if power_failure else ''}")
        m.crash(power_failure)

    def restart_later(self, m: SimMember, delay: float) -> None:
        self._restarts[m.name] = self._restarts.get(m.name, 0) + 1
        token = self._restarts[m.name]

        async def restart() -> None:
            await asyncio.sleep(delay)
            if self._restarts.get(m.name) == token and not m.up and not m.alive:
                await self.start(m)

        self.loop.create_task(restart())

    def _exited(self, m: SimMember, exc: BaseException) -> None:
        self.event(f"{m} exits: its log stopped ({type(exc).__name__}: {exc})")
        m.crash(False)
        self.restart_later(m, 0.05 if self.healed else self.faults.rng.uniform(0.1, 1.0))

    def _failpoint(self, name: str) -> None:
        proc = current_process()
        if proc is None:
            return
        m = self.member_of(proc)
        if m is None:
            return
        armed = self.faults.armed.get(m.name)
        if armed is None or armed[0] != name:
            return
        del self.faults.armed[m.name]
        self.crash(m, armed[1], f"at failpoint {name}")
        self.restart_later(m, self.faults.rng.uniform(0.1, 1.5))
        raise _Killed(name)

    def lease_promoted(self) -> None:
        self.promotions.append(round(self.loop.time() * 1e9))

    def leader(self) -> SimMember | None:
        leaders = [m for m in self.members if m.up and m.node is not None and m.node.rn.role == StateRole.LEADER]
        return leaders[0] if len(leaders) == 1 else None

    def converged(self) -> SimMember | None:
        """The leader, once every member is up and has applied everything the leader committed."""
        leader = self.leader()
        if leader is None or leader.node is None:
            return None
        commit = leader.node.commit_index
        for m in self.members:
            if not m.up or m.member is None or m.node is None or m.member.applied_index < commit:
                return None
            if m.node.leader != leader.id:
                return None
        return leader

    async def wait_converged(self, why: str) -> SimMember:
        deadline = self.loop.time() + self.opts.settle_time
        while self.loop.time() < deadline:
            leader = self.converged()
            if leader is not None:
                return leader
            await asyncio.sleep(0.05)
        state = ", ".join(
            f"{m}: {'up' if m.up else 'down'}"
            + (
                f" {m.node.rn.role.name} term {m.node.term} applied {m.member.applied_index}"
                if m.member and m.node
                else ""
            )
            for m in self.members
        )
        self.fail(f"liveness: no convergence {self.opts.settle_time:g} s after {why} ({state})")
        raise AssertionError("unreachable")

    # ---- the run ----

    async def _main(self) -> None:
        opts = self.opts
        for m in self.members:
            await self.start(m)
        await self.wait_converged("bootstrap")
        self.event("cluster up")
        stop = asyncio.Event()
        tasks = [self.loop.create_task(job) for job in self.workload.tasks(stop)]
        await self.faults.run(opts.chaos_time)
        stop.set()
        self.healed = True
        self.faults.heal_all()
        for m in self.members:
            if not m.up and not m.alive:
                self.restart_later(m, 0.0)
        await asyncio.gather(*tasks)
        leader = await self.wait_converged("healing")
        self.event(f"converged, leader {leader}")
        await self.workload.final(leader)
        mopts = opts.member
        renewed = max([self.workload.last_keepalive] + [p / 1e9 for p in self.promotions])
        wait_until = renewed + self.workload.max_ttl + 2 * mopts.election_ms / 1000 + LEASE_GRACE
        if self.loop.time() < wait_until:
            await asyncio.sleep(wait_until - self.loop.time())
        leader = await self.wait_converged("the leases' expiry")
        await self.workload.lease_final(leader)
        leader = await self.wait_converged("the final reads")
        self._compare_stores()

    def _compare_stores(self) -> None:
        states: dict[str, tuple[Any, ...]] = {}
        for m in self.members:
            member = m.member
            assert member is not None
            with member.store.read() as view:
                res = view.range(b"\x00", b"")
                kvs = tuple(
                    (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease) for kv in res.kvs
                )
            leases = tuple(sorted((lease.id, lease.ttl) for lease in member.lessor))
            states[m.name] = (member.store.current_rev, kvs, leases)
        first = self.members[0].name
        for name, state in states.items():
            if state != states[first]:
                self.fail(f"members' final stores differ: {first} at revision {states[first][0]}, {name} at {state[0]}")

    def run(self) -> str:
        """Runs the seed; returns the trace digest; raises SimulationFailed."""
        asyncio.set_event_loop(self.loop)
        saved_logging = logging.root.manager.disable
        if not self.opts.verbose:
            logging.disable(logging.CRITICAL)  # the members' logs (a stopped node, a torn WAL tail) are expected
        saved_hit = failpoints.hit
        failpoints.hit = self._failpoint  # type: ignore[assignment]
        try:
            with injected(self.opts.bug):
                main = self.loop.create_task(self._main())
                with contextlib.suppress(RuntimeError, _Stop):
                    self.loop.run_until_complete(main)
                if self.violation is None and main.done() and not main.cancelled() and main.exception() is not None:
                    exc = main.exception()
                    self.violation = f"the simulation itself raised {type(exc).__name__}: {exc}"
                if self.violation is None:
                    self._check_errors()
                if self.violation is None:
                    self._check_history()
        finally:
            failpoints.hit = saved_hit  # type: ignore[assignment]
            logging.disable(saved_logging)
            self._close()
        if self.violation is not None:
            raise SimulationFailed(
                self.seed, self.violation, self.opts.replay_command(self.seed), self._minimal_trace(), self.trace_digest
            )
        return self.trace_digest

    def _close(self) -> None:
        loop = self.loop
        for m in self.members:
            if m.process is not None:
                m.process.kill()
        with warnings.catch_warnings():
            # the coroutines of killed processes' callbacks that never ran, dropped with the run
            warnings.filterwarnings("ignore", "coroutine .* was never awaited", RuntimeWarning)
            loop.abandon()
            gc.collect()
        for m in self.members:
            m.machine.destroy()
        loop.close()
        asyncio.set_event_loop(None)
        shutil.rmtree(self.root, ignore_errors=True)

    def _check_errors(self) -> None:
        errors = [c for c in self.loop.errors if not isinstance(c.get("exception"), (_Stop, _Killed))]
        if errors:
            c = errors[0]
            self.violation = f"unexpected exception in a member: {c.get('exception')!r} ({c.get('message')})"
        elif self.workload.errors:
            self.violation = self.workload.errors[0]

    # ---- the history ----

    def _check_history(self) -> None:
        ops = pair(self.workload.rec.events)
        self.ops = ops
        self._digest.update(repr([(o.f, o.type, o.call, o.ret, o.value) for o in ops]).encode())
        reg = linearizable.check(RegisterModel(), ops, budget_s=CHECK_BUDGET_S)
        self.stats["register"] = reg.summary()["keys"]
        if reg.verdict == linearizable.INVALID:
            bad = reg.invalid_keys[0]
            self.failure_ops = bad.window
            self.violation = f"not linearizable: register key {bad.key!r} (operations {bad.window})"
            return
        w = watch_checker.check(ops)
        self.stats["watch"] = {k: w[k] for k in ("sessions", "events_received", "revisions")}
        if w["verdict"] != watch_checker.VALID:
            self.failure_ops = w["windows"][0] if w["windows"] else []
            self.violation = f"watch: {w['explanation']}"
            return
        ls = lease_checker.check(
            ops, grace=LEASE_GRACE + 2 * self.opts.member.election_ms / 1000, promotions=self.promotions
        )
        self.stats["lease"] = ls["counts"]
        if ls["verdict"] != lease_checker.VALID:
            self.failure_ops = ls["violations"][0]["ops"]
            self.violation = f"lease safety: {ls['explanation']}"
            return
        bad = self.oracle.check_sreads(ops)
        if bad is not None:
            self.failure_ops = [bad[0]]
            self.violation = f"serializable read: {bad[1]}"

    def _minimal_trace(self) -> str:
        ops: list[Operation] = getattr(self, "ops", [])
        lines: list[tuple[float, str]] = []
        if self.failure_ops and ops:
            shown = [ops[i] for i in sorted(set(self.failure_ops)) if 0 <= i < len(ops)]
            start = min(o.call for o in shown) / 1e9 - 1.0
            end = max((o.ret or o.call) for o in shown) / 1e9
            for i in sorted(set(self.failure_ops)):
                if 0 <= i < len(ops):
                    lines.append((ops[i].call / 1e9, _describe(i, ops[i])))
            lines += [(t, f"  * {what}") for t, what in self.trace if start <= t <= end]
        else:
            lines = [(t, f"  * {what}") for t, what in self.trace[-25:]]
        lines.sort(key=lambda x: x[0])
        return "minimal trace:\n" + "\n".join(f"  {t:9.4f}s {text}" for t, text in lines)


def _describe(i: int, op: Operation) -> str:
    ret = f"{op.ret / 1e9:.4f}s" if op.ret is not None else "never"
    out = op.value if op.type != "info" else None
    err = f" ({op.error})" if op.error else ""
    return (
        f"op {i}: process {op.process} on {op.node}: {op.f} {op.invoke_value} -> {op.type} {out}{err}, returned {ret}"
    )


def run_seed(seed: int, opts: SimOptions | None = None) -> Simulation:
    sim = Simulation(seed, opts)
    sim.run()
    return sim
