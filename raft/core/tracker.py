"""ProgressTracker: the membership (voters, learners), each member's Progress, and votes.

Membership changes are single-step (thesis §4.1): ``raft.core.confchange`` computes the
membership a change leads to (or refuses it); the tracker switches to it, keeping the progress
of members that stay and starting new members' progress at the next index.
"""

from __future__ import annotations

from raft.core import confchange, quorum
from raft.core.progress import Progress
from raft.core.types import ConfChange, ConfState


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

    def membership(self) -> confchange.Membership:
        return confchange.Membership(frozenset(self.voters), frozenset(self.learners))

    def restore(self, cs: ConfState, next_index: int) -> None:
        """Reset membership to cs; every member starts probing at next_index."""
        self.progress = {}
        self.votes = {}
        self.switch(confchange.restore(cs), next_index)

    def switch(self, m: confchange.Membership, next_index: int) -> None:
        """Switch to membership m: new members start probing at next_index, removed ones are forgotten."""
        for nid in [nid for nid in self.progress if nid not in m.voters and nid not in m.learners]:
            del self.progress[nid]
            self.votes.pop(nid, None)
        for nid in sorted(m.voters | m.learners):
            learner = nid in m.learners
            pr = self.progress.get(nid)
            if pr is None:
                pr = Progress(next_index, self.max_inflight, learner)
                # A newly added member counts as active so CheckQuorum gives it a full timeout.
                pr.recent_active = True
                self.progress[nid] = pr
            pr.is_learner = learner
        self.voters = set(m.voters)
        self.learners = set(m.learners)

    def apply_conf_change(self, cc: ConfChange, next_index: int) -> None:
        """Apply one single-step change (``raft.core.confchange``); raises ConfChangeError if refused."""
        self.switch(confchange.simple(self.membership(), cc), next_index)
