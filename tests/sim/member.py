"""One simulated member: a machine that persists, and the process that runs on it now and then.

An incarnation is a complete raftkv member, as ``raftkv serve`` builds it (``kvstore.server.app``),
with the simulation's seams in place of the real ones: the real ``RaftNode`` (over the simulated
network and the machine's ``SimDisk``), the real ``Member`` with its applier, MVCC store (LMDB),
lessor and lease runner, and watch hub, and the real KV and Lease services the clients call. Its
process runs on the simulation's loop; ``crash`` kills it at once (nothing of it runs again), and
with a power failure takes from the machine whatever was not durable. A member whose log stops
(a failed fsync, a full disk: ``RaftNode.fatal``) exits, as the real process does with code 1,
and is restarted later by the simulation, like a supervisor would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kvstore.config import ServerConfig
from kvstore.membership import ChangeContext
from kvstore.server.kv_service import KVService
from kvstore.server.lease_service import LeaseService
from kvstore.server.member import Member
from kvstore.server.watch_service import WatchService
from raft.node import RaftNode
from raft.peer_transport import TransportHandlers
from tests.sim.disk import Machine
from tests.sim.loop import Process
from tests.sim.network import SimNetwork, SimTransport
from tests.sim.runtime import sim_runtime

if TYPE_CHECKING:
    from tests.sim.run import Simulation


@dataclass
class MemberOptions:
    heartbeat_ms: int = 100
    election_ms: int = 1000
    snapshot_count: int = 60
    catch_up_entries: int = 20
    slow_io: float = 0.01  # chance an executor call (a WAL fsync, a backend sync) stalls
    watch_batch_revs: int = 8  # etcd reads 1000 revisions a catch-up step; short runs need a few steps
    progress_interval: float = 600.0


def cluster_config(names: list[str], name: str, data_dir: Path, opts: MemberOptions) -> ServerConfig:
    peers = {n: [f"http://10.0.0.{i + 1}:2380"] for i, n in enumerate(names)}
    i = names.index(name)
    return ServerConfig(
        name=name,
        data_dir=data_dir,
        listen_client_urls=[f"http://10.0.0.{i + 1}:2379"],
        advertise_client_urls=[f"http://10.0.0.{i + 1}:2379"],
        listen_peer_urls=peers[name],
        initial_advertise_peer_urls=peers[name],
        initial_cluster=peers,
        initial_cluster_token="sim",
        heartbeat_interval_ms=opts.heartbeat_ms,
        election_timeout_ms=opts.election_ms,
        snapshot_count=opts.snapshot_count,
        auto_compaction_retention="0",
    )


class SimMember:
    def __init__(self, sim: Simulation, name: str, names: list[str], root: Path, opts: MemberOptions) -> None:
        self.sim = sim
        self.name = name
        self.opts = opts
        self.cfg = cluster_config(names, name, root / name, opts)
        self.id = self.cfg.member_id
        self.index = names.index(name)
        self.machine = Machine(self.id, root, sim.rng_for(f"disk/{name}"))
        self.incarnation = 0
        self.process: Process | None = None
        self.node: RaftNode | None = None
        self.member: Member | None = None
        self.kv: KVService | None = None
        self.lease: LeaseService | None = None
        self.watch: WatchService | None = None
        self.up = False  # started and not crashed
        self.down_since = 0.0
        self.on_exit: Callable[[SimMember, BaseException], None] | None = None

    def __repr__(self) -> str:
        return f"{self.name}#{self.incarnation}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.alive

    async def start(self, net: SimNetwork) -> bool:
        """Starts a new incarnation over the machine: True once it is up, False when it was killed while
        starting; raises what start-up raises (StartupError, an OSError of its disk)."""
        sim = self.sim
        loop = sim.loop
        self.incarnation += 1
        proc = self.process = Process(f"{self.name}#{self.incarnation}")
        runtime = sim_runtime(loop, sim.seed, self.machine, self.incarnation, self.opts.slow_io)
        cfg = self.cfg
        members = cfg.members

        def transport(h: TransportHandlers) -> SimTransport:
            return SimTransport(net, h, proc)

        node = RaftNode(
            member_id=self.id,
            cluster_id=cfg.cluster_id,
            wal_dir=self.machine.wal_dir,
            snap_dir=self.machine.snap_dir,
            peer_listen=[],
            peers={mid: urls[0].removeprefix("http://") for mid, (_, urls) in members.items()},
            bootstrap=True,
            heartbeat_ms=cfg.heartbeat_interval_ms,
            election_ms=cfg.election_timeout_ms,
            snapshot_count=cfg.snapshot_count,
            request_timeout=cfg.request_timeout_s,
            bootstrap_contexts={mid: ChangeContext(0, n, tuple(urls)).encode() for mid, (n, urls) in members.items()},
            transport=transport,
            runtime=runtime,
            catch_up_entries=self.opts.catch_up_entries,
        )
        node.ready_observer = sim.invariants.on_ready

        def build() -> Member:
            backend = self.machine.open_backend()
            return Member(cfg, node, backend, runtime=runtime)

        member = proc.call(build)
        observe, sink = sim.oracle.observe, member.applier.on_changes
        assert sink is not None
        who = f"{self.name}#{self.incarnation}"

        def on_changes(changes: list[Any]) -> None:
            observe(who, changes)
            sink(changes)

        member.applier.on_changes = on_changes
        lessor = member.lessor
        promote = lessor.promote

        def promoted(extend: float) -> None:
            sim.lease_promoted()  # every lease gets its TTL again: the lease checker counts it as a renewal
            promote(extend)

        lessor.promote = promoted  # type: ignore[method-assign]
        hub = member.watch_hub
        hub.batch_revs = self.opts.watch_batch_revs
        hub.progress_interval = self.opts.progress_interval
        self.node, self.member = node, member
        self.kv = KVService(member)
        self.lease = LeaseService(member)
        self.watch = WatchService(member)
        sim.invariants.member_starting(self)
        starting = proc.spawn(loop, member.start(), name=f"{self.name}-start")
        await asyncio.wait({starting})  # (a task of a process killed while starting never finishes)
        if not proc.alive:
            return False  # killed while it started (at a failpoint of its recovery): crash() has run
        starting.result()
        self.up = True
        fatal = node.fatal
        assert fatal is not None
        fatal.add_done_callback(lambda f, inc=self.incarnation: self._fatal(inc, f))
        return True

    def _fatal(self, incarnation: int, fut: asyncio.Future[Any]) -> None:
        if incarnation != self.incarnation or not self.alive or fut.cancelled():
            return
        exc = fut.result()
        if self.on_exit is not None:
            self.on_exit(self, exc)

    def crash(self, power_failure: bool) -> None:
        """The process dies now (SIGKILL); with power_failure the machine also loses what was not durable."""
        if self.process is not None:
            self.process.kill()
        transport = self.node.transport if self.node is not None else None
        net_endpoints = self.sim.net.endpoints
        if transport is not None and net_endpoints.get(self.id) is transport:
            del net_endpoints[self.id]
        self.machine.crash(power_failure)
        self.up = False
        self.down_since = self.sim.loop.time()
        self.node = self.member = None
        self.kv = self.lease = None
        self.watch = None
