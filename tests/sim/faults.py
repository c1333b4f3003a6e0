"""The simulated nemesis: faults drawn from the seed, each healed after a while.

Every ``gap`` seconds (drawn) one fault starts:

- ``partition``: one member isolated (often the leader), a majority cut from a minority, a bridge
  (two members cut, a third talking to both), or an asymmetric link (messages one way only);
- ``crash``: one member killed (often the leader), half the time with a power failure that takes
  what its disk had not synced; restarted after a while;
- ``crash-many``: a majority, or everyone, killed at once (power failures mostly), restarted one
  by one in a random order;
- ``failpoint``: a member killed at the next hit of one of its failpoints (before or after a WAL
  save, before sending, before or after applying, before installing a snapshot), with or
  without a power failure;
- ``disk``: a member's disk fails fsyncs, fails writes, writes short, or is full, for a while (the
  member's log stops, the member exits and is restarted, as a supervisor would);
- ``net``: messages dropped and duplicated at a high rate for a while;
- ``transfer``: the leader is asked to hand leadership to another member.

Healing puts everything back; ``heal_all`` ends every fault at once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from raft.core import StateRole
from tests.sim.disk import DiskFaults

if TYPE_CHECKING:
    from tests.sim.member import SimMember
    from tests.sim.run import Simulation

FAILPOINTS = (
    "beforeWALSave",
    "afterWALSave",
    "beforeSendMessages",
    "beforeApply",
    "afterApply",
    "beforeSnapshotInstall",
)


@dataclass
class FaultOptions:
    gap: tuple[float, float] = (0.2, 1.2)
    weights: dict[str, float] = field(
        default_factory=lambda: {
            "partition": 3.0,
            "crash": 3.0,
            "crash-many": 1.0,
            "failpoint": 1.5,
            "disk": 1.5,
            "net": 1.0,
            "transfer": 0.5,
        }
    )


class Faults:
    def __init__(self, sim: Simulation, opts: FaultOptions) -> None:
        self.sim = sim
        self.opts = opts
        self.rng = sim.rng_for("faults")
        self.partition_id = 0
        self.armed: dict[str, tuple[str, bool]] = {}  # member name -> (failpoint, power failure)
        self._disk_until: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def _count(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def leader(self) -> SimMember | None:
        for m in self.sim.members:
            if m.up and m.node is not None and m.node.rn.role == StateRole.LEADER:
                return m
        return None

    def _victim(self, leader_bias: float = 0.4) -> SimMember:
        r = self.rng
        leader = self.leader()
        if leader is not None and r.random() < leader_bias:
            return leader
        return r.choice(self.sim.members)

    async def run(self, duration: float) -> None:
        loop = self.sim.loop
        end = loop.time() + duration
        kinds = list(self.opts.weights)
        weights = [self.opts.weights[k] for k in kinds]
        while True:
            await asyncio.sleep(self.rng.uniform(*self.opts.gap))
            if loop.time() >= end:
                return
            kind = self.rng.choices(kinds, weights)[0]
            self._count(kind)
            getattr(self, "_" + kind.replace("-", "_"))()

    # ---- the faults ----

    def _partition(self) -> None:
        r = self.rng
        sim = self.sim
        ids = [m.id for m in sim.members]
        names = {m.id: m.name for m in sim.members}
        mode = r.choice(("isolate", "isolate", "majority", "bridge", "asymmetric"))
        cut: set[tuple[int, int]] = set()
        if mode == "isolate":
            lone = self._victim(0.6).id
            cut = {(a, b) for a in ids for b in ids if a != b and lone in (a, b)}
            desc = f"isolate {names[lone]}"
        elif mode == "majority":
            minority = set(r.sample(ids, (len(ids) - 1) // 2))
            cut = {(a, b) for a in ids for b in ids if (a in minority) != (b in minority)}
            desc = "cut " + ",".join(names[i] for i in sorted(minority, key=ids.index)) + " from the rest"
        elif mode == "bridge":
            a, b = r.sample(ids, 2)
            cut = {(a, b), (b, a)}
            desc = f"cut {names[a]} <-> {names[b]} (the others bridge)"
        else:
            a, b = r.sample(ids, 2)
            cut = {(a, b)}
            if r.random() < 0.5:
                cut |= {(a, c) for c in ids if c != a}
            desc = f"asymmetric: {names[a]} cannot send to " + ",".join(names[c] for c in ids if (a, c) in cut)
        self.partition_id += 1
        pid = self.partition_id
        sim.net.set_cut(cut)
        sim.event(f"partition: {desc}")

        def heal() -> None:
            if self.partition_id == pid:
                sim.net.heal()
                sim.event("partition healed")

        sim.loop.call_later(r.uniform(0.3, 2.5), heal)

    def _crash(self) -> None:
        m = self._victim()
        if not m.up:
            return
        power = self.rng.random() < 0.5
        self.sim.crash(m, power, "crash")
        self.sim.restart_later(m, self.rng.uniform(0.1, 2.5))

    def _crash_many(self) -> None:
        r = self.rng
        members = self.sim.members
        k = len(members) if r.random() < 0.4 else len(members) // 2 + 1
        victims = r.sample(members, k)
        for m in victims:
            if m.up:
                self.sim.crash(m, r.random() < 0.7, f"crash {k} at once")
        delay = r.uniform(0.05, 1.0)
        for m in r.sample(victims, len(victims)):
            self.sim.restart_later(m, delay)
            delay += r.uniform(0.0, 0.8)

    def _failpoint(self) -> None:
        m = self.rng.choice(self.sim.members)
        point = self.rng.choice(FAILPOINTS)
        power = self.rng.random() < 0.5
        self.armed[m.name] = (point, power)
        self.sim.event(f"failpoint armed: {m.name} dies at {point}" + (" with a power failure" if power else ""))

    def _disk(self) -> None:
        r = self.rng
        m = r.choice(self.sim.members)
        faults = m.machine.disk.faults
        mode = r.choice(("fsync", "write", "short", "full"))
        if mode == "fsync":
            faults.fsync_error = r.uniform(0.05, 0.5)
        elif mode == "write":
            faults.write_error = r.uniform(0.05, 0.3)
        elif mode == "short":
            faults.short_write = r.uniform(0.1, 0.6)
        else:
            faults.full = True
        sim = self.sim
        sim.event(f"disk of {m.name}: {mode} faults")
        until = sim.loop.time() + r.uniform(0.1, 1.5)
        self._disk_until[m.name] = until

        def heal() -> None:
            if self._disk_until.get(m.name) == until:
                m.machine.disk.faults = DiskFaults()
                sim.event(f"disk of {m.name} healed")

        sim.loop.call_at(until, heal)

    def _net(self) -> None:
        r = self.rng
        o = self.sim.net.opts
        o.drop, o.dup = r.uniform(0.05, 0.3), r.uniform(0.0, 0.15)
        sim = self.sim
        sim.event(f"network: drop {o.drop:.2f}, duplicate {o.dup:.2f}")
        until = sim.loop.time() + r.uniform(0.3, 2.0)
        self._net_until = until

        def heal() -> None:
            if self._net_until == until:
                o.drop = o.dup = 0.0
                sim.event("network loss healed")

        sim.loop.call_at(until, heal)

    def _transfer(self) -> None:
        leader = self.leader()
        if leader is None or leader.node is None:
            return
        target = self.rng.choice([m for m in self.sim.members if m is not leader])
        self.sim.event(f"transfer leadership {leader.name} -> {target.name}")
        node = leader.node

        async def transfer() -> None:
            try:
                await node.transfer_leader(target.id)
            except Exception as exc:
                self.sim.event(f"transfer to {target.name}: {type(exc).__name__}")

        assert leader.process is not None
        leader.process.spawn(self.sim.loop, transfer())

    # ---- healing ----

    def heal_all(self) -> None:
        sim = self.sim
        self.partition_id += 1
        sim.net.heal()
        o = sim.net.opts
        o.drop = o.dup = 0.0
        self._net_until = -1.0
        self._disk_until.clear()
        self.armed.clear()
        for m in sim.members:
            m.machine.disk.faults = DiskFaults()
        sim.event("heal everything")
