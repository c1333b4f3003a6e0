"""Membership changes: the pure confchange rules, rejected changes applied as no-ops, restarts
that take the application's membership, and asynchronous application (apply_later)."""

import random

import pytest

from raft.core import (
    ConfChange,
    ConfChangeError,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    EntryType,
    HardState,
    MemoryStorage,
    ProposalDroppedError,
    RaftError,
    RawNode,
    StateRole,
)
from raft.core import confchange as cc_rules
from tests.raft.network import Network, storage_with_peers

ADD, REMOVE, UPDATE, LEARNER = (
    ConfChangeType.ADD_NODE,
    ConfChangeType.REMOVE_NODE,
    ConfChangeType.UPDATE_NODE,
    ConfChangeType.ADD_LEARNER_NODE,
)


def m(voters, learners=()):
    return cc_rules.Membership(frozenset(voters), frozenset(learners))


# -- the rules ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "change", "after"),
    [
        (m({1, 2, 3}), ConfChange(ADD, 4), m({1, 2, 3, 4})),
        (m({1, 2, 3}), ConfChange(LEARNER, 4), m({1, 2, 3}, {4})),
        (m({1, 2, 3}, {4}), ConfChange(ADD, 4), m({1, 2, 3, 4})),  # promotion
        (m({1, 2, 3}, {4}), ConfChange(REMOVE, 4), m({1, 2, 3})),
        (m({1, 2, 3}), ConfChange(REMOVE, 2), m({1, 3})),
        (m({1, 2, 3}), ConfChange(REMOVE, 9), m({1, 2, 3})),  # unknown: nothing to remove
        (m({1, 2, 3}), ConfChange(UPDATE, 2), m({1, 2, 3})),
        (m({1, 2, 3}), ConfChange(REMOVE, 0), m({1, 2, 3})),  # a rejected change, applied as a no-op
        (m({1}, {2}), ConfChange(REMOVE, 2), m({1})),
    ],
)
def test_simple_changes(before, change, after):
    assert cc_rules.simple(before, change) == after
    assert cc_rules.check(before, change) is None


@pytest.mark.parametrize(
    ("before", "change", "why"),
    [
        (m({1}), ConfChange(REMOVE, 1), "remove all voters"),
        (m({1}, {2}), ConfChange(REMOVE, 1), "remove all voters"),
        (m({1, 2}), ConfChange(LEARNER, 2), "demote"),
    ],
)
def test_refused_changes(before, change, why):
    with pytest.raises(ConfChangeError, match=why):
        cc_rules.simple(before, change)
    assert why in cc_rules.check(before, change)


def test_restore_keeps_the_sets_disjoint():
    assert cc_rules.restore(ConfState((1, 2), (2, 3))) == m({1, 2}, {3})
    assert cc_rules.restore(ConfState((1, 2), (3,))).conf_state() == ConfState((1, 2), (3,))


def test_a_refused_change_changes_nothing_in_the_core():
    net = Network([1], bootstrap=True)
    net.campaign(1)
    r = net.nodes[1].raft
    with pytest.raises(ConfChangeError):
        r.apply_conf_change(ConfChange(REMOVE, 1))
    assert r.prs.conf_state() == ConfState((1,), ())
    assert r.role == StateRole.LEADER


def test_update_node_goes_through_the_log_and_changes_no_membership():
    net = Network([1, 2, 3], bootstrap=True)
    net.campaign(1)
    net.nodes[1].raw.propose_conf_change(ConfChange(UPDATE, 2, b"new address"))
    net.stabilize()
    for n in net.nodes.values():
        assert n.raft.prs.conf_state() == ConfState((1, 2, 3), ())
    ents = [e for e in net.nodes[3].raft.raft_log.all_entries() if e.type == EntryType.CONF_CHANGE]
    assert ConfChange.decode(ents[-1].data) == ConfChange(UPDATE, 2, b"new address")


def test_bootstrap_carries_contexts():
    n = RawNode(Config(1, rng=random.Random(1)), MemoryStorage())
    n.bootstrap([1, 2], {1: b"one", 2: b"two"})
    rd = n.ready()
    assert [ConfChange.decode(e.data).context for e in rd.entries] == [b"one", b"two"]


# -- restarts --------------------------------------------------------------------------------------


def _log_with_a_rejected_change() -> MemoryStorage:
    """Voters 1, 2, 3, then entry 1: ADD_NODE 4 that the application rejected (it applied a no-op)."""
    s = storage_with_peers([1, 2, 3])
    s.append([Entry(1, 1, EntryType.CONF_CHANGE, ConfChange(ADD, 4).encode())])
    s.set_hard_state(HardState(term=1, commit=1))
    return s


def test_restart_replays_conf_changes_without_the_applications_membership():
    n = RawNode(Config(1, applied=1, rng=random.Random(1)), _log_with_a_rejected_change())
    assert n.status().conf_state == ConfState((1, 2, 3, 4), ())


def test_restart_takes_the_applications_membership():
    cfg = Config(1, applied=1, conf_state=ConfState((1, 2, 3), ()), rng=random.Random(1))
    n = RawNode(cfg, _log_with_a_rejected_change())
    assert n.status().conf_state == ConfState((1, 2, 3), ())
    assert not n.has_ready() or not n.ready().committed_entries  # nothing applied is handed out again


# -- asynchronous application --------------------------------------------------------------------


def _leader_with_entries() -> tuple[Network, RawNode]:
    net = Network([1], bootstrap=True)
    net.campaign(1)
    return net, net.nodes[1].raw


def _ready_with_committed(net: Network, raw: RawNode):
    """Handles Readies (persisting them) until one hands out committed entries; returns it, unadvanced."""
    for _ in range(5):
        rd = raw.ready()
        net.nodes[1].storage.append(rd.entries)
        if rd.hard_state is not None:
            net.nodes[1].storage.set_hard_state(rd.hard_state)
        if rd.committed_entries:
            return rd
        raw.advance(rd)
    raise AssertionError("nothing committed")


def test_apply_later_hands_entries_out_once_and_waits_for_applied_to():
    net, raw = _leader_with_entries()
    raw.propose(b"a")
    rd = _ready_with_committed(net, raw)
    assert [e.data for e in rd.committed_entries] == [b"a"]
    index = rd.committed_entries[-1].index
    raw.advance(rd, apply_later=True)
    log = raw.raft.raft_log
    assert log.applying == index and log.applied == index - 1
    assert not raw.has_ready()  # not handed out again
    raw.applied_to(index)
    assert log.applied == index
    with pytest.raises(RaftError):
        raw.applied_to(index + 1)


def test_a_conf_change_handed_out_but_not_applied_is_still_pending():
    net, raw = _leader_with_entries()
    raw.propose_conf_change(ConfChange(LEARNER, 2))
    rd = _ready_with_committed(net, raw)
    assert rd.committed_entries and rd.committed_entries[-1].type == EntryType.CONF_CHANGE
    index = rd.committed_entries[-1].index
    raw.advance(rd, apply_later=True)
    with pytest.raises(ProposalDroppedError, match="conf change pending"):
        raw.propose_conf_change(ConfChange(LEARNER, 3))
    raw.apply_conf_change(ConfChange(LEARNER, 2))
    raw.applied_to(index)
    raw.propose_conf_change(ConfChange(LEARNER, 3))  # now taken
