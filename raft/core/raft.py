"""Raft: the consensus state machine of one node (roles, terms, votes, replication, commit).

Everything enters through `step` (messages, including local ones made from ticks) and
leaves through `msgs`/`read_states`/the log, which RawNode turns into a Ready. Each role has
its own step function, installed by `become_*`. Rules cite the Raft paper/thesis sections.

Batching: a leader does not send one MsgApp per proposal. Proposals and commit advances
only mark the broadcast as pending; `flush` (called when messages are read out) sends each
follower one MsgApp holding everything new, within max_size_per_msg and the inflight window.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from raft.core.config import Config, SplitMix64
from raft.core.errors import (
    CompactedError,
    ConfChangeError,
    ProposalDroppedError,
    SnapshotTemporarilyUnavailableError,
    UnavailableError,
)
from raft.core.log import RaftLog
from raft.core.progress import Progress, ProgressState
from raft.core.quorum import VoteResult
from raft.core.read_only import ReadOnly
from raft.core.storage import Storage
from raft.core.tracker import ProgressTracker
from raft.core.types import (
    NONE,
    ConfChange,
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
    vote_resp_type,
)

CAMPAIGN_PRE_ELECTION = b"CampaignPreElection"
CAMPAIGN_ELECTION = b"CampaignElection"
CAMPAIGN_TRANSFER = b"CampaignTransfer"

# Module-level aliases: enum attribute lookups are slow on hot paths.
_HUP = MessageType.HUP
_BEAT = MessageType.BEAT
_PROP = MessageType.PROP
_APP = MessageType.APP
_APP_RESP = MessageType.APP_RESP
_VOTE = MessageType.VOTE
_VOTE_RESP = MessageType.VOTE_RESP
_SNAP = MessageType.SNAP
_HEARTBEAT = MessageType.HEARTBEAT
_HEARTBEAT_RESP = MessageType.HEARTBEAT_RESP
_UNREACHABLE = MessageType.UNREACHABLE
_SNAP_STATUS = MessageType.SNAP_STATUS
_CHECK_QUORUM = MessageType.CHECK_QUORUM
_TRANSFER_LEADER = MessageType.TRANSFER_LEADER
_TIMEOUT_NOW = MessageType.TIMEOUT_NOW
_READ_INDEX = MessageType.READ_INDEX
_READ_INDEX_RESP = MessageType.READ_INDEX_RESP
_PRE_VOTE = MessageType.PRE_VOTE
_PRE_VOTE_RESP = MessageType.PRE_VOTE_RESP
_REPLICATE = ProgressState.REPLICATE
_PROBE = ProgressState.PROBE
_SNAPSHOT = ProgressState.SNAPSHOT
_CONF_CHANGE = EntryType.CONF_CHANGE


class Raft:
    __slots__ = (
        "_bcast_commit",
        "_bcast_pending",
        "_commit_sent",
        "_read_bcast_pending",
        "_step",
        "_tick",
        "check_quorum",
        "disable_proposal_forwarding",
        "election_elapsed",
        "election_timeout",
        "heartbeat_elapsed",
        "heartbeat_timeout",
        "id",
        "is_learner",
        "lead",
        "lead_transferee",
        "max_msg_size",
        "max_uncommitted_size",
        "msgs",
        "pending_conf_index",
        "pending_read_index_messages",
        "pre_vote",
        "prs",
        "raft_log",
        "randomized_election_timeout",
        "read_only",
        "read_states",
        "rng",
        "role",
        "term",
        "uncommitted_size",
        "vote",
    )

    def __init__(self, cfg: Config, storage: Storage) -> None:
        cfg.validate()
        self.id = cfg.id
        self.raft_log = RaftLog(storage, cfg.max_committed_size_per_ready)
        hs, cs = storage.initial_state()
        self.max_msg_size = cfg.max_size_per_msg
        self.max_uncommitted_size = cfg.max_uncommitted_entries_size
        self.check_quorum = cfg.check_quorum
        self.pre_vote = cfg.pre_vote
        self.election_timeout = cfg.election_tick
        self.heartbeat_timeout = cfg.heartbeat_tick
        self.rng = cfg.rng if cfg.rng is not None else SplitMix64(cfg.id)
        self.disable_proposal_forwarding = cfg.disable_proposal_forwarding
        self.read_only = ReadOnly(cfg.read_only_lease_based)
        self.prs = ProgressTracker(cfg.max_inflight_msgs)
        self.term = 0
        self.vote = NONE
        self.lead = NONE
        self.role = StateRole.FOLLOWER
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self.is_learner = False
        self.lead_transferee = NONE
        self.pending_conf_index = 0
        self.uncommitted_size = 0
        self.pending_read_index_messages: list[Message] = []
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = cfg.election_tick
        self._bcast_pending = False
        self._bcast_commit = False
        self._read_bcast_pending = False
        self._commit_sent: dict[int, int] = {}  # peer -> last commit index sent in a MsgApp
        self._step: Callable[[Message], None] = self._step_follower
        self._tick: Callable[[], None] = self._tick_election

        self.prs.restore(cs, self.raft_log.last_index() + 1)
        if not hs.is_empty():
            self._load_state(hs)
        if cfg.applied > 0:
            if cfg.applied > self.raft_log.committed:
                raise AssertionError(f"applied {cfg.applied} is past committed {self.raft_log.committed}")
            if cfg.conf_state is not None:
                self.prs.restore(cfg.conf_state, self.raft_log.last_index() + 1)
            else:
                self._replay_conf_changes(cfg.applied)
            self.raft_log.applied_to(cfg.applied)
        self.is_learner = self.id in self.prs.learners
        self.become_follower(self.term, NONE)

    def _replay_conf_changes(self, applied: int) -> None:
        """Re-apply conf changes the state machine applied after the last snapshot (restart)."""
        lo = self.raft_log.first_index()
        if applied < lo:
            return
        for e in self.raft_log.slice(lo, applied + 1, None):
            if e.type == _CONF_CHANGE:
                with contextlib.suppress(ConfChangeError):  # refused when first applied too
                    self.prs.apply_conf_change(ConfChange.decode(e.data), self.raft_log.last_index() + 1)

    def _load_state(self, hs: HardState) -> None:
        if hs.commit < self.raft_log.committed or hs.commit > self.raft_log.last_index():
            raise AssertionError(
                f"{self.id} hard state commit {hs.commit} out of range "
                f"[{self.raft_log.committed}, {self.raft_log.last_index()}]"
            )
        self.raft_log.committed = hs.commit
        self.term = hs.term
        self.vote = hs.vote

    # -- small accessors ---------------------------------------------------------------------

    def soft_state(self) -> SoftState:
        return SoftState(self.lead, self.role)

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.raft_log.committed)

    def promotable(self) -> bool:
        """Whether this node may campaign: it is a voter of its current configuration."""
        return self.id in self.prs.voters

    def _past_election_timeout(self) -> bool:
        return self.election_elapsed >= self.randomized_election_timeout

    def _reset_randomized_election_timeout(self) -> None:
        # §5.2: randomized timeouts make split votes rare; jitter is injected, never global.
        self.randomized_election_timeout = self.election_timeout + self.rng.randrange(self.election_timeout)

    # -- sending -----------------------------------------------------------------------------

    def send(self, m: Message) -> None:
        if m.frm == NONE:
            m.frm = self.id
        t = m.type
        if t in (_VOTE, _VOTE_RESP, _PRE_VOTE, _PRE_VOTE_RESP):
            if m.term == 0:
                raise AssertionError(f"term should be set when sending {t.name}")
        else:
            if m.term != 0:
                raise AssertionError(f"term should not be set when sending {t.name} (was {m.term})")
            # Proposals and read requests being forwarded stay term-less, like local messages.
            if t != _PROP and t != _READ_INDEX:
                m.term = self.term
        self.msgs.append(m)

    def read_messages(self) -> list[Message]:
        """Flush pending broadcasts and take the queued messages."""
        self.flush()
        msgs = self.msgs
        self.msgs = []
        return msgs

    def has_pending_output(self) -> bool:
        return bool(self.msgs) or self._bcast_pending or self._read_bcast_pending

    def flush(self) -> None:
        """Send the batched broadcasts: one heartbeat for pending reads, then MsgApp per follower."""
        if self.role != StateRole.LEADER:
            self._bcast_pending = self._bcast_commit = self._read_bcast_pending = False
            return
        if self._read_bcast_pending:
            self._read_bcast_pending = False
            self._bcast_heartbeat()
        if self._bcast_pending:
            commit = self._bcast_commit
            self._bcast_pending = self._bcast_commit = False
            for pid in self.prs.progress:
                if pid == self.id:
                    continue
                while self._maybe_send_append(pid, False):
                    pass
                # Commit-only MsgApp, unless this peer was already told this commit index.
                if commit and self._commit_sent.get(pid) != self.raft_log.committed:
                    self._maybe_send_append(pid, True)

    def _bcast_append(self, commit: bool = True) -> None:
        self._bcast_pending = True
        if commit:
            self._bcast_commit = True

    def send_append(self, to: int) -> None:
        self._maybe_send_append(to, True)

    def _maybe_send_append(self, to: int, send_if_empty: bool) -> bool:
        """Send one MsgApp (or MsgSnap when the entries are compacted) to `to`, if flow control allows."""
        pr = self.prs.progress[to]
        if pr.is_paused():
            return False
        log = self.raft_log
        try:
            prev_term = log.term(pr.next - 1)
            ents = log.entries(pr.next, self.max_msg_size)
        except (CompactedError, UnavailableError):
            return self._send_snapshot(to)
        if not ents and not send_if_empty:
            return False
        m = Message(_APP, to=to, index=pr.next - 1, log_term=prev_term, commit=log.committed)
        self._commit_sent[to] = log.committed
        if ents:
            m.entries = ents
            if pr.state == _REPLICATE:
                # §10.2.1 pipelining: assume success, bounded by the inflight window.
                last = ents[-1].index
                pr.optimistic_update(last)
                pr.inflights.add(last)
            elif pr.state == _PROBE:
                pr.probe_sent = True
            else:
                raise AssertionError(f"{self.id} sending append to {to} in state {pr.state.name}")
        self.send(m)
        return True

    def _send_snapshot(self, to: int) -> bool:
        pr = self.prs.progress[to]
        if not pr.recent_active:
            return False
        try:
            snap = self.raft_log.snapshot()
        except SnapshotTemporarilyUnavailableError:
            return False
        if snap.is_empty():
            raise AssertionError("need a non-empty snapshot")
        pr.become_snapshot(snap.metadata.index)
        self.send(Message(_SNAP, to=to, snapshot=snap))
        return True

    def _send_heartbeat(self, to: int, ctx: bytes) -> None:
        # Never tell a follower to commit past what it is known to hold (Figure 2: commit
        # is min(leaderCommit, index of last new entry)).
        commit = min(self.prs.progress[to].match, self.raft_log.committed)
        self.send(Message(_HEARTBEAT, to=to, commit=commit, context=ctx))

    def _bcast_heartbeat(self) -> None:
        ctx = self.read_only.last_pending_request_ctx()
        for pid in self.prs.progress:
            if pid != self.id:
                self._send_heartbeat(pid, ctx)

    # -- state transitions ---------------------------------------------------------------------

    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_election_timeout()
        self.lead_transferee = NONE
        self.prs.reset_votes()
        last = self.raft_log.last_index()
        for pid, pr in self.prs.progress.items():
            pr.match = last if pid == self.id else 0
            pr.next = last + 1
            pr.state = _PROBE
            pr.probe_sent = False
            pr.pending_snapshot = 0
            pr.recent_active = False
            pr.inflights.reset()
        self.pending_conf_index = 0
        self.uncommitted_size = 0
        self.read_only = ReadOnly(self.read_only.lease_based)
        self.pending_read_index_messages = []
        self._bcast_pending = self._bcast_commit = self._read_bcast_pending = False
        self._commit_sent = {}

    def become_follower(self, term: int, lead: int) -> None:
        self._step = self._step_follower
        self._reset(term)
        self._tick = self._tick_election
        self.lead = lead
        self.role = StateRole.FOLLOWER

    def become_candidate(self) -> None:
        if self.role == StateRole.LEADER:
            raise AssertionError("invalid transition [leader -> candidate]")
        self._step = self._step_candidate
        self._reset(self.term + 1)
        self._tick = self._tick_election
        self.vote = self.id
        self.role = StateRole.CANDIDATE

    def become_pre_candidate(self) -> None:
        # §9.6: a pre-candidate changes neither its term nor its vote.
        if self.role == StateRole.LEADER:
            raise AssertionError("invalid transition [leader -> pre-candidate]")
        self._step = self._step_candidate
        self.prs.reset_votes()
        self._tick = self._tick_election
        self.lead = NONE
        self.role = StateRole.PRE_CANDIDATE

    def become_leader(self) -> None:
        if self.role == StateRole.FOLLOWER:
            raise AssertionError("invalid transition [follower -> leader]")
        self._step = self._step_leader
        self._reset(self.term)
        self._tick = self._tick_heartbeat
        self.lead = self.id
        self.role = StateRole.LEADER
        pr = self.prs.progress.get(self.id)
        if pr is not None:
            # The leader's own log is its match; it never needs probing.
            pr.become_replicate()
            pr.recent_active = True
        # Conservatively assume the tail may hold an unapplied conf change.
        self.pending_conf_index = self.raft_log.last_index()
        # §5.4.2 / thesis §6.4: an empty entry of the new term lets earlier entries commit
        # and tells the leader what is committed (needed before serving ReadIndex).
        if not self._append_entry([Entry(0, 0)]):
            raise AssertionError("empty entry was dropped")
        # The empty entry does not count towards the uncommitted size limit.
        self.uncommitted_size = 0
        self._bcast_append()

    def _campaign(self, kind: bytes) -> None:
        if not self.promotable():
            return
        if kind == CAMPAIGN_PRE_ELECTION:
            self.become_pre_candidate()
            vote_msg = _PRE_VOTE
            # PreVote asks for the next term without incrementing ours (§9.6).
            term = self.term + 1
        else:
            self.become_candidate()
            vote_msg = _VOTE
            term = self.term
        if self._poll(self.id, vote_resp_type(vote_msg), True) == VoteResult.WON:
            # A single-voter cluster wins on its own vote.
            if kind == CAMPAIGN_PRE_ELECTION:
                self._campaign(CAMPAIGN_ELECTION)
            else:
                self.become_leader()
            return
        last = self.raft_log.last_index()
        last_term = self.raft_log.last_term()
        ctx = CAMPAIGN_TRANSFER if kind == CAMPAIGN_TRANSFER else b""
        for vid in sorted(self.prs.voters):
            if vid == self.id:
                continue
            self.send(Message(vote_msg, to=vid, term=term, index=last, log_term=last_term, context=ctx))

    def _poll(self, node_id: int, t: MessageType, granted: bool) -> VoteResult:
        self.prs.record_vote(node_id, granted)
        return self.prs.tally_votes()[2]

    # -- ticks -----------------------------------------------------------------------------------

    def tick(self) -> None:
        self._tick()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable() and self._past_election_timeout():
            self.election_elapsed = 0
            self.step(Message(_HUP, frm=self.id))

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.election_timeout:
            self.election_elapsed = 0
            if self.check_quorum:
                self.step(Message(_CHECK_QUORUM, frm=self.id))
            # A transfer that did not finish within an election timeout is abandoned (§3.10).
            if self.role == StateRole.LEADER and self.lead_transferee != NONE:
                self.lead_transferee = NONE
        if self.role != StateRole.LEADER:
            return
        if self.heartbeat_elapsed >= self.heartbeat_timeout:
            self.heartbeat_elapsed = 0
            self.step(Message(_BEAT, frm=self.id))

    # -- log helpers -------------------------------------------------------------------------------

    def _append_entry(self, ents: list[Entry]) -> bool:
        log = self.raft_log
        li = log.last_index()
        t = self.term
        new = [Entry(t, li + 1 + i, e.type, e.data) for i, e in enumerate(ents)]
        if self.max_uncommitted_size > 0 and not self._increase_uncommitted_size(new):
            return False
        li = log.append(new)
        pr = self.prs.progress.get(self.id)
        if pr is not None:
            pr.maybe_update(li)
        self._maybe_commit()
        return True

    def _increase_uncommitted_size(self, ents: list[Entry]) -> bool:
        s = 0
        for e in ents:
            s += len(e.data)
        if self.uncommitted_size > 0 and s > 0 and self.uncommitted_size + s > self.max_uncommitted_size:
            return False
        self.uncommitted_size += s
        return True

    def reduce_uncommitted_size(self, ents: list[Entry]) -> None:
        if self.uncommitted_size == 0:
            return
        s = 0
        for e in ents:
            s += len(e.data)
        self.uncommitted_size = 0 if s > self.uncommitted_size else self.uncommitted_size - s

    def _maybe_commit(self) -> bool:
        """Advance commit to what a majority holds, if that entry is of our term (§5.4.2)."""
        if not self.raft_log.maybe_commit(self.prs.committed(), self.term):
            return False
        self._bcast_append(commit=True)
        if self.pending_read_index_messages and self._committed_entry_in_current_term():
            pending = self.pending_read_index_messages
            self.pending_read_index_messages = []
            for m in pending:
                self._handle_read_index_as_leader(m)
        return True

    def _committed_entry_in_current_term(self) -> bool:
        return self.raft_log.term_or_zero(self.raft_log.committed) == self.term

    # -- the single entry point --------------------------------------------------------------------

    def step(self, m: Message) -> None:
        """Process one message. Raises ProposalDroppedError for a proposal that cannot be taken."""
        t = m.type
        # Figure 2, "Rules for all servers": a higher term turns us into a follower.
        if m.term == 0:
            pass  # local message
        elif m.term > self.term:
            if t in (_VOTE, _PRE_VOTE):
                force = m.context == CAMPAIGN_TRANSFER
                in_lease = self.check_quorum and self.lead != NONE and self.election_elapsed < self.election_timeout
                if not force and in_lease:
                    # Thesis §4.2.3: with a live leader, ignore disruptive vote requests
                    # (do not even update the term).
                    return
            if t == _PRE_VOTE:
                pass  # never change our term in response to a PreVote
            elif t == _PRE_VOTE_RESP and not m.reject:
                # A granted PreVote carries the future term we asked for; we bump the term
                # only when we win the pre-election.
                pass
            elif t in (_APP, _HEARTBEAT, _SNAP):
                self.become_follower(m.term, m.frm)
            else:
                self.become_follower(m.term, NONE)
        elif m.term < self.term:
            if (self.check_quorum or self.pre_vote) and (t in (_HEARTBEAT, _APP)):
                # A stale leader (or one whose term we passed while partitioned) learns our
                # term from this reply, so a node stuck at a higher term is freed.
                self.send(Message(_APP_RESP, to=m.frm))
            elif t == _PRE_VOTE:
                self.send(Message(_PRE_VOTE_RESP, to=m.frm, term=self.term, reject=True))
            return

        if t == _HUP:
            self._hup()
        elif t in (_VOTE, _PRE_VOTE):
            self._handle_vote_request(m)
        else:
            self._step(m)

    def _hup(self) -> None:
        if self.role == StateRole.LEADER:
            return
        if not self.promotable():
            return
        log = self.raft_log
        if log.committed > log.applied:
            # A node may not campaign while it has committed, unapplied conf changes: it
            # might not be a voter (or the voter set may differ) once they apply.
            for e in log.slice(log.applied + 1, log.committed + 1, None):
                if e.type == _CONF_CHANGE:
                    return
        self._campaign(CAMPAIGN_PRE_ELECTION if self.pre_vote else CAMPAIGN_ELECTION)

    def campaign_transfer(self) -> None:
        self._campaign(CAMPAIGN_TRANSFER)

    def _handle_vote_request(self, m: Message) -> None:
        # §5.2 / §5.4.1: grant at most one vote per term, and only to an up-to-date log.
        can_vote = (
            self.vote == m.frm
            or (self.vote == NONE and self.lead == NONE)
            or (m.type == _PRE_VOTE and m.term > self.term)
        )
        if can_vote and self.raft_log.is_up_to_date(m.index, m.log_term):
            # Reply with the term of the request (for a PreVote, a future term), so the
            # candidate does not drop our answer as stale.
            # A learner answers too: it may have been promoted without knowing it yet; its
            # answer only counts for a candidate whose configuration lists it as a voter.
            self.send(Message(vote_resp_type(m.type), to=m.frm, term=m.term))
            if m.type == _VOTE:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self.send(Message(vote_resp_type(m.type), to=m.frm, term=self.term, reject=True))

    # -- leader ------------------------------------------------------------------------------------

    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t == _BEAT:
            self._bcast_heartbeat()
            return
        if t == _CHECK_QUORUM:
            pr = self.prs.progress.get(self.id)
            if pr is not None:
                pr.recent_active = True
            if not self.prs.quorum_active():
                # Thesis §6.2: a leader that cannot reach a quorum steps down.
                self.become_follower(self.term, NONE)
                return
            for pid, pr in self.prs.progress.items():
                if pid != self.id:
                    pr.recent_active = False
            return
        if t == _PROP:
            self._leader_propose(m)
            return
        if t == _READ_INDEX:
            if self.prs.is_singleton() and self.id in self.prs.voters:
                self._respond_read_index(m, self.raft_log.committed)
            elif not self._committed_entry_in_current_term():
                # Thesis §6.4 step 1: the leader must know the commit index of its term first.
                self.pending_read_index_messages.append(m)
            else:
                self._handle_read_index_as_leader(m)
            return

        pr = self.prs.progress.get(m.frm)
        if pr is None:
            return  # from a node not in our configuration: ignore
        if t == _APP_RESP:
            self._handle_app_resp(m, pr)
        elif t == _HEARTBEAT_RESP:
            pr.recent_active = True
            pr.probe_sent = False
            # Free one slot of a full window so a stalled follower can make progress.
            if pr.state == _REPLICATE and pr.inflights.full():
                pr.inflights.free_first_one()
            if pr.match < self.raft_log.last_index():
                self.send_append(m.frm)
            if self.read_only.lease_based or not m.context:
                return
            acks = self.read_only.recv_ack(m.frm, m.context)
            if acks is None:
                return
            granted = sum(1 for v in self.prs.voters if v in acks)
            if granted < len(self.prs.voters) // 2 + 1:
                return
            for rs in self.read_only.advance(m.context):
                self._respond_read_index(rs.req, rs.index)
        elif t == _SNAP_STATUS:
            if pr.state != _SNAPSHOT:
                return
            if not m.reject:
                pr.become_probe()
            else:
                pr.pending_snapshot = 0
                pr.become_probe()
            # Wait for the follower's MsgAppResp (success) or a heartbeat interval (failure).
            pr.probe_sent = True
        elif t == _UNREACHABLE:
            # While pipelining, an unreachable follower probably lost a MsgApp.
            if pr.state == _REPLICATE:
                pr.become_probe()
        elif t == _TRANSFER_LEADER:
            self._leader_transfer(m, pr)

    def _leader_propose(self, m: Message) -> None:
        if not m.entries:
            raise AssertionError(f"{self.id} stepped an empty proposal")
        if self.id not in self.prs.progress:
            raise ProposalDroppedError("this leader was removed from the configuration")
        if self.lead_transferee != NONE:
            raise ProposalDroppedError(f"leadership transfer to {self.lead_transferee} in progress")
        ents = m.entries
        for i, e in enumerate(ents):
            if e.type != _CONF_CHANGE:
                continue
            if self.pending_conf_index > self.raft_log.applied:
                # Thesis §4.1: one membership change at a time. A local lone proposal is
                # refused loudly; inside a forwarded batch it becomes an empty entry.
                if m.frm in (NONE, self.id) and len(ents) == 1:
                    raise ProposalDroppedError(
                        f"conf change pending at index {self.pending_conf_index} (applied {self.raft_log.applied})"
                    )
                ents = list(ents)
                ents[i] = Entry(0, 0)
            else:
                self.pending_conf_index = self.raft_log.last_index() + i + 1
        if not self._append_entry(ents):
            raise ProposalDroppedError("too many uncommitted bytes")
        self._bcast_append(commit=False)

    def _handle_app_resp(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        if m.reject:
            # §5.3 with etcd's optimisation: the follower hints (index, term) of its last entry
            # with term <= the rejected one; skip to our last entry with a term <= that.
            next_probe = m.reject_hint
            if m.log_term > 0:
                next_probe, _ = self.raft_log.find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decr_to(m.index, next_probe):
                if pr.state == _REPLICATE:
                    pr.become_probe()
                self.send_append(m.frm)
            return
        old_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        if pr.state == _PROBE:
            pr.become_replicate()
        elif pr.state == _SNAPSHOT and pr.match >= pr.pending_snapshot:
            pr.become_probe()
            pr.become_replicate()
        elif pr.state == _REPLICATE:
            pr.inflights.free_le(m.index)
        if not self._maybe_commit() and old_paused:
            # It may be missing the commit index; tell it now.
            self.send_append(m.frm)
        # Refill the window with whatever is still unsent.
        while self._maybe_send_append(m.frm, False):
            pass
        if m.frm == self.lead_transferee and pr.match == self.raft_log.last_index():
            self.send(Message(_TIMEOUT_NOW, to=m.frm))

    def _leader_transfer(self, m: Message, pr: Progress) -> None:
        transferee = m.frm
        if pr.is_learner:
            return
        if self.lead_transferee != NONE:
            if self.lead_transferee == transferee:
                return
            self.lead_transferee = NONE
        if transferee == self.id:
            return
        # Thesis §3.10: the transfer must finish within an election timeout.
        self.election_elapsed = 0
        self.lead_transferee = transferee
        if pr.match == self.raft_log.last_index():
            self.send(Message(_TIMEOUT_NOW, to=transferee))
        else:
            self.send_append(transferee)

    def _handle_read_index_as_leader(self, m: Message) -> None:
        if self.read_only.lease_based:
            self._respond_read_index(m, self.raft_log.committed)
            return
        # Thesis §6.4 steps 2-3: record the commit index, confirm leadership with a heartbeat
        # round (batched: one heartbeat per follower per flush, carrying the newest context).
        self.read_only.add_request(self.raft_log.committed, m)
        self.read_only.recv_ack(self.id, m.context)
        self._read_bcast_pending = True

    def _respond_read_index(self, req: Message, index: int) -> None:
        if req.frm == NONE or req.frm == self.id:
            self.read_states.append(ReadState(index, req.context))
        else:
            self.send(Message(_READ_INDEX_RESP, to=req.frm, index=index, context=req.context))

    # -- candidate -----------------------------------------------------------------------------------

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        my_resp = _PRE_VOTE_RESP if self.role == StateRole.PRE_CANDIDATE else _VOTE_RESP
        if t == _PROP:
            raise ProposalDroppedError(f"no leader at term {self.term}")
        if t == _APP:
            self.become_follower(m.term, m.frm)
            self._handle_append_entries(m)
        elif t == _HEARTBEAT:
            self.become_follower(m.term, m.frm)
            self._handle_heartbeat(m)
        elif t == _SNAP:
            self.become_follower(m.term, m.frm)
            self._handle_snapshot(m)
        elif t == my_resp:
            res = self._poll(m.frm, t, not m.reject)
            if res == VoteResult.WON:
                if self.role == StateRole.PRE_CANDIDATE:
                    self._campaign(CAMPAIGN_ELECTION)
                else:
                    self.become_leader()
            elif res == VoteResult.LOST:
                # A PreVoteResp may carry a future term; keep ours.
                self.become_follower(self.term, NONE)
        elif t == _READ_INDEX:
            raise ProposalDroppedError(f"no leader at term {self.term}")

    # -- follower ------------------------------------------------------------------------------------

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t == _APP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_append_entries(m)
        elif t == _HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_heartbeat(m)
        elif t == _PROP:
            if self.lead == NONE:
                raise ProposalDroppedError(f"no leader at term {self.term}")
            if self.disable_proposal_forwarding:
                raise ProposalDroppedError("proposal forwarding is disabled")
            if m.frm != self.id:
                # forwarded to us by a follower that thought we lead: dropped, not forwarded again. A
                # peer may only send messages from itself (the transport refuses, and resets, a
                # connection that carries one "from" another member), and the proposer retries.
                return
            self.send(Message(_PROP, to=self.lead, frm=m.frm, entries=m.entries))
        elif t == _SNAP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_snapshot(m)
        elif t == _TRANSFER_LEADER:
            # Only a request for this member itself is forwarded: one naming another member would
            # go out "from" that member (the transferee is the message's sender), which the
            # transport refuses; and one forwarded to us by a peer that thought we lead is dropped,
            # as proposals are. The caller's wait times out and it asks the leader.
            if self.lead != NONE and m.frm == self.id:
                self.send(Message(_TRANSFER_LEADER, to=self.lead, frm=m.frm))
        elif t == _TIMEOUT_NOW:
            # Thesis §3.10: start an election at once, skipping PreVote and the lease check.
            self._campaign(CAMPAIGN_TRANSFER)
        elif t == _READ_INDEX:
            if self.lead == NONE:
                raise ProposalDroppedError(f"no leader at term {self.term}")
            if m.frm != self.id:
                return  # a peer's read request forwarded to us: dropped, as a forwarded proposal is
            self.send(Message(_READ_INDEX, to=self.lead, frm=m.frm, context=m.context))
        elif t == _READ_INDEX_RESP:
            self.read_states.append(ReadState(m.index, m.context))

    def _handle_append_entries(self, m: Message) -> None:
        log = self.raft_log
        if m.index < log.committed:
            self.send(Message(_APP_RESP, to=m.frm, index=log.committed))
            return
        last_new = log.maybe_append(m.index, m.log_term, m.commit, m.entries)  # type: ignore[arg-type]
        if last_new is not None:
            self.send(Message(_APP_RESP, to=m.frm, index=last_new))
            return
        # Figure 2 receiver rule 2 failed: our log lacks (index, log_term). Hint where the
        # logs may match so the leader can skip a whole conflicting term at once.
        hint_index = min(m.index, log.last_index())
        hint_index, hint_term = log.find_conflict_by_term(hint_index, m.log_term)
        self.send(Message(_APP_RESP, to=m.frm, index=m.index, reject=True, reject_hint=hint_index, log_term=hint_term))

    def _handle_heartbeat(self, m: Message) -> None:
        self.raft_log.commit_to(m.commit)
        self.send(Message(_HEARTBEAT_RESP, to=m.frm, context=m.context))

    def _handle_snapshot(self, m: Message) -> None:
        snap = m.snapshot
        if snap is None:
            return
        if self._restore(snap):
            self.send(Message(_APP_RESP, to=m.frm, index=self.raft_log.last_index()))
        else:
            self.send(Message(_APP_RESP, to=m.frm, index=self.raft_log.committed))

    def _restore(self, snap: Snapshot) -> bool:
        """Install a snapshot from the leader (thesis §5.1). False if it was stale or unusable."""
        md = snap.metadata
        log = self.raft_log
        if md.index <= log.committed:
            return False
        if self.role != StateRole.FOLLOWER:
            self.become_follower(self.term + 1, NONE)
            return False
        cs = md.conf_state
        # Unlike etcd we accept a snapshot whose ConfState does not list us: a member that
        # joins after the leader's last snapshot gets exactly that, and learns of its own
        # addition from the entries after it. Until then it is no voter here: it never
        # campaigns, and its vote only counts for candidates that already list it.
        if log.match_term(md.index, md.term):
            # We already hold the entry the snapshot ends with: just commit up to it.
            log.commit_to(md.index)
            return False
        log.restore(snap)
        self.prs.restore(cs, log.last_index() + 1)
        self.is_learner = self.id in self.prs.learners
        pr = self.prs.progress.get(self.id)
        if pr is not None:
            pr.maybe_update(pr.next - 1)
        return True

    # -- membership ------------------------------------------------------------------------------------

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Apply a committed single-step conf change to the tracker (called when the driver applies it).

        Raises ConfChangeError, changing nothing, for a change ``raft.core.confchange`` refuses.
        """
        self.prs.apply_conf_change(cc, self.raft_log.last_index() + 1)
        return self._switch_to_config()

    def _switch_to_config(self) -> ConfState:
        cs = self.prs.conf_state()
        self.is_learner = self.id in self.prs.learners
        if self.role != StateRole.LEADER:
            return cs
        if self.id not in self.prs.voters:
            # Thesis §4.2.2: a leader removed from the configuration steps down once the
            # change is committed. Hand over to an up-to-date voter so nobody waits a timeout.
            last = self.raft_log.last_index()
            for vid in sorted(self.prs.voters):
                if self.prs.progress[vid].match == last:
                    self.send(Message(_TIMEOUT_NOW, to=vid))
                    break
            self.become_follower(self.term, NONE)
            return cs
        if not self._maybe_commit():
            # Probe newly added members at once instead of waiting for a heartbeat.
            self._bcast_append(commit=False)
        if self.lead_transferee != NONE and self.lead_transferee not in self.prs.voters:
            self.lead_transferee = NONE
        return cs

    # -- after a Ready ---------------------------------------------------------------------------------

    def advance(self, applied_to: int, stable: Entry | None, snap_index: int) -> None:
        if applied_to:
            self.raft_log.applied_to(applied_to)
        if stable is not None:
            self.raft_log.stable_to(stable.index, stable.term)
        if snap_index:
            self.raft_log.stable_snap_to(snap_index)
