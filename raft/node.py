"""The asyncio driver of one Raft member: it feeds the pure core and carries out its Readies.

Inputs go straight into the ``RawNode`` as they arrive on the event loop (ticks from a timer,
peer messages from the transport, proposals and read requests from the server), and one task
handles the Readies, strictly in order, each one as ``raft.core.rawnode`` prescribes:

1. a snapshot from the leader is installed (state machine, WAL mark, MemoryStorage);
2. a leader's MsgApps are sent at once (thesis §10.2.1: the leader may persist in parallel);
3. entries and hard state go to the WAL, fsynced on a worker thread (while it syncs, the loop
   keeps taking requests, which become the next Ready: that is the group commit);
4. every other message is sent;
5. committed entries are applied; read states release the linearizable reads waiting on them;
6. the Ready is advanced; every ``snapshot_count`` applied entries the log is compacted.

Linearizable reads are batched: all reads that arrive while a ReadIndex round is in flight
share the next round, so a burst of reads costs one heartbeat round, not one each.

A failure to persist (a failed fsync, a full disk) or a bug in apply stops the node: ``fatal``
is resolved and nothing more is acknowledged. The member process then exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from kvstore.errors import (
    BadLeaderTransferee,
    NoLeader,
    NotLeader,
    StartupError,
    Stopped,
    TimeoutLeaderTransfer,
    TooManyRequests,
)
from raft import failpoints, unsafe
from raft.api import StateMachine
from raft.core import (
    NONE,
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    EntryType,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    ProposalDroppedError,
    RawNode,
    Ready,
    Snapshot,
    SnapshotMetadata,
    StateRole,
)
from raft.snapshot import SnapshotDir, remove_outgoing
from raft.transport import PeerSecurity, Transport
from raft.wal import WAL

log = logging.getLogger("raftkv.raft")

CATCH_UP_ENTRIES = 5000  # entries kept after a compaction for slow followers (etcd's default)
READ_ROUND_TIMEOUT = 1.0  # a ReadIndex round not answered by then is asked again
MAX_UNCOMMITTED_BYTES = 256 << 20  # a leader that cannot commit refuses proposals past this
# a peer's term this far above ours is not an election it won but a forgery or a bug: ignored
# (with PreVote a member's term rises only by elections that could win; 2^32 of them never happen)
MAX_TERM_AHEAD = 1 << 32


def _entry(term: int, index: int, etype: int, data: bytes) -> Entry:
    return Entry(term, index, EntryType(etype), data)


class _ReadRound:
    __slots__ = ("ctx", "deadline", "waiters")

    def __init__(self, ctx: bytes, waiters: list[asyncio.Future], deadline: float) -> None:
        self.ctx = ctx
        self.waiters = waiters
        self.deadline = deadline


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
        peer_security: PeerSecurity | None = None,
    ) -> None:
        self.member_id = member_id
        self.peer_security = peer_security
        self.cluster_id = cluster_id
        self.wal_dir = wal_dir
        self.snapshots = SnapshotDir(snap_dir)
        self.peer_listen = peer_listen
        self.peers = dict(peers)  # member id -> peer "host:port", this member included
        self.bootstrap = bootstrap
        self.heartbeat_s = heartbeat_ms / 1000
        self.election_ticks = max(2, election_ms // heartbeat_ms)
        self.election_s = election_ms / 1000
        self.snapshot_count = snapshot_count
        self.request_timeout = request_timeout
        self.rn: RawNode | None = None
        self.storage = MemoryStorage()
        self.wal: WAL | None = None
        self.transport: Transport | None = None
        self.sm: StateMachine | None = None
        self.fatal: asyncio.Future | None = None
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="wal")
        self._aux_executor = ThreadPoolExecutor(2, thread_name_prefix="raft-aux")
        self._tasks: list[asyncio.Task] = []
        self._tick_handle: asyncio.TimerHandle | None = None
        self._stopped = False
        self._snap_index = 0
        self._conf_state = ConfState()
        self._read_ids = itertools.count(1)
        self._read_pending: list[asyncio.Future] = []
        self._read_round: _ReadRound | None = None
        self._leader_waiters: list[tuple[int, asyncio.Future]] = []
        self._campaign_when_applied = False
        self._outgoing: dict[int, Path] = {}  # peer -> snapshot file being sent to it

    # ---- what the server reads ----

    @property
    def term(self) -> int:
        return self.rn.term if self.rn is not None else 0

    @property
    def leader(self) -> int:
        return self.rn.lead if self.rn is not None else 0

    @property
    def commit_index(self) -> int:
        return self.rn.raft.raft_log.committed if self.rn is not None else 0

    @property
    def is_learner(self) -> bool:
        return self.member_id in self._conf_state.learners

    def voters(self) -> tuple[int, ...]:
        return self._conf_state.voters

    # ---- lifecycle ----

    async def start(self, sm: StateMachine) -> None:
        loop = asyncio.get_running_loop()
        self.sm = sm
        self.fatal = loop.create_future()
        applied = sm.applied_index
        storage = self.storage
        fresh = not WAL.exists(self.wal_dir)
        if fresh:
            if applied:
                raise StartupError(f"the backend has applied entries but there is no WAL in {self.wal_dir}")
            self.wal = WAL.create(self.wal_dir, self.member_id, self.cluster_id)
        else:
            wal, st = WAL.open(self.wal_dir, _entry)
            if (st.member_id, st.cluster_id) != (self.member_id, self.cluster_id):
                raise StartupError(
                    f"WAL in {self.wal_dir} belongs to member {st.member_id:x} of cluster {st.cluster_id:x}, "
                    f"not {self.member_id:x} of {self.cluster_id:x} (check --name, --initial-cluster and "
                    "--initial-cluster-token)"
                )
            self.wal = wal
            if st.snapshot_index:
                if applied < st.snapshot_index:
                    applied = self._finish_snapshot_install(sm, st.snapshot_index, st.snapshot_term)
                if applied < st.snapshot_index:
                    raise StartupError(
                        f"the backend has applied only up to {applied} but the WAL in {self.wal_dir} starts after "
                        f"its snapshot at {st.snapshot_index}: entries in between are lost; refusing to start"
                    )
                cs = ConfState(st.snapshot_voters, st.snapshot_learners)
                storage.apply_snapshot(Snapshot(SnapshotMetadata(st.snapshot_index, st.snapshot_term, cs)))
                self._snap_index = st.snapshot_index
            storage.append(st.entries)
            last = storage.last_index()
            if applied > last and not st.snapshot_replaces_log:
                raise StartupError(
                    f"the backend has applied entry {applied} but the WAL in {self.wal_dir} ends at {last}: "
                    "the WAL lost entries; refusing to start"
                )
            # A snapshot from the leader is a copy of its backend, which may be ahead of the snapshot's
            # index: the entries in between come again from the leader and the applier skips them.
            applied = min(applied, last)
            # entries the backend applied were committed, even if a commit-only hard state was not synced
            storage.set_hard_state(HardState(st.term, st.vote, max(st.commit, applied)))
        cfg = Config(
            id=self.member_id,
            election_tick=self.election_ticks,
            heartbeat_tick=1,
            applied=applied,
            check_quorum=True,
            pre_vote=True,
            rng=random.Random(),
            max_size_per_msg=1 << 20,
            max_inflight_msgs=256,
            max_uncommitted_entries_size=MAX_UNCOMMITTED_BYTES,
        )
        self.rn = RawNode(cfg, storage)
        if fresh and self.bootstrap:
            self.rn.bootstrap(sorted(self.peers))
        self._conf_state = self.rn.status().conf_state
        transport = Transport(
            self.member_id,
            self.cluster_id,
            deliver=self._deliver,
            on_unreachable=self._unreachable,
            on_snapshot_status=self._snapshot_status,
            snapshot_source=self._snapshot_source,
            snapshot_dir=self.snapshots,
            deliver_snapshot=self._deliver_snapshot,
            security=self.peer_security,
        )
        self.snapshots.prepare()
        await transport.start(self.peer_listen)
        transport.set_peers({i: a for i, a in self.peers.items() if i != self.member_id})
        self.transport = transport
        self._tasks = [loop.create_task(self._run(), name="raft-ready")]
        self._tick_handle = loop.call_later(self.heartbeat_s, self._tick)
        self._campaign_when_applied = self._conf_state.voters == (self.member_id,)
        self._wake.set()
        log.info(
            "raft node started",
            extra={
                "member_id": f"{self.member_id:x}",
                "term": self.rn.term,
                "commit": self.commit_index,
                "applied": applied,
                "voters": ",".join(f"{v:x}" for v in self._conf_state.voters),
            },
        )

    async def stop(self) -> None:
        self._stopped = True
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.transport is not None:
            await self.transport.stop()
        self._fail_reads(Stopped())
        self._executor.shutdown(wait=True)
        self._aux_executor.shutdown(wait=True)
        if self.wal is not None:
            self.wal.close()

    # ---- inputs ----

    def _tick(self) -> None:
        if self._stopped:
            return
        self.rn.tick()
        self._check_read_round()
        self._wake.set()
        self._tick_handle = asyncio.get_running_loop().call_later(self.heartbeat_s, self._tick)

    def _deliver(self, msg: Message) -> None:
        if self._stopped:
            return
        if msg.term > self.rn.term + MAX_TERM_AHEAD:
            log.warning(
                "ignoring a peer message whose term is absurdly far ahead",
                extra={"raft_peer": f"{msg.frm:x}", "term": msg.term, "our_term": self.rn.term, "type": msg.type.name},
            )
            return
        self.rn.step(msg)
        self._wake.set()

    def _deliver_snapshot(self, msg: Message, path: Path) -> None:
        if self._stopped or msg.snapshot is None:
            return
        self.rn.step(replace(msg, snapshot=Snapshot(msg.snapshot.metadata, str(path).encode())))
        self._wake.set()

    def _unreachable(self, peer: int) -> None:
        if not self._stopped:
            self.rn.report_unreachable(peer)
            self._wake.set()

    def _snapshot_status(self, peer: int, ok: bool) -> None:
        sent = self._outgoing.pop(peer, None)
        if sent is not None:
            remove_outgoing(sent)
        if not self._stopped:
            self.rn.report_snapshot(peer, ok)
            self._wake.set()

    async def _snapshot_source(self, msg: Message) -> Path:
        loop = asyncio.get_running_loop()
        path = await loop.run_in_executor(self._aux_executor, self.sm.snapshot_file, self.snapshots.path)
        self._outgoing[msg.to] = path
        return path

    def propose(self, data: bytes) -> None:
        if self._stopped:
            raise Stopped()
        rn = self.rn
        if rn.lead == NONE:
            raise NoLeader()
        try:
            rn.propose(data)
        except ProposalDroppedError:
            # a leader over its uncommitted budget, or a leader transfer under way
            raise (NoLeader() if rn.lead == NONE else TooManyRequests()) from None
        self._wake.set()

    async def read_index(self) -> int:
        """The commit index confirmed by a leader after this call began (ReadIndex, thesis §6.4)."""
        if self._stopped:
            raise Stopped()
        if self.rn.lead == NONE:
            raise NoLeader()
        fut = asyncio.get_running_loop().create_future()
        self._read_pending.append(fut)
        if self._read_round is None:
            self._start_read_round()
        return await fut

    def _start_read_round(self, waiters: list[asyncio.Future] | None = None) -> None:
        if waiters is None:
            waiters, self._read_pending = self._read_pending, []
        waiters = [w for w in waiters if not w.done()]
        if not waiters:
            self._read_round = None
            return
        ctx = next(self._read_ids).to_bytes(8, "big")
        try:
            self.rn.read_index(ctx)
        except ProposalDroppedError:
            self._read_round = None
            for w in waiters:
                if not w.done():
                    w.set_exception(NoLeader())
            return
        self._read_round = _ReadRound(ctx, waiters, time.monotonic() + READ_ROUND_TIMEOUT)
        self._wake.set()

    def _check_read_round(self) -> None:
        rnd = self._read_round
        if rnd is None or time.monotonic() < rnd.deadline:
            return
        # unanswered (a lost message or a leader change): ask again, or give up if there is no leader
        self._read_round = None
        if self.rn.lead == NONE:
            for w in rnd.waiters + self._read_pending:
                if not w.done():
                    w.set_exception(NoLeader())
            self._read_pending = []
            return
        self._start_read_round(rnd.waiters + self._read_pending)
        self._read_pending = []

    def _fail_reads(self, exc: Exception) -> None:
        waiters = self._read_pending + (self._read_round.waiters if self._read_round else [])
        self._read_pending, self._read_round = [], None
        for w in waiters:
            if not w.done():
                w.set_exception(exc)

    async def transfer_leader(self, target: int) -> None:
        """Hands leadership to target (etcd's MoveLeader); only the leader may be asked."""
        rn = self.rn
        if rn.role != StateRole.LEADER:
            raise NotLeader()
        if target not in self._conf_state.voters:
            raise BadLeaderTransferee()
        if target == self.member_id:
            return
        fut = asyncio.get_running_loop().create_future()
        self._leader_waiters.append((target, fut))
        rn.transfer_leader(target)
        self._wake.set()
        try:
            await asyncio.wait_for(fut, self.request_timeout)
        except TimeoutError:
            raise TimeoutLeaderTransfer() from None

    # ---- the Ready loop ----

    async def _run(self) -> None:
        rn = self.rn
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while rn.has_ready():
                    rd = rn.ready()
                    await self._handle(rd)
                    rn.advance(rd)
                    if self._stopped:
                        return
                    await self._maybe_compact()
                    if self._campaign_when_applied and self.sm.applied_index >= self.commit_index:
                        # a single voter need not wait an election timeout (raft refuses to campaign
                        # while committed membership changes are unapplied, hence after the Ready)
                        self._campaign_when_applied = False
                        if rn.lead == NONE and self._conf_state.voters == (self.member_id,):
                            rn.campaign()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a failed fsync or a bug in apply: nothing more may be acknowledged
            self._stopped = True
            log.critical("raft node stopped", exc_info=exc)
            self._fail_reads(Stopped())
            if self.fatal is not None and not self.fatal.done():
                self.fatal.set_result(exc)

    async def _handle(self, rd: Ready) -> None:
        rn = self.rn
        transport = self.transport
        if rd.soft_state is not None:
            self._on_soft_state()
        if rd.snapshot is not None:
            self._install_snapshot(rd.snapshot)
        messages = rd.messages
        if messages and rn.role == StateRole.LEADER:
            early = [m for m in messages if m.type == MessageType.APP]
            if early:
                transport.send(early)
                messages = [m for m in messages if m.type != MessageType.APP]
        if rd.entries or rd.hard_state is not None:
            if unsafe.ACK_BEFORE_FSYNC and rd.entries and rn.role != StateRole.LEADER:
                # deliberately broken for chaos tests (raft/unsafe.py): acknowledge appends, persist them later
                transport.send(messages)
                messages = []
                await asyncio.sleep(unsafe.PERSIST_DELAY_S)
            hs = rd.hard_state
            hs_tuple = (hs.term, hs.vote, hs.commit) if hs is not None else None
            if rd.must_sync:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(self._executor, self.wal.save, rd.entries, hs_tuple, True)
            else:
                self.wal.save(rd.entries, hs_tuple, False)
            if rd.entries:
                self.storage.append(rd.entries)
            if hs is not None:
                self.storage.set_hard_state(hs)
        if messages:
            failpoints.hit("beforeSendMessages")
            transport.send(messages)
        if rd.committed_entries:
            self._apply(rd.committed_entries)
        if rd.read_states:
            rnd = self._read_round
            for rs in rd.read_states:
                if rnd is not None and rs.request_ctx == rnd.ctx:
                    for w in rnd.waiters:
                        if not w.done():
                            w.set_result(rs.index)
                    self._read_round = None
                    rnd = None
            if self._read_round is None and self._read_pending:
                self._start_read_round()

    def _on_soft_state(self) -> None:
        lead = self.rn.lead
        if lead == NONE:
            return
        if self._leader_waiters:
            keep = []
            for target, fut in self._leader_waiters:
                if lead == target and not fut.done():
                    fut.set_result(None)
                elif not fut.done():
                    keep.append((target, fut))
            self._leader_waiters = keep
        if self._read_pending and self._read_round is None:
            self._start_read_round()

    def _apply(self, entries: list[Entry]) -> None:
        sm = self.sm
        failpoints.hit("beforeApply")
        run: list[Entry] = []
        for e in entries:
            if e.type == EntryType.NORMAL:
                run.append(e)
                continue
            if run:
                sm.apply_entries(run)
                run = []
            cc = ConfChange.decode(e.data)
            self._conf_state = self.rn.apply_conf_change(cc)
            kind = {
                ConfChangeType.ADD_NODE: "add",
                ConfChangeType.ADD_LEARNER_NODE: "add_learner",
                ConfChangeType.REMOVE_NODE: "remove",
            }[cc.type]
            sm.apply_conf_change(e.index, e.term, kind, cc.node_id, cc.context)
        if run:
            sm.apply_entries(run)
        failpoints.hit("afterApply")

    def _install_snapshot(self, snap: Snapshot) -> None:
        """The WAL records the snapshot first (its file is durable in the snap dir), then the state is
        replaced: a crash in between is finished on restart by _finish_snapshot_install."""
        md = snap.metadata
        path = Path(snap.data.decode())
        log.info("installing snapshot from the leader", extra={"index": md.index, "term": md.term, "file": str(path)})
        self.wal.save_snapshot_mark(md.index, md.term, md.conf_state.voters, md.conf_state.learners, True)
        failpoints.hit("beforeSnapshotInstall")
        self.sm.install_snapshot(path)
        self.storage.apply_snapshot(Snapshot(md))
        self._conf_state = md.conf_state
        self._snap_index = md.index

    def _finish_snapshot_install(self, sm: StateMachine, index: int, term: int) -> int:
        """Installs a received snapshot the WAL recorded but a crash kept from being installed."""
        path = self.snapshots.find_received(term, index)
        if path is not None:
            log.warning("finishing the install of a received snapshot", extra={"index": index, "file": str(path)})
            sm.install_snapshot(path)
        return sm.applied_index

    async def _maybe_compact(self) -> None:
        """Every snapshot_count applied entries: sync the backend, mark the WAL, drop old entries."""
        applied = self.sm.applied_index
        if applied - self._snap_index < self.snapshot_count or applied > self.storage.last_index():
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._aux_executor, self.sm.sync)
        snap = self.storage.create_snapshot(applied, self._conf_state, b"")
        cs = self._conf_state
        await loop.run_in_executor(
            self._executor, self.wal.save_snapshot_mark, applied, snap.metadata.term, cs.voters, cs.learners
        )
        compact_to = applied - CATCH_UP_ENTRIES
        if compact_to > self.storage.first_index():
            self.storage.compact(compact_to)
        await loop.run_in_executor(self._executor, self.wal.release_to, applied)
        self._snap_index = applied
        log.info("compacted the raft log", extra={"snapshot_index": applied, "kept_from": self.storage.first_index()})
