"""The Ready loop: one task that carries out the core's Readies, strictly in order.

Each Ready is handled as ``raft.core.rawnode`` prescribes:

1. a snapshot from the leader is installed (WAL mark first, then the state machine, then the
   MemoryStorage): a crash in between is finished on restart (``raft.node.recovery``);
2. a leader's MsgApps are sent at once (thesis §10.2.1: the leader may persist in parallel);
3. entries and hard state go to the WAL, fsynced through the WAL executor (a worker thread for
   real; while it syncs, the loop keeps taking inputs, which become the next Ready);
4. every other message is sent: votes and acknowledgements only once what they vouch for is
   durable;
5. committed entries are applied (or queued, in order, while applying is paused); read states
   release the linearizable reads waiting on them (``raft.node.reads``);
6. the Ready is advanced; every ``snapshot_count`` applied entries the backend is synced, the
   WAL marked and the log compacted, keeping ``CATCH_UP_ENTRIES`` for slow followers.

Membership: a committed conf change is first given to the state machine, which decides whether
it takes effect (a rejected one is applied to Raft as a no-op, as etcd does). A member that
applies its own removal stops a moment later.

A failure to persist (a failed fsync, a full disk) or a bug in apply ends the loop and stops the
node (``RaftNode.fatal``): nothing more is acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from raft import failpoints, unsafe
from raft.core import (
    NONE,
    ConfChange,
    ConfChangeError,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    MemoryStorage,
    MessageType,
    Ready,
    Snapshot,
    StateRole,
)
from raft.node.inputs import KIND_NAMES
from raft.wal import WAL

if TYPE_CHECKING:
    from raft.node.driver import RaftNode

log = logging.getLogger("raftkv.raft")

CATCH_UP_ENTRIES = 5000  # entries kept after a compaction for slow followers (etcd's default)


class ReadyLoop:
    def __init__(
        self,
        node: RaftNode,
        wal: WAL,
        storage: MemoryStorage,
        snap_index: int,
        conf_state: ConfState,
    ) -> None:
        self.node = node
        self.wal = wal
        self.storage = storage
        self.snap_index = snap_index
        self.conf_state = conf_state
        self._apply_queue: list[Entry] = []  # committed entries handed out while applying is paused
        self._apply_pauses = 0
        self._last_lead = 0
        # a single voter need not wait an election timeout to lead
        self._campaign_when_applied = conf_state.voters == (node.member_id,)

    def conf_change_queued(self) -> bool:
        return any(e.type == EntryType.CONF_CHANGE for e in self._apply_queue)

    async def run(self) -> None:
        node = self.node
        rn = node.rn
        wake = node.wake_event
        try:
            while True:
                await wake.wait()
                wake.clear()
                if node.stopped:
                    return
                self._drain_apply_queue()
                while rn.has_ready():
                    rd = rn.ready()
                    observer = node.ready_observer
                    if observer is not None:
                        observer(node, rd)
                    later = await self._handle(rd)
                    rn.advance(rd, apply_later=later)
                    if node.is_stopped():  # (a method: stop() may have run while _handle awaited)
                        return
                    self._drain_apply_queue()
                    await self._maybe_compact()
                    if self._campaign_when_applied and node.sm.applied_index >= node.commit_index:
                        # (raft refuses to campaign while committed membership changes are unapplied,
                        # hence after the Ready)
                        self._campaign_when_applied = False
                        if rn.lead == NONE and self.conf_state.voters == (node.member_id,):
                            rn.campaign()
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except BaseException as exc:  # a failed fsync or a bug in apply: nothing more may be acknowledged
            log.critical("raft node stopped", exc_info=exc)
            node.fail(exc)

    @contextlib.asynccontextmanager
    async def apply_paused(self) -> AsyncIterator[None]:
        self._apply_pauses += 1
        try:
            yield
        finally:
            self._apply_pauses -= 1
            self.node.wake()

    def _drain_apply_queue(self) -> None:
        if not self._apply_queue or self._apply_pauses:
            return
        entries, self._apply_queue = self._apply_queue, []
        self._apply(entries)
        self.node.rn.applied_to(entries[-1].index)

    async def _handle(self, rd: Ready) -> bool:
        """Carries out one Ready; True when its committed entries were queued to be applied later."""
        node = self.node
        rn = node.rn
        transport = node.transport
        assert transport is not None, "the Ready loop runs only after start() set up the transport"
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
                await node.wal_executor.run(self.wal.save, rd.entries, hs_tuple, True)
            else:
                self.wal.save(rd.entries, hs_tuple, False)
            if rd.entries:
                self.storage.append(rd.entries)
            if hs is not None:
                self.storage.set_hard_state(hs)
        if messages:
            failpoints.hit("beforeSendMessages")
            if rn.role == StateRole.LEADER:
                node.inputs.note_heartbeats(messages)
            transport.send(messages)
        later = False
        if rd.committed_entries:
            if self._apply_pauses or self._apply_queue:
                self._apply_queue.extend(rd.committed_entries)
                later = True
            else:
                self._apply(rd.committed_entries)
        if rd.read_states:
            node.reads.answer(rd.read_states)
        return later

    def _on_soft_state(self) -> None:
        node = self.node
        lead = node.rn.lead
        if lead != self._last_lead:
            if lead != NONE:
                node.stats.leader_changes += 1  # etcd_server_leader_changes_seen_total
            self._last_lead = lead
            node.inputs.leader_changed(lead)
        if lead == NONE:
            return
        node.inputs.leader_is(lead)
        node.reads.leader_known()

    def _apply(self, entries: list[Entry]) -> None:
        node = self.node
        sm = node.sm
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
            accepted = sm.apply_conf_change(e.index, e.term, KIND_NAMES[cc.type], cc.node_id, cc.context)
            try:
                self.conf_state = node.rn.apply_conf_change(cc if accepted else ConfChange(cc.type, NONE))
            except ConfChangeError as exc:  # the state machine accepted what Raft cannot do: a bug
                raise RuntimeError(f"entry {e.index}: {exc}") from exc
            if accepted and cc.type == ConfChangeType.REMOVE_NODE and cc.node_id == node.member_id:
                node.leave_after_removal()
        if run:
            sm.apply_entries(run)
        failpoints.hit("afterApply")

    def _install_snapshot(self, snap: Snapshot) -> None:
        """The WAL records the snapshot first (its file is durable in the snap dir), then the state is
        replaced: a crash in between is finished on restart."""
        md = snap.metadata
        path = Path(snap.data.decode())
        log.info("installing snapshot from the leader", extra={"index": md.index, "term": md.term, "file": str(path)})
        self.wal.save_snapshot_mark(md.index, md.term, md.conf_state.voters, md.conf_state.learners, True)
        failpoints.hit("beforeSnapshotInstall")
        self.node.sm.install_snapshot(path)
        self._apply_queue = []  # committed entries not applied yet are all older than the snapshot
        self.storage.apply_snapshot(Snapshot(md))
        self.conf_state = md.conf_state
        self.snap_index = md.index

    async def _maybe_compact(self) -> None:
        """Every snapshot_count applied entries: sync the backend, mark the WAL, drop old entries."""
        node = self.node
        applied = node.sm.applied_index
        storage = self.storage
        if applied - self.snap_index < node.snapshot_count or applied > storage.last_index():
            return
        await node.aux_executor.run(node.sm.sync)
        snap = storage.create_snapshot(applied, self.conf_state, b"")
        cs = self.conf_state
        await node.wal_executor.run(self.wal.save_snapshot_mark, applied, snap.metadata.term, cs.voters, cs.learners)
        compact_to = applied - node.catch_up_entries
        if compact_to > storage.first_index():
            storage.compact(compact_to)
        await node.wal_executor.run(self.wal.release_to, applied)
        self.snap_index = applied
        log.info("compacted the raft log", extra={"snapshot_index": applied, "kept_from": storage.first_index()})
