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

Membership: a committed conf change is first given to the state machine, which decides whether
it takes effect (a rejected one is applied to Raft as a no-op, as etcd does); the application
tells the node who its peers are (``set_peers``) and which ids were removed. A member that
applies its own removal stops a moment later; one that a peer tells it was removed (the
transport's REMOVED) stops at once. Either way ``fatal`` is resolved with ``RemovedError``.

``apply_paused`` holds back the application of committed entries (they queue, in order) while
Raft goes on; the member uses it to swap its backend file (defragmentation).

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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from raft import failpoints, unsafe
from raft.api import StateMachine
from raft.core import (
    NONE,
    ConfChange,
    ConfChangeError,
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
from raft.errors import (
    BadTransfereeError,
    BusyError,
    ConfChangePendingError,
    NoLeaderError,
    NotLeaderError,
    RemovedError,
    StartupError,
    StoppedError,
    TransferTimeoutError,
)
from raft.snapshot import SnapshotDir, remove_outgoing
from raft.stats import RaftStats
from raft.transport import PeerRequestError, PeerSecurity, Transport
from raft.wal import WAL

log = logging.getLogger("raftkv.raft")

CATCH_UP_ENTRIES = 5000  # entries kept after a compaction for slow followers (etcd's default)
READ_ROUND_TIMEOUT = 1.0  # a ReadIndex round not answered by then is asked again
MAX_UNCOMMITTED_BYTES = 256 << 20  # a leader that cannot commit refuses proposals past this
REMOVED_STOP_DELAY = 1.0  # a member that applied its own removal stops this long after (etcd: 10 ticks)

_KINDS = {
    "add": ConfChangeType.ADD_NODE,
    "add_learner": ConfChangeType.ADD_LEARNER_NODE,
    "remove": ConfChangeType.REMOVE_NODE,
    "update": ConfChangeType.UPDATE_NODE,
}
_KIND_NAMES = {t: k for k, t in _KINDS.items()}
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
        bootstrap_contexts: dict[int, bytes] | None = None,
        removed: Iterable[int] = (),
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
        self.bootstrap_contexts = dict(bootstrap_contexts or {})
        self.removed_ids: set[int] = set(removed)  # members removed from the cluster: never peers again
        # answers other members' requests (``request``); set by the application before start
        self.on_request: Callable[[int, bytes], Awaitable[bytes]] | None = None
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
        self.stats = RaftStats()
        self._last_lead = 0
        self._heartbeats: dict[int, float] = {}  # peer -> when the oldest unanswered heartbeat went out
        self._apply_queue: list[Entry] = []  # committed entries handed out while applying is paused
        self._apply_pauses = 0
        self._removed_stop: asyncio.TimerHandle | None = None

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
        conf = sm.conf_state() if applied else None
        cfg = Config(
            id=self.member_id,
            election_tick=self.election_ticks,
            heartbeat_tick=1,
            applied=applied,
            conf_state=ConfState(*conf) if conf is not None else None,
            check_quorum=True,
            pre_vote=True,
            rng=random.Random(),
            max_size_per_msg=1 << 20,
            max_inflight_msgs=256,
            max_uncommitted_entries_size=MAX_UNCOMMITTED_BYTES,
        )
        self.rn = RawNode(cfg, storage)
        if fresh and self.bootstrap:
            self.rn.bootstrap(sorted(self.peers), self.bootstrap_contexts)
        self._conf_state = self.rn.status().conf_state
        self.wal.fsync_seconds = self.stats.wal_fsync
        transport = Transport(
            self.member_id,
            self.cluster_id,
            deliver=self._deliver,
            on_unreachable=self._unreachable,
            on_snapshot_status=self._snapshot_status,
            snapshot_source=self._snapshot_source,
            snapshot_dir=self.snapshots,
            deliver_snapshot=self._deliver_snapshot,
            stats=self.stats,
            on_request=self._on_peer_request,
            on_removed=self._on_removed,
            security=self.peer_security,
        )
        self.snapshots.prepare()
        await transport.start(self.peer_listen)
        transport.set_peers({i: a for i, a in self.peers.items() if i != self.member_id}, self.removed_ids)
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
        if self._removed_stop is not None:
            self._removed_stop.cancel()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.transport is not None:
            await self.transport.stop()
        self._fail_reads(StoppedError())
        self._executor.shutdown(wait=True)
        self._aux_executor.shutdown(wait=True)
        if self.wal is not None:
            self.wal.close()

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
        if self._stopped:
            raise StoppedError()
        rn = self.rn
        if rn.lead == NONE:
            raise NoLeaderError()
        r = rn.raft
        if any(e.type == EntryType.CONF_CHANGE for e in self._apply_queue) or (
            rn.role == StateRole.LEADER and r.pending_conf_index > r.raft_log.applied
        ):
            raise ConfChangePendingError()
        try:
            rn.propose_conf_change(ConfChange(_KINDS[kind], member_id, context))
        except ProposalDroppedError:
            raise (NoLeaderError() if rn.lead == NONE else BusyError()) from None
        self._wake.set()

    def progress(self) -> dict[int, int] | None:
        """On the leader, each member's matched log index (itself included); None elsewhere."""
        st = self.rn.status() if self.rn is not None else None
        if st is None or st.progress is None:
            return None
        return {pid: pr.match for pid, pr in st.progress.items()}

    def connected_for(self, peer: int) -> float | None:
        """Seconds the connection to peer has been up without a break; None while it is down."""
        if self.transport is None:
            return None
        since = self.transport.active_since(peer)
        return None if since is None else asyncio.get_running_loop().time() - since

    async def request(self, payload: bytes, peer: int | None = None, address: str | None = None) -> bytes:
        """Asks a member (by id, or whoever listens at a peer address) for its ``on_request`` answer.

        Raises PeerRequestError (raft.transport) when it cannot be asked or answers with an error.
        """
        if self.transport is None or self._stopped:
            raise StoppedError()
        return await self.transport.request(payload, peer=peer, address=address, timeout=self.request_timeout)

    async def _on_peer_request(self, peer: int, body: bytes) -> bytes:
        handler = self.on_request
        if handler is None:
            raise PeerRequestError("this member is not serving requests yet")
        return await handler(peer, body)

    def _on_removed(self) -> None:
        """A peer says this member was removed from the cluster: it must stop (etcd exits then too), a
        moment later, like a member that applies its own removal (answers in flight still go out)."""
        log.error(
            "the member has been permanently removed from the cluster", extra={"member_id": f"{self.member_id:x}"}
        )
        self._leave_after_removal()

    def _fail(self, exc: BaseException) -> None:
        self._stopped = True
        self._fail_reads(StoppedError())
        if self.fatal is not None and not self.fatal.done():
            self.fatal.set_result(exc)
        self._wake.set()

    @contextlib.asynccontextmanager
    async def apply_paused(self) -> AsyncIterator[None]:
        """While inside, committed entries are not applied (they queue, in order, and are applied on
        exit); Raft itself goes on: entries are persisted and replicated, heartbeats sent, votes cast.

        Membership changes wait for their entries to be applied, and linearizable reads for the
        applied index, as they do anyway. A snapshot from the leader is still installed.
        """
        self._apply_pauses += 1
        try:
            yield
        finally:
            self._apply_pauses -= 1
            self._wake.set()

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
        if msg.type == MessageType.HEARTBEAT_RESP:
            sent = self._heartbeats.pop(msg.frm, None)
            if sent is not None:
                self.stats.round_trip(msg.frm, time.monotonic() - sent)
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
            raise StoppedError()
        rn = self.rn
        if rn.lead == NONE:
            raise NoLeaderError()
        try:
            rn.propose(data)
        except ProposalDroppedError:
            # a leader over its uncommitted budget, or a leader transfer under way
            raise (NoLeaderError() if rn.lead == NONE else BusyError()) from None
        self._wake.set()

    async def read_index(self) -> int:
        """The commit index confirmed by a leader after this call began (ReadIndex, thesis §6.4)."""
        if self._stopped:
            raise StoppedError()
        if self.rn.lead == NONE:
            raise NoLeaderError()
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
                    w.set_exception(NoLeaderError())
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
                    w.set_exception(NoLeaderError())
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
            raise NotLeaderError()
        if target not in self._conf_state.voters:
            raise BadTransfereeError()
        if target == self.member_id:
            return
        fut = asyncio.get_running_loop().create_future()
        self._leader_waiters.append((target, fut))
        rn.transfer_leader(target)
        self._wake.set()
        try:
            await asyncio.wait_for(fut, self.request_timeout)
        except TimeoutError:
            raise TransferTimeoutError() from None

    # ---- the Ready loop ----

    async def _run(self) -> None:
        rn = self.rn
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self._stopped:
                    return
                self._drain_apply_queue()
                while rn.has_ready():
                    rd = rn.ready()
                    later = await self._handle(rd)
                    rn.advance(rd, apply_later=later)
                    if self._stopped:
                        return
                    self._drain_apply_queue()
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
            log.critical("raft node stopped", exc_info=exc)
            self._fail(exc)

    def _drain_apply_queue(self) -> None:
        if not self._apply_queue or self._apply_pauses:
            return
        entries, self._apply_queue = self._apply_queue, []
        self._apply(entries)
        self.rn.applied_to(entries[-1].index)

    async def _handle(self, rd: Ready) -> bool:
        """Carries out one Ready; True when its committed entries were queued to be applied later."""
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
            if rn.role == StateRole.LEADER:
                self._note_heartbeats(messages)
            transport.send(messages)
        later = False
        if rd.committed_entries:
            if self._apply_pauses or self._apply_queue:
                self._apply_queue.extend(rd.committed_entries)
                later = True
            else:
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
        return later

    def _on_soft_state(self) -> None:
        lead = self.rn.lead
        if lead != self._last_lead:
            if lead != NONE:
                self.stats.leader_changes += 1  # etcd_server_leader_changes_seen_total
            self._last_lead = lead
            self._heartbeats.clear()
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

    def _note_heartbeats(self, messages: list[Message]) -> None:
        """Remembers when heartbeats went out, for the round trip to each follower (peer metrics)."""
        pending = self._heartbeats
        now = None
        for m in messages:
            if m.type == MessageType.HEARTBEAT and m.to not in pending:
                if now is None:
                    now = time.monotonic()
                pending[m.to] = now

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
            # the state machine decides (deterministically, as every member applies the same entry)
            # whether the change takes effect; a rejected one is applied as a no-op, as etcd does
            accepted = sm.apply_conf_change(e.index, e.term, _KIND_NAMES[cc.type], cc.node_id, cc.context)
            try:
                self._conf_state = self.rn.apply_conf_change(cc if accepted else ConfChange(cc.type, NONE))
            except ConfChangeError as exc:  # the state machine accepted what Raft cannot do: a bug
                raise RuntimeError(f"entry {e.index}: {exc}") from exc
            if accepted and cc.type == ConfChangeType.REMOVE_NODE and cc.node_id == self.member_id:
                self._leave_after_removal()
        if run:
            sm.apply_entries(run)
        failpoints.hit("afterApply")

    def _leave_after_removal(self) -> None:
        """This member applied its own removal: it stops a moment later (etcd waits 10 heartbeats), so
        the answer to whoever asked and the commit of the removal still reach the others."""
        if self._removed_stop is not None:
            return
        log.warning("this member was removed from the cluster; stopping", extra={"member_id": f"{self.member_id:x}"})
        self._removed_stop = asyncio.get_running_loop().call_later(
            REMOVED_STOP_DELAY, lambda: self._fail(RemovedError())
        )

    def _install_snapshot(self, snap: Snapshot) -> None:
        """The WAL records the snapshot first (its file is durable in the snap dir), then the state is
        replaced: a crash in between is finished on restart by _finish_snapshot_install."""
        md = snap.metadata
        path = Path(snap.data.decode())
        log.info("installing snapshot from the leader", extra={"index": md.index, "term": md.term, "file": str(path)})
        self.wal.save_snapshot_mark(md.index, md.term, md.conf_state.voters, md.conf_state.learners, True)
        failpoints.hit("beforeSnapshotInstall")
        self.sm.install_snapshot(path)
        self._apply_queue = []  # committed entries not applied yet are all older than the snapshot
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
