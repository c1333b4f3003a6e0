"""``RaftNode``: one member's Raft, as the server sees it (``raft.api.ReplicatedLog``).

It owns the lifecycle (``start`` recovers, starts the transport, the ticks and the Ready loop;
``stop`` undoes it), what the server reads (term, leader, commit index, membership, progress),
requests to peers, and the node's end: ``fatal`` is resolved with the exception that stopped it
(a failed persist, a bug in apply) or with ``RemovedError`` once the member was removed. The work
itself is cut along its lines: ``raft.node.recovery`` (start-up), ``raft.node.inputs`` (what steps
the core), ``raft.node.reads`` (ReadIndex batching), ``raft.node.ready`` (the Ready loop).

Every I/O goes through injected seams (``raft.runtime.Runtime`` for the clock, randomness,
executors and the WAL's disk; a ``raft.peer_transport.TransportFactory`` for the peers), so the
same node runs under ``raftkv serve`` and under the deterministic simulator (``tests/sim``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path

from raft.api import StateMachine
from raft.core import RawNode, Ready
from raft.errors import NoLeaderError, RemovedError, StoppedError
from raft.node.inputs import Inputs
from raft.node.reads import ReadBatcher
from raft.node.ready import CATCH_UP_ENTRIES, ReadyLoop
from raft.node.recovery import raft_config, recover
from raft.peer_transport import PeerTransport, TransportFactory, TransportHandlers, tcp_transport
from raft.runtime import REAL, Runtime
from raft.snapshot import SnapshotDir
from raft.stats import RaftStats
from raft.transport import PeerRequestError, PeerSecurity

log = logging.getLogger("raftkv.raft")

REMOVED_STOP_DELAY = 1.0  # a member that applied its own removal stops this long after (etcd: 10 ticks)


class RaftNode:
    def __init__(
        self,
        *,
        member_id: int,
        cluster_id: int,
        wal_dir: Path,
        snap_dir: Path,
        peer_listen: list[str],
        peers: dict[int, str],
        bootstrap: bool,
        heartbeat_ms: int = 100,
        election_ms: int = 1000,
        snapshot_count: int = 100_000,
        request_timeout: float = 7.0,
        bootstrap_contexts: dict[int, bytes] | None = None,
        removed: Iterable[int] = (),
        peer_security: PeerSecurity | None = None,
        transport: TransportFactory | None = None,
        runtime: Runtime = REAL,
        catch_up_entries: int = CATCH_UP_ENTRIES,
    ) -> None:
        self.member_id = member_id
        self.cluster_id = cluster_id
        self.wal_dir = wal_dir
        self.snapshots = SnapshotDir(snap_dir)
        self.peer_listen = peer_listen
        self.peers = dict(peers)  # member id -> peer "host:port", this member included
        self.bootstrap = bootstrap
        self.bootstrap_contexts = dict(bootstrap_contexts or {})
        self.removed_ids: set[int] = set(removed)  # members removed from the cluster: never peers again
        # answers other members' requests (``request``); set by the application before start
        self.on_request: Callable[[int, bytes], Awaitable[bytes]] | None = None
        # called with every Ready before it is handled (the simulator checks Raft's invariants there)
        self.ready_observer: Callable[[RaftNode, Ready], None] | None = None
        self.heartbeat_s = heartbeat_ms / 1000
        self.election_ticks = max(2, election_ms // heartbeat_ms)
        self.election_s = election_ms / 1000
        self.snapshot_count = snapshot_count
        self.catch_up_entries = catch_up_entries
        self.request_timeout = request_timeout
        self.runtime = runtime
        self.clock = runtime.clock
        self._transport_factory = transport if transport is not None else tcp_transport(peer_security)
        self.wal_executor = runtime.executor("wal", 1)
        self.aux_executor = runtime.executor("raft-aux", 2)
        self.stats = RaftStats()
        self.wake_event = asyncio.Event()
        self.stopped = False
        self.fatal: asyncio.Future[BaseException] | None = None
        self.inputs = Inputs(self)
        self.reads = ReadBatcher(self.clock, self._ask_read_index, lambda: self.leader != 0, self.wake)
        # set by start
        self._rn: RawNode | None = None
        self._ready: ReadyLoop | None = None
        self._sm: StateMachine | None = None
        self.transport: PeerTransport | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._removed_stop: asyncio.TimerHandle | None = None

    # ---- the parts start made (only used once started) ----

    @property
    def rn(self) -> RawNode:
        assert self._rn is not None, "the node is not started"
        return self._rn

    @property
    def ready(self) -> ReadyLoop:
        assert self._ready is not None, "the node is not started"
        return self._ready

    @property
    def sm(self) -> StateMachine:
        assert self._sm is not None, "the node is not started"
        return self._sm

    def wake(self) -> None:
        self.wake_event.set()

    def _ask_read_index(self, ctx: bytes) -> None:
        self.rn.read_index(ctx)

    # ---- what the server reads ----

    @property
    def term(self) -> int:
        return self._rn.term if self._rn is not None else 0

    @property
    def leader(self) -> int:
        return self._rn.lead if self._rn is not None else 0

    @property
    def commit_index(self) -> int:
        return self._rn.raft.raft_log.committed if self._rn is not None else 0

    @property
    def is_learner(self) -> bool:
        return self._ready is not None and self.member_id in self._ready.conf_state.learners

    def voters(self) -> tuple[int, ...]:
        return self._ready.conf_state.voters if self._ready is not None else ()

    def progress(self) -> dict[int, int] | None:
        """On the leader, each member's matched log index (itself included); None elsewhere."""
        st = self._rn.status() if self._rn is not None else None
        if st is None or st.progress is None:
            return None
        return {pid: pr.match for pid, pr in st.progress.items()}

    def connected_for(self, peer: int) -> float | None:
        """Seconds the connection to peer has been up without a break; None while it is down."""
        if self.transport is None:
            return None
        since = self.transport.active_since(peer)
        return None if since is None else asyncio.get_running_loop().time() - since

    # ---- lifecycle ----

    async def start(self, sm: StateMachine) -> None:
        loop = asyncio.get_running_loop()
        self._sm = sm
        self.fatal = loop.create_future()
        rec = recover(
            wal_dir=self.wal_dir,
            disk=self.runtime.disk,
            snapshots=self.snapshots,
            sm=sm,
            member_id=self.member_id,
            cluster_id=self.cluster_id,
        )
        cfg = raft_config(self.member_id, self.election_ticks, rec.applied, sm, self.runtime.random("raft"))
        rn = self._rn = RawNode(cfg, rec.storage)
        if rec.fresh and self.bootstrap:
            rn.bootstrap(sorted(self.peers), self.bootstrap_contexts)
        self._ready = ReadyLoop(self, rec.wal, rec.storage, rec.snap_index, rn.status().conf_state)
        rec.wal.fsync_seconds = self.stats.wal_fsync
        inputs = self.inputs
        transport = self._transport_factory(
            TransportHandlers(
                member_id=self.member_id,
                cluster_id=self.cluster_id,
                deliver=inputs.deliver,
                on_unreachable=inputs.unreachable,
                on_snapshot_status=inputs.snapshot_status,
                snapshot_source=inputs.snapshot_source,
                snapshot_dir=self.snapshots,
                deliver_snapshot=inputs.deliver_snapshot,
                stats=self.stats,
                on_request=self._on_peer_request,
                on_removed=self._on_removed,
            )
        )
        self.snapshots.prepare()
        await transport.start(self.peer_listen)
        transport.set_peers({i: a for i, a in self.peers.items() if i != self.member_id}, self.removed_ids)
        self.transport = transport
        self._tasks = [loop.create_task(self._ready.run(), name="raft-ready")]
        inputs.start_ticking()
        self.wake()
        log.info(
            "raft node started",
            extra={
                "member_id": f"{self.member_id:x}",
                "term": rn.term,
                "commit": self.commit_index,
                "applied": rec.applied,
                "voters": ",".join(f"{v:x}" for v in self._ready.conf_state.voters),
            },
        )

    def is_stopped(self) -> bool:
        """Whether stop() or fail() has run (a call, so a check after an await is not narrowed away)."""
        return self.stopped

    async def stop(self) -> None:
        self.stopped = True
        if self._removed_stop is not None:
            self._removed_stop.cancel()
        self.inputs.stop_ticking()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.transport is not None:
            await self.transport.stop()
        self.reads.fail(StoppedError())
        self.wal_executor.shutdown()
        self.aux_executor.shutdown()
        if self._ready is not None:
            self._ready.wal.close()

    def fail(self, exc: BaseException) -> None:
        """Stops the node for good: nothing more is acknowledged; ``fatal`` tells the application why."""
        self.stopped = True
        self.reads.fail(StoppedError())
        if self.fatal is not None and not self.fatal.done():
            self.fatal.set_result(exc)
        self.wake()

    # ---- membership ----

    def set_peers(self, peers: dict[int, str], removed: Iterable[int] = ()) -> None:
        """The members to talk to (id -> peer host:port, this member included or not), and ids removed
        from the cluster, whose connections are answered with REMOVED from now on."""
        self.peers = dict(peers)
        self.removed_ids.update(removed)
        if self.transport is not None:
            self.transport.set_peers({i: a for i, a in self.peers.items() if i != self.member_id}, self.removed_ids)

    def propose_conf_change(self, kind: str, member_id: int, context: bytes) -> None:
        """Proposes a membership change ("add", "add_learner", "remove", "update"); one at a time.

        Raises ConfChangePendingError while another change is proposed and not applied, NoLeaderError,
        StoppedError or BusyError like ``propose``.
        """
        self.inputs.propose_conf_change(kind, member_id, context)

    def leave_after_removal(self) -> None:
        """This member was removed: it stops a moment later (etcd waits 10 heartbeats), so the answer
        to whoever asked and the commit of the removal still reach the others."""
        if self._removed_stop is not None:
            return
        log.warning("this member was removed from the cluster; stopping", extra={"member_id": f"{self.member_id:x}"})
        loop = asyncio.get_running_loop()
        self._removed_stop = loop.call_later(REMOVED_STOP_DELAY, lambda: self.fail(RemovedError()))

    def _on_removed(self) -> None:
        """A peer says this member was removed from the cluster: it must stop (etcd exits then too)."""
        log.error(
            "the member has been permanently removed from the cluster", extra={"member_id": f"{self.member_id:x}"}
        )
        self.leave_after_removal()

    # ---- the data path ----

    def propose(self, data: bytes) -> None:
        self.inputs.propose(data)

    async def read_index(self) -> int:
        """The commit index confirmed by a leader after this call began (ReadIndex, thesis §6.4)."""
        if self.stopped:
            raise StoppedError()
        if self.leader == 0:
            raise NoLeaderError()
        return await self.reads.read_index()

    async def transfer_leader(self, target: int) -> None:
        """Hands leadership to target (etcd's MoveLeader); only the leader may be asked."""
        await self.inputs.transfer_leader(target)

    @contextlib.asynccontextmanager
    async def apply_paused(self) -> AsyncIterator[None]:
        """While inside, committed entries are not applied (they queue, in order, and are applied on
        exit); Raft itself goes on: entries are persisted and replicated, heartbeats sent, votes cast.

        Membership changes wait for their entries to be applied, and linearizable reads for the
        applied index, as they do anyway. A snapshot from the leader is still installed.
        """
        async with self.ready.apply_paused():
            yield

    # ---- requests between members ----

    async def request(self, payload: bytes, peer: int | None = None, address: str | None = None) -> bytes:
        """Asks a member (by id, or whoever listens at a peer address) for its ``on_request`` answer.

        Raises PeerRequestError (raft.transport) when it cannot be asked or answers with an error.
        """
        if self.transport is None or self.stopped:
            raise StoppedError()
        return await self.transport.request(payload, peer=peer, address=address, timeout=self.request_timeout)

    async def _on_peer_request(self, peer: int, body: bytes) -> bytes:
        handler = self.on_request
        if handler is None:
            raise PeerRequestError("this member is not serving requests yet")
        return await handler(peer, body)
