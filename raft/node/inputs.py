"""What goes into the core: ticks, peer messages and snapshots, proposals, conf changes, transfers.

Each input steps the ``RawNode`` at once, on the event loop, and wakes the Ready loop
(``raft.node.ready``), which carries out whatever the core decided. Inputs arriving while the
loop waits for a WAL fsync simply pile up in the core: they become the next Ready, with one
fsync for all of them (the group commit).

- ticks: every heartbeat interval, from the event loop's timer (virtual time in the simulator);
  each tick also times out ReadIndex rounds (``raft.node.reads``);
- peer messages, from the transport; a term absurdly far ahead is a forgery or a bug and is
  dropped; heartbeat answers time the round trip to each follower (peer metrics);
- snapshots, once the transport has the whole file durable; the core sees the file's path as the
  snapshot's data;
- proposals and conf changes: ``NoLeaderError`` without a leader, ``BusyError`` from a leader
  over its uncommitted budget or transferring leadership, ``ConfChangePendingError`` while
  another membership change is unapplied;
- leader transfers, answered when the target is seen leading (``TransferTimeoutError`` after
  the request timeout).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from raft.core import (
    NONE,
    ConfChange,
    ConfChangeType,
    Message,
    MessageType,
    ProposalDroppedError,
    Snapshot,
    StateRole,
)
from raft.errors import (
    BadTransfereeError,
    BusyError,
    ConfChangePendingError,
    NoLeaderError,
    NotLeaderError,
    StoppedError,
    TransferTimeoutError,
)
from raft.snapshot import remove_outgoing

if TYPE_CHECKING:
    from raft.node.driver import RaftNode

log = logging.getLogger("raftkv.raft")

# a peer's term this far above ours is not an election it won but a forgery or a bug: ignored
# (with PreVote a member's term rises only by elections that could win; 2^32 of them never happen)
MAX_TERM_AHEAD = 1 << 32

KINDS = {
    "add": ConfChangeType.ADD_NODE,
    "add_learner": ConfChangeType.ADD_LEARNER_NODE,
    "remove": ConfChangeType.REMOVE_NODE,
    "update": ConfChangeType.UPDATE_NODE,
}
KIND_NAMES = {t: k for k, t in KINDS.items()}


class Inputs:
    def __init__(self, node: RaftNode) -> None:
        self.node = node
        self._tick_handle: asyncio.TimerHandle | None = None
        self._heartbeats: dict[int, float] = {}  # peer -> when the oldest unanswered heartbeat went out
        self._outgoing: dict[int, Path] = {}  # peer -> snapshot file being sent to it
        self._leader_waiters: list[tuple[int, asyncio.Future[None]]] = []

    # ---- ticks ----

    def start_ticking(self) -> None:
        self._tick_handle = asyncio.get_running_loop().call_later(self.node.heartbeat_s, self.tick)

    def stop_ticking(self) -> None:
        if self._tick_handle is not None:
            self._tick_handle.cancel()

    def tick(self) -> None:
        node = self.node
        if node.stopped:
            return
        node.rn.tick()
        node.reads.check_timeout()
        node.wake()
        self._tick_handle = asyncio.get_running_loop().call_later(node.heartbeat_s, self.tick)

    # ---- from the transport ----

    def deliver(self, msg: Message) -> None:
        node = self.node
        if node.stopped:
            return
        rn = node.rn
        if msg.term > rn.term + MAX_TERM_AHEAD:
            log.warning(
                "ignoring a peer message whose term is absurdly far ahead",
                extra={"raft_peer": f"{msg.frm:x}", "term": msg.term, "our_term": rn.term, "type": msg.type.name},
            )
            return
        if msg.type == MessageType.HEARTBEAT_RESP:
            sent = self._heartbeats.pop(msg.frm, None)
            if sent is not None:
                node.stats.round_trip(msg.frm, node.clock.monotonic() - sent)
        rn.step(msg)
        node.wake()

    def deliver_snapshot(self, msg: Message, path: Path) -> None:
        node = self.node
        if node.stopped or msg.snapshot is None:
            return
        node.rn.step(replace(msg, snapshot=Snapshot(msg.snapshot.metadata, str(path).encode())))
        node.wake()

    def unreachable(self, peer: int) -> None:
        node = self.node
        if not node.stopped:
            node.rn.report_unreachable(peer)
            node.wake()

    def snapshot_status(self, peer: int, ok: bool) -> None:
        sent = self._outgoing.pop(peer, None)
        if sent is not None:
            remove_outgoing(sent)
        node = self.node
        if not node.stopped:
            node.rn.report_snapshot(peer, ok)
            node.wake()

    async def snapshot_source(self, msg: Message) -> Path:
        node = self.node
        path = await node.aux_executor.run(node.sm.snapshot_file, node.snapshots.path)
        self._outgoing[msg.to] = path
        return path

    # ---- heartbeat round trips (peer metrics) ----

    def note_heartbeats(self, messages: list[Message]) -> None:
        """Remembers when heartbeats went out, for the round trip to each follower."""
        pending = self._heartbeats
        now = None
        for m in messages:
            if m.type == MessageType.HEARTBEAT and m.to not in pending:
                if now is None:
                    now = self.node.clock.monotonic()
                pending[m.to] = now

    def leader_changed(self, lead: int) -> None:
        self._heartbeats.clear()

    # ---- from the server ----

    def propose(self, data: bytes) -> None:
        node = self.node
        if node.stopped:
            raise StoppedError()
        rn = node.rn
        if rn.lead == NONE:
            raise NoLeaderError()
        try:
            rn.propose(data)
        except ProposalDroppedError:
            # a leader over its uncommitted budget, or a leader transfer under way
            raise (NoLeaderError() if rn.lead == NONE else BusyError()) from None
        node.wake()

    def propose_conf_change(self, kind: str, member_id: int, context: bytes) -> None:
        node = self.node
        if node.stopped:
            raise StoppedError()
        rn = node.rn
        if rn.lead == NONE:
            raise NoLeaderError()
        r = rn.raft
        if node.ready.conf_change_queued() or (
            rn.role == StateRole.LEADER and r.pending_conf_index > r.raft_log.applied
        ):
            raise ConfChangePendingError()
        try:
            rn.propose_conf_change(ConfChange(KINDS[kind], member_id, context))
        except ProposalDroppedError:
            raise (NoLeaderError() if rn.lead == NONE else BusyError()) from None
        node.wake()

    async def transfer_leader(self, target: int) -> None:
        node = self.node
        rn = node.rn
        if rn.role != StateRole.LEADER:
            raise NotLeaderError()
        if target not in node.ready.conf_state.voters:
            raise BadTransfereeError()
        if target == node.member_id:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._leader_waiters.append((target, fut))
        rn.transfer_leader(target)
        node.wake()
        try:
            await asyncio.wait_for(fut, node.request_timeout)
        except TimeoutError:
            raise TransferTimeoutError() from None

    def leader_is(self, lead: int) -> None:
        """A Ready showed lead leading: transfers to it are done."""
        if not self._leader_waiters:
            return
        keep = []
        for target, fut in self._leader_waiters:
            if lead == target and not fut.done():
                fut.set_result(None)
            elif not fut.done():
                keep.append((target, fut))
        self._leader_waiters = keep
