"""RawNode: the synchronous API a driver uses (tick/step/propose in, Ready out, advance back).

The driver loop, for each Ready `rd = node.ready()`, in this order:

1. If `rd.snapshot`: persist it, then install it (`storage.apply_snapshot`) and restore the
   state machine from its data.
2. Persist `rd.entries` and `rd.hard_state` (if not None); fsync if `rd.must_sync`. Mirror
   them into the MemoryStorage (`storage.append(rd.entries)`, `storage.set_hard_state`).
3. Only then send `rd.messages`. (A leader may send its MsgApp messages before its own fsync
   completes, thesis §10.2.1, because a leader counts itself for commit only through its
   Ready being advanced; every other message, votes and acks above all, must wait.)
4. Apply `rd.committed_entries` in order (they may include entries of this same Ready, so
   never before step 2). For a CONF_CHANGE entry, call `apply_conf_change`.
5. Answer waiting linearizable reads from `rd.read_states` once applied >= index.
6. Call `advance(rd)`. Do not call `ready()` again before that (it raises). A driver that
   applies committed entries later calls `advance(rd, apply_later=True)` and then
   `applied_to(index)` once they are applied.

Everything the node says in Ready N+1 (commit indexes, votes, acks) assumes Ready N was
persisted; that is why a leader's MsgApp may overtake its own fsync but nothing else may.

Starting: a founding member calls `bootstrap(peers)` on empty storage; a joining member
starts on empty storage without bootstrapping. Restarting: rebuild the MemoryStorage from
the WAL (`apply_snapshot`, `append`, `set_hard_state`), set `Config.applied` to what the
state machine has applied (at least the snapshot index). The core rebuilds membership from
the snapshot's ConfState plus the CONF_CHANGE entries up to `applied`; committed entries
after `applied` come back in `committed_entries` and must be applied (conf changes again
through `apply_conf_change`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from raft.core.config import Config
from raft.core.errors import ProposalDroppedError, RaftError
from raft.core.raft import Raft
from raft.core.storage import Storage
from raft.core.types import (
    LOCAL_MESSAGES,
    NONE,
    RESPONSE_MESSAGES,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    Snapshot,
    SoftState,
    StateRole,
)


@dataclass(slots=True)
class Ready:
    """What the node needs done. Handle every field, then call `RawNode.advance(rd)`.

    - soft_state: new leader/role, or None if unchanged. Informational; never persisted.
    - hard_state: term/vote/commit to persist, or None if unchanged. Persist BEFORE sending
      `messages` (a vote or term must be durable before anyone hears of it).
    - read_states: answers to `read_index` calls; a read with context ctx may be served once
      the state machine has applied `index`.
    - entries: to append to stable storage BEFORE sending `messages` (they may overwrite a
      tail with the same or higher indexes).
    - snapshot: to persist and install, if not None.
    - committed_entries: to apply to the state machine, in order, after persisting.
    - messages: to send to `msg.to` after persisting (see the module docstring for the
      leader's MsgApp exception). Losing or reordering them is safe; resending is safe.
    - must_sync: whether the persist of this Ready must be fsynced (entries, term or vote
      changed; a commit index change alone need not be).
    """

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    read_states: list[ReadState] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    committed_entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    must_sync: bool = False


@dataclass(slots=True, frozen=True)
class PeerProgress:
    match: int
    next: int
    state: str
    is_learner: bool
    recent_active: bool
    paused: bool
    inflight: int


@dataclass(slots=True, frozen=True)
class Status:
    id: int
    term: int
    vote: int
    commit: int
    lead: int
    role: StateRole
    applied: int
    lead_transferee: int
    conf_state: ConfState
    progress: dict[int, PeerProgress] | None  # only on the leader


class RawNode:
    """One Raft member. Not thread-safe: drive it from one task/thread."""

    __slots__ = ("_outstanding", "_prev_hard", "_prev_soft", "raft")

    def __init__(self, config: Config, storage: Storage) -> None:
        self.raft = Raft(config, storage)
        self._prev_soft = self.raft.soft_state()
        self._prev_hard = self.raft.hard_state()
        self._outstanding = False

    def bootstrap(self, peers: list[int], contexts: Mapping[int, bytes] | None = None) -> None:
        """Start a brand-new cluster whose voters are `peers` (call on every founding member).

        Like etcd's RawNode.Bootstrap: requires empty storage; appends one ADD_NODE conf change
        entry per peer at term 1, marks them committed and applies them to the tracker. The
        first Ready carries them as entries to persist and as committed entries, which the
        driver applies (calling `apply_conf_change`, which is idempotent here) like any other.
        A member joining an existing cluster does not bootstrap: it starts empty and is sent
        the log or a snapshot by the leader once the cluster added it. `contexts` gives each
        peer's conf change its context (what the application records about the member).
        """
        r = self.raft
        if r.raft_log.last_index() != 0 or not r.hard_state().is_empty():
            raise RaftError("can't bootstrap a non-empty storage")
        if not peers:
            raise RaftError("must provide at least one peer to bootstrap")
        self._prev_hard = HardState()
        r.become_follower(1, NONE)
        ents = [
            Entry(
                1,
                i + 1,
                EntryType.CONF_CHANGE,
                ConfChange(ConfChangeType.ADD_NODE, pid, (contexts or {}).get(pid, b"")).encode(),
            )
            for i, pid in enumerate(peers)
        ]
        r.raft_log.append(ents)
        r.raft_log.committed = len(ents)
        for pid in peers:
            r.apply_conf_change(ConfChange(ConfChangeType.ADD_NODE, pid))

    # -- inputs -------------------------------------------------------------------------------

    def tick(self) -> None:
        """Advance logical time by one tick (election and heartbeat timeouts count ticks)."""
        self.raft.tick()

    def campaign(self) -> None:
        """Start an election now (with PreVote if configured), as if the timeout fired."""
        self.raft.step(Message(MessageType.HUP, frm=self.raft.id))

    def propose(self, data: bytes) -> None:
        """Propose data for the log. Raises ProposalDroppedError if it cannot be taken now.

        Success means only that it was appended or forwarded; it is committed when it comes
        back in committed_entries (the driver matches it, e.g. by a request id in data).
        """
        r = self.raft
        r.step(Message(MessageType.PROP, frm=r.id, entries=[Entry(0, 0, EntryType.NORMAL, data)]))

    def propose_conf_change(self, cc: ConfChange) -> None:
        """Propose a single-step membership change; refused while another one is unapplied."""
        r = self.raft
        r.step(Message(MessageType.PROP, frm=r.id, entries=[Entry(0, 0, EntryType.CONF_CHANGE, cc.encode())]))

    def step(self, msg: Message) -> None:
        """Feed a message received from a peer. Local-only types and stray responses are dropped."""
        if msg.type in LOCAL_MESSAGES:
            return
        r = self.raft
        if msg.type in RESPONSE_MESSAGES and msg.frm not in r.prs.progress:
            return
        # A forwarded proposal or read we cannot take is dropped: the origin times out and retries.
        with contextlib.suppress(ProposalDroppedError):
            r.step(msg)

    def read_index(self, ctx: bytes) -> None:
        """Ask for a linearizable read point; the answer is a ReadState(index, ctx) in a later Ready.

        ctx must be unique among outstanding requests. Raises ProposalDroppedError when there
        is no known leader. A request may also be lost (leader change, dropped message): the
        driver must time out and retry with a fresh ctx.
        """
        r = self.raft
        r.step(Message(MessageType.READ_INDEX, frm=r.id, context=ctx))

    def transfer_leader(self, transferee: int) -> None:
        """Ask the leader to hand leadership to `transferee` (thesis §3.10)."""
        self.raft.step(Message(MessageType.TRANSFER_LEADER, frm=transferee))

    def report_unreachable(self, node_id: int) -> None:
        """The transport failed to send to node_id; the leader falls back to probing it."""
        self.raft.step(Message(MessageType.UNREACHABLE, frm=node_id))

    def report_snapshot(self, node_id: int, ok: bool) -> None:
        """The transport finished (ok) or failed to send the MsgSnap to node_id."""
        self.raft.step(Message(MessageType.SNAP_STATUS, frm=node_id, reject=not ok))

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Apply a committed conf change (the driver calls this when applying its entry)."""
        return self.raft.apply_conf_change(cc)

    # -- outputs ------------------------------------------------------------------------------

    def has_ready(self) -> bool:
        r = self.raft
        log = r.raft_log
        if r.lead != self._prev_soft.lead or r.role != self._prev_soft.role:
            return True
        ph = self._prev_hard
        if r.term != ph.term or r.vote != ph.vote or log.committed != ph.commit:
            return True
        u = log.unstable
        if u.snapshot is not None or u.entries:
            return True
        return bool(r.has_pending_output() or r.read_states or log.has_next_ents())

    def ready(self) -> Ready:
        if self._outstanding:
            raise RaftError("ready() called again before advance() of the previous Ready")
        r = self.raft
        log = r.raft_log
        rd = Ready()
        rd.messages = r.read_messages()
        rd.entries = log.unstable_entries()
        rd.committed_entries = log.next_ents()
        soft = r.soft_state()
        if soft != self._prev_soft:
            rd.soft_state = soft
            self._prev_soft = soft
        hard = r.hard_state()
        ph = self._prev_hard
        if hard != ph:
            rd.hard_state = hard
        if r.read_states:
            rd.read_states = r.read_states
            r.read_states = []
        rd.snapshot = log.unstable.snapshot
        rd.must_sync = bool(rd.entries) or hard.term != ph.term or hard.vote != ph.vote
        self._outstanding = True
        return rd

    def advance(self, rd: Ready, apply_later: bool = False) -> None:
        """Tell the node the Ready was handled: persisted, sent, and its committed entries applied.

        With apply_later, the committed entries were only handed to the application, which
        applies them later and then reports it with `applied_to` (as etcd-io/raft's
        asynchronous application). Until then the node counts them as unapplied: a leader
        takes no further conf change and a node does not campaign while one of them is a
        conf change, and they are not handed out again.
        """
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
        r = self.raft
        handed = rd.committed_entries[-1].index if rd.committed_entries else 0
        snap = rd.snapshot.metadata.index if rd.snapshot is not None else 0
        if apply_later:
            if handed:
                r.raft_log.applying_to(handed)
            applied = snap
        else:
            applied = handed or snap
        if rd.committed_entries and r.max_uncommitted_size > 0 and r.role == StateRole.LEADER:
            r.reduce_uncommitted_size(rd.committed_entries)
        r.advance(applied, rd.entries[-1] if rd.entries else None, snap)
        self._outstanding = False

    def applied_to(self, index: int) -> None:
        """The application applied every entry handed out up to index (after `advance(rd, apply_later=True)`)."""
        log = self.raft.raft_log
        if index > log.applying:
            raise RaftError(f"applied_to({index}) beyond the entries handed out (up to {log.applying})")
        if index > log.applied:
            log.applied_to(index)

    # -- inspection ---------------------------------------------------------------------------

    @property
    def id(self) -> int:
        return self.raft.id

    @property
    def lead(self) -> int:
        """The current leader's id as this node knows it (NONE if unknown). Cheap."""
        return self.raft.lead

    @property
    def term(self) -> int:
        """The current term. Cheap: servers put it in every response header."""
        return self.raft.term

    @property
    def role(self) -> StateRole:
        return self.raft.role

    def status(self) -> Status:
        r = self.raft
        progress = None
        if r.role == StateRole.LEADER:
            progress = {
                pid: PeerProgress(
                    pr.match,
                    pr.next,
                    pr.state.name,
                    pr.is_learner,
                    pr.recent_active,
                    pr.is_paused(),
                    pr.inflights.count(),
                )
                for pid, pr in sorted(r.prs.progress.items())
            }
        return Status(
            r.id,
            r.term,
            r.vote,
            r.raft_log.committed,
            r.lead,
            r.role,
            r.raft_log.applied,
            r.lead_transferee,
            r.prs.conf_state(),
            progress,
        )
