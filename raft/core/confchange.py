"""Membership changes as pure functions: the configuration a single-step change leads to.

In the style of etcd-io/raft's ``confchange.Changer`` (single-step changes only, thesis §4.1:
one server added, promoted or removed at a time, so the old and the new majority always
overlap and no joint consensus is needed). Nothing here touches progress or messages; the
tracker (``raft.core.tracker``) switches to the configuration these functions compute.

Rules, each checked before anything changes:

- ``ADD_NODE`` adds a voter, or promotes a learner to a voter.
- ``ADD_LEARNER_NODE`` adds a learner; demoting a voter to a learner is refused (it is not a
  single-step change this core supports, as with etcd's v1 conf changes).
- ``REMOVE_NODE`` removes a voter or a learner; removing the last voter is refused (a group
  without voters can never elect or commit again; etcd-io/raft refuses it too: "removed all
  voters").
- ``UPDATE_NODE`` changes nothing here (it carries the application's peer address change).
- A change naming node 0 (``NONE``) changes nothing: the application applies a change it
  rejected that way, so the entry still counts as applied (as etcd does).
"""

from __future__ import annotations

from dataclasses import dataclass

from raft.core.errors import ConfChangeError
from raft.core.types import NONE, ConfChange, ConfChangeType, ConfState


@dataclass(frozen=True, slots=True)
class Membership:
    """Who votes and who only learns. Invariant: the two sets are disjoint."""

    voters: frozenset[int] = frozenset()
    learners: frozenset[int] = frozenset()

    def conf_state(self) -> ConfState:
        return ConfState(tuple(sorted(self.voters)), tuple(sorted(self.learners)))

    def members(self) -> frozenset[int]:
        return self.voters | self.learners


def restore(cs: ConfState) -> Membership:
    """The membership a ConfState describes (a snapshot's, or the application's at restart)."""
    voters = frozenset(cs.voters)
    learners = frozenset(cs.learners) - voters
    return Membership(voters, learners)


def simple(current: Membership, cc: ConfChange) -> Membership:
    """The membership after one single-step change; raises ConfChangeError for a change it refuses."""
    nid = cc.node_id
    voters, learners = set(current.voters), set(current.learners)
    if nid == NONE or cc.type == ConfChangeType.UPDATE_NODE:
        return current
    if cc.type == ConfChangeType.ADD_NODE:
        learners.discard(nid)
        voters.add(nid)
    elif cc.type == ConfChangeType.ADD_LEARNER_NODE:
        if nid in voters:
            raise ConfChangeError(f"cannot demote voter {nid:x} to a learner: not a single-step change")
        learners.add(nid)
    elif cc.type == ConfChangeType.REMOVE_NODE:
        if nid in voters and len(voters) == 1:
            raise ConfChangeError(f"removing {nid:x} would remove all voters")
        voters.discard(nid)
        learners.discard(nid)
    else:  # pragma: no cover - ConfChangeType has no other members
        raise ConfChangeError(f"unexpected conf change type {cc.type!r}")
    return Membership(frozenset(voters), frozenset(learners))


def check(current: Membership, cc: ConfChange) -> str | None:
    """Why the core would refuse cc against current, or None when it would take it."""
    try:
        simple(current, cc)
    except ConfChangeError as exc:
        return str(exc)
    return None
