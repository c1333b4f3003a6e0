"""ProgressTracker: the membership (voters, learners), each member's Progress, and votes.

Membership changes are single-step (thesis §4.1): one server added, promoted or removed
at a time, so the old and new majorities always overlap and no joint consensus is needed.
"""

from __future__ import annotations

from raft.core import quorum
from raft.core.progress import Progress
from raft.core.types import ConfChange, ConfChangeType, ConfState


class ProgressTracker:
    __slots__ = ("learners", "max_inflight", "progress", "voters", "votes")

    def __init__(self, max_inflight: int) -> None:
        self.max_inflight = max_inflight
        self.voters: set[int] = set()
        self.learners: set[int] = set()
        self.progress: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}

    def conf_state(self) -> ConfState:
        return ConfState(tuple(sorted(self.voters)), tuple(sorted(self.learners)))

    def is_singleton(self) -> bool:
        return len(self.voters) == 1

    # -- commit and votes ------------------------------------------------------------------

    def committed(self) -> int:
        prs = self.progress
        return quorum.committed_index(self.voters, {v: prs[v].match for v in self.voters})

    def reset_votes(self) -> None:
        self.votes = {}

    def record_vote(self, node_id: int, granted: bool) -> None:
        """Only the first answer of each node in an election counts."""
        if node_id not in self.votes:
            self.votes[node_id] = granted

    def tally_votes(self) -> tuple[int, int, quorum.VoteResult]:
        granted = rejected = 0
        for node_id, v in self.votes.items():
            if node_id not in self.voters:
                continue
            if v:
                granted += 1
            else:
                rejected += 1
        return granted, rejected, quorum.vote_result(self.voters, self.votes)

    def quorum_active(self) -> bool:
        """Whether a majority of voters was heard from recently (CheckQuorum, thesis §6.2)."""
        prs = self.progress
        active = {v: prs[v].recent_active for v in self.voters if v in prs}
        return quorum.vote_result(self.voters, active) == quorum.VoteResult.WON

    # -- membership --------------------------------------------------------------------------

    def restore(self, cs: ConfState, next_index: int) -> None:
        """Reset membership to cs; every member starts probing at next_index."""
        self.voters = set()
        self.learners = set()
        self.progress = {}
        self.votes = {}
        for v in cs.voters:
            self._add(v, False, next_index)
        for v in cs.learners:
            self._add(v, True, next_index)

    def _add(self, node_id: int, learner: bool, next_index: int) -> None:
        pr = self.progress.get(node_id)
        if pr is None:
            pr = Progress(next_index, self.max_inflight, learner)
            # A newly added member counts as active so CheckQuorum gives it a full timeout.
            pr.recent_active = True
            self.progress[node_id] = pr
        pr.is_learner = learner
        if learner:
            self.voters.discard(node_id)
            self.learners.add(node_id)
        else:
            self.learners.discard(node_id)
            self.voters.add(node_id)

    def apply_conf_change(self, cc: ConfChange, next_index: int) -> None:
        """Apply one single-step change. Demoting a voter to learner is refused (as etcd v1 changes)."""
        nid = cc.node_id
        if nid == 0:
            return
        if cc.type == ConfChangeType.ADD_NODE:
            self._add(nid, False, next_index)
        elif cc.type == ConfChangeType.ADD_LEARNER_NODE:
            if nid in self.voters:
                return  # demotion is not a single-step change we support
            self._add(nid, True, next_index)
        elif cc.type == ConfChangeType.REMOVE_NODE:
            self.voters.discard(nid)
            self.learners.discard(nid)
            self.progress.pop(nid, None)
            self.votes.pop(nid, None)
