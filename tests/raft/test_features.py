"""PreVote, CheckQuorum, leader transfer, ReadIndex, learners, conf changes, snapshots, RawNode API."""

import random

import pytest

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
    RaftError,
    RawNode,
    Snapshot,
    SnapshotMetadata,
    StateRole,
)
from raft.core.progress import ProgressState
from tests.raft.network import Network, new_raft, read_msgs, storage_with_peers

MT = MessageType


def elect(net, nid=1):
    net.campaign(nid)
    assert net.role(nid) == StateRole.LEADER
    return net.nodes[nid]


# -- §9.6 PreVote ---------------------------------------------------------------------------


def test_prevote_does_not_bump_term():
    """§9.6: a pre-candidate asks whether it could win before incrementing its term."""
    r = new_raft(1, [1, 2, 3], pre_vote=True)
    r.step(Message(MT.HUP, frm=1))
    assert r.role == StateRole.PRE_CANDIDATE and r.term == 0 and r.vote == NONE
    pv = [m for m in read_msgs(r) if m.type == MT.PRE_VOTE]
    assert sorted(m.to for m in pv) == [2, 3] and all(m.term == 1 for m in pv)
    r.step(Message(MT.PRE_VOTE_RESP, frm=2, to=1, term=1))
    assert r.role == StateRole.CANDIDATE and r.term == 1


def test_prevote_is_rejected_by_a_more_up_to_date_voter_without_term_change():
    s = storage_with_peers([1, 2, 3])
    s.append([Entry(1, 1), Entry(1, 2)])
    r = new_raft(2, [1, 2, 3], storage=s, pre_vote=True)
    r._load_state(HardState(term=1))
    r.step(Message(MT.PRE_VOTE, frm=1, to=2, term=2, index=1, log_term=1))
    (resp,) = read_msgs(r)
    assert resp.type == MT.PRE_VOTE_RESP and resp.reject
    assert r.term == 1 and r.vote == NONE


def test_prevote_partitioned_node_rejoins_without_disruption():
    """§9.6: a server rejoining after a partition does not force the leader to step down."""
    net = Network([1, 2, 3], pre_vote=True, check_quorum=False)
    elect(net, 1)
    net.isolate(3)
    for _ in range(50):
        net.tick(3)
        net.stabilize()
    assert net.term(3) == 1 and net.role(3) == StateRole.PRE_CANDIDATE
    net.recover()
    net.tick_all(5)
    assert net.role(1) == StateRole.LEADER and net.term(1) == 1
    assert net.nodes[3].raft.lead == 1


def test_without_prevote_rejoining_node_disrupts():
    net = Network([1, 2, 3], pre_vote=False, check_quorum=False)
    elect(net, 1)
    net.isolate(3)
    for _ in range(25):
        net.tick(3)
        net.stabilize()
    assert net.term(3) > 1
    net.recover()
    net.tick_all(3)
    assert net.term(1) > 1  # the leader had to step down


# -- CheckQuorum and leases -------------------------------------------------------------------


def test_check_quorum_isolated_leader_steps_down():
    """Thesis §6.2: a leader steps down if an election timeout passes without a round of
    heartbeats to a majority of its cluster."""
    net = Network([1, 2, 3], check_quorum=True)
    elect(net, 1)
    net.isolate(1)
    for _ in range(2 * 10 + 1):
        net.tick(1)
        net.stabilize()
    assert net.role(1) == StateRole.FOLLOWER and net.nodes[1].raft.lead == NONE


def test_check_quorum_follower_ignores_vote_while_leader_is_live():
    """Thesis §4.2.3: a server that heard from a leader within the minimum election timeout
    does not update its term or grant its vote."""
    r = new_raft(2, [1, 2, 3], check_quorum=True)
    r.become_follower(1, 1)
    r.step(Message(MT.VOTE, frm=3, to=2, term=2, index=5, log_term=1))
    assert r.term == 1 and read_msgs(r) == []
    # ...but a leadership transfer forces it
    r.step(Message(MT.VOTE, frm=3, to=2, term=2, index=5, log_term=1, context=b"CampaignTransfer"))
    assert r.term == 2 and r.vote == 3


def test_check_quorum_stale_term_node_is_freed_by_app_resp():
    net = Network([1, 2, 3], check_quorum=True, pre_vote=False)
    elect(net, 1)
    net.isolate(3)
    for _ in range(40):
        net.tick(3)
        net.stabilize()
    t3 = net.term(3)
    assert t3 > 1
    net.recover()
    net.tick_all(25)
    # the cluster converges on a term at least as high as the stuck node's
    leader = net.leader()
    assert leader and net.term(leader) >= t3


# -- leader transfer (thesis §3.10) ---------------------------------------------------------------


def test_leader_transfer_to_up_to_date_follower():
    net = Network([1, 2, 3])
    elect(net, 1)
    net.nodes[1].raw.transfer_leader(2)
    net.stabilize()
    assert net.role(2) == StateRole.LEADER and net.role(1) == StateRole.FOLLOWER
    assert net.nodes[1].raft.lead == 2


def test_leader_transfer_waits_for_catch_up_and_drops_proposals():
    net = Network([1, 2, 3])
    elect(net, 1)
    net.isolate(3)
    net.propose(1, b"a")
    net.nodes[1].raw.transfer_leader(3)
    net.stabilize()
    assert net.nodes[1].raft.lead_transferee == 3
    with pytest.raises(ProposalDroppedError):
        net.nodes[1].raw.propose(b"b")
    net.recover()
    net.tick_all(1)  # heartbeat -> 3 catches up -> MsgTimeoutNow
    assert net.role(3) == StateRole.LEADER


def test_leader_transfer_aborts_after_election_timeout():
    net = Network([1, 2, 3])
    elect(net, 1)
    net.isolate(3)
    net.nodes[1].raw.transfer_leader(3)
    net.stabilize()
    for _ in range(10):
        net.tick(1)
        net.stabilize()
    assert net.nodes[1].raft.lead_transferee == NONE
    net.nodes[1].raw.propose(b"after")  # accepted again
    assert net.role(1) == StateRole.LEADER


def test_leader_transfer_to_self_or_learner_is_ignored():
    net = Network([1, 2, 3], learners=[4])
    elect(net, 1)
    for target in (1, 4, 9):
        net.nodes[1].raw.transfer_leader(target)
        net.stabilize()
        assert net.nodes[1].raft.lead_transferee == NONE
        assert net.role(1) == StateRole.LEADER


def test_transfer_request_on_follower_is_forwarded():
    net = Network([1, 2, 3])
    elect(net, 1)
    net.nodes[3].raw.transfer_leader(3)
    net.stabilize()
    assert net.role(3) == StateRole.LEADER


def test_a_follower_forwards_only_its_own_transfer_request():
    # A follower may not forward a request naming another member: it would be a message "from" that
    # member, which the transport refuses. It drops it, as it drops a proposal forwarded to it.
    net = Network([1, 2, 3])
    elect(net, 1)
    net.nodes[3].raw.transfer_leader(2)
    net.stabilize()  # the network checks that every message is from its sender
    assert net.role(1) == StateRole.LEADER and net.nodes[1].raft.lead_transferee == NONE
    forwarded = Message(MT.TRANSFER_LEADER, to=3, frm=2, term=net.term(1))  # 2 thought 3 led
    net.stabilize(forwarded)
    assert net.role(1) == StateRole.LEADER and net.nodes[1].raft.lead_transferee == NONE


# -- ReadIndex (thesis §6.4) ------------------------------------------------------------------------


def test_read_index_needs_heartbeat_quorum():
    net = Network([1, 2, 3])
    elect(net, 1)
    net.propose(1, b"x")
    c = net.committed(1)
    net.isolate(1)
    net.nodes[1].raw.read_index(b"ctx1")
    net.stabilize()
    assert net.nodes[1].read_states == []  # cannot confirm leadership
    net.recover()
    net.tick_all(1)
    assert [(rs.index, rs.request_ctx) for rs in net.nodes[1].read_states] == [(c, b"ctx1")]


def test_read_index_held_until_commit_in_current_term():
    r = new_raft(1, [1, 2, 3])
    r.step(Message(MT.HUP, frm=1))
    r.step(Message(MT.VOTE_RESP, frm=2, to=1, term=r.term))
    read_msgs(r)
    r.step(Message(MT.READ_INDEX, frm=1, context=b"early"))
    assert read_msgs(r) == [] and r.read_states == []
    r.step(Message(MT.APP_RESP, frm=2, to=1, term=r.term, index=r.raft_log.last_index()))
    hbs = [m for m in read_msgs(r) if m.type == MT.HEARTBEAT]
    assert hbs and all(m.context == b"early" for m in hbs)
    r.step(Message(MT.HEARTBEAT_RESP, frm=2, to=1, term=r.term, context=b"early"))
    assert [(rs.index, rs.request_ctx) for rs in r.read_states] == [(1, b"early")]


def test_read_index_batches_heartbeats_and_releases_in_order():
    r = new_raft(1, [1, 2, 3])
    r.step(Message(MT.HUP, frm=1))
    r.step(Message(MT.VOTE_RESP, frm=2, to=1, term=r.term))
    r.step(Message(MT.APP_RESP, frm=2, to=1, term=r.term, index=1))
    read_msgs(r)
    for ctx in (b"a", b"b", b"c"):
        r.step(Message(MT.READ_INDEX, frm=1, context=ctx))
    hbs = [m for m in read_msgs(r) if m.type == MT.HEARTBEAT]
    assert len(hbs) == 2 and {m.context for m in hbs} == {b"c"}  # one heartbeat per follower
    r.step(Message(MT.HEARTBEAT_RESP, frm=3, to=1, term=r.term, context=b"c"))
    assert [rs.request_ctx for rs in r.read_states] == [b"a", b"b", b"c"]


def test_read_index_from_follower_is_forwarded():
    net = Network([1, 2, 3])
    elect(net, 1)
    net.propose(1, b"x")
    net.nodes[2].raw.read_index(b"f")
    net.stabilize()
    assert [(rs.index, rs.request_ctx) for rs in net.nodes[2].read_states] == [(net.committed(1), b"f")]


def test_read_index_single_voter_answers_immediately():
    net = Network([1])
    elect(net, 1)
    net.nodes[1].raw.read_index(b"solo")
    net.stabilize()
    assert [rs.request_ctx for rs in net.nodes[1].read_states] == [b"solo"]


def test_read_index_lease_based():
    net = Network([1, 2, 3], read_only_lease_based=True)
    elect(net, 1)
    net.isolate(1)
    net.nodes[1].raw.read_index(b"lease")
    net.stabilize()
    assert [rs.request_ctx for rs in net.nodes[1].read_states] == [b"lease"]


def test_read_index_without_leader_raises():
    net = Network([1, 2, 3])
    with pytest.raises(ProposalDroppedError):
        net.nodes[2].raw.read_index(b"x")


# -- proposals --------------------------------------------------------------------------------------


def test_proposal_forwarding():
    net = Network([1, 2, 3])
    elect(net, 1)
    net.propose(3, b"via follower")
    assert all(b"via follower" in [a[2] for a in n.applied] for n in net.nodes.values())


def test_proposal_forwarding_disabled():
    net = Network([1, 2, 3], disable_proposal_forwarding=True)
    elect(net, 1)
    with pytest.raises(ProposalDroppedError):
        net.nodes[3].raw.propose(b"x")


@pytest.mark.parametrize("kind", [MT.PROP, MT.READ_INDEX])
def test_a_peers_request_reaching_a_follower_is_dropped_not_forwarded_as_from_that_peer(kind):
    # found by the whole-member simulator: member 2 forwarded to its old leader 3 a proposal that 3,
    # a follower by then, forwarded on to 2 (the new leader) still marked "from 2"; the peer
    # transport refuses a message from one member carried by another, and resets the connection
    r = new_raft(3, [1, 2, 3])
    r.become_follower(2, 1)
    r.read_messages()
    if kind == MT.PROP:
        r.step(Message(MT.PROP, frm=2, to=3, entries=[Entry(0, 0, EntryType.NORMAL, b"x")]))
    else:
        r.step(Message(MT.READ_INDEX, frm=2, to=3, context=b"ctx"))
    assert r.read_messages() == []
    local = Message(kind, frm=3, to=3, entries=[Entry(0, 0, EntryType.NORMAL, b"y")] if kind == MT.PROP else [])
    r.step(local)
    assert [(m.type, m.to, m.frm) for m in r.read_messages()] == [(kind, 1, 3)]


def test_proposals_are_batched_into_one_msgapp_per_peer():
    net = Network([1, 2, 3])
    leader = elect(net, 1)
    for i in range(10):
        leader.raw.propose(b"p%d" % i)
    rd = leader.raw.ready()
    apps = [m for m in rd.messages if m.type == MT.APP]
    assert sorted(m.to for m in apps) == [2, 3]
    assert all(len(m.entries) == 10 for m in apps)
    assert len(rd.entries) == 10 and rd.must_sync


def test_inflight_window_bounds_pipelining():
    net = Network([1, 2], max_inflight_msgs=2)
    leader = elect(net, 1)
    net.nodes[1].handle_ready()
    net.ignore(MT.APP_RESP)
    sent = []
    for i in range(5):
        leader.raw.propose(b"%d" % i)
        sent += [m for m in net.nodes[1].handle_ready() if m.type == MT.APP]
    assert len(sent) == 2  # window full: the rest waits
    pr = leader.raft.prs.progress[2]
    assert pr.state == ProgressState.REPLICATE and pr.inflights.full()


def test_max_uncommitted_size_drops_proposals():
    net = Network([1, 2, 3], max_uncommitted_entries_size=10)
    leader = elect(net, 1)
    net.isolate(1)
    leader.raw.propose(b"x" * 8)
    with pytest.raises(ProposalDroppedError):
        leader.raw.propose(b"y" * 8)


def test_rejection_hint_skips_conflicting_term():
    """etcd's findConflictByTerm: a follower with a long divergent tail is fixed in few rounds."""
    net = Network([1, 2, 3], pre_vote=False)
    n2 = net.nodes[2]
    n2.storage.append([Entry(1, 1)] + [Entry(2, i) for i in range(2, 50)])
    n2.storage.set_hard_state(HardState(term=2))
    net.restart(2)
    for nid in (1, 3):
        net.nodes[nid].storage.append([Entry(1, 1)] + [Entry(3, i) for i in range(2, 5)])
        net.nodes[nid].storage.set_hard_state(HardState(term=3))
        net.restart(nid)
    net.campaign(1)
    rejects = [m for m in net.delivered if m.type == MT.APP_RESP and m.reject and m.frm == 2]
    assert len(rejects) <= 2
    assert net.log(2) == net.log(1)


# -- learners and membership (thesis §4) -----------------------------------------------------------


def test_learner_never_campaigns_and_never_counts():
    net = Network([1, 2, 3], learners=[4])
    for _ in range(50):
        net.tick(4)
    assert net.role(4) == StateRole.FOLLOWER and net.term(4) == 0
    elect(net, 1)
    net.isolate(2)
    net.isolate(3)
    net.cut(1, 4)
    net.recover()
    net.cut(1, 2)
    net.cut(1, 3)
    net.propose(1, b"x")
    # only the leader and the learner have it: not committed
    assert net.log(4)[-1][2] == b"x"
    assert net.committed(1) == net.log(1)[-1][0] - 1


def test_learner_receives_the_log():
    net = Network([1, 2, 3], learners=[4])
    elect(net, 1)
    net.propose(1, b"x")
    assert [a[2] for a in net.nodes[4].applied] == [b"x"]
    assert net.nodes[1].raft.prs.progress[4].is_learner


def test_add_learner_then_promote():
    net = Network([1, 2, 3], bootstrap=True)
    elect(net, 1)
    net.add_node(4, empty=True)
    net.nodes[1].raw.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER_NODE, 4))
    net.stabilize()
    net.tick_all(2)
    assert net.nodes[1].raft.prs.conf_state() == ConfState((1, 2, 3), (4,))
    assert net.nodes[4].raft.is_learner
    net.nodes[1].raw.propose_conf_change(ConfChange(ConfChangeType.ADD_NODE, 4))
    net.stabilize()
    net.tick_all(2)
    for n in net.nodes.values():
        assert n.raft.prs.conf_state() == ConfState((1, 2, 3, 4), ())
    assert not net.nodes[4].raft.is_learner
    net.propose(4, b"from new voter")
    assert net.nodes[1].applied[-1][2] == b"from new voter"


def test_remove_node_shrinks_quorum():
    net = Network([1, 2, 3])
    elect(net, 1)
    net.nodes[1].raw.propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 3))
    net.stabilize()
    assert net.nodes[1].raft.prs.voters == {1, 2}
    net.isolate(3)
    net.propose(1, b"two of two")
    assert net.nodes[2].applied[-1][2] == b"two of two"


def test_removed_leader_steps_down_and_hands_over():
    net = Network([1, 2, 3])
    elect(net, 1)
    net.nodes[1].raw.propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 1))
    net.stabilize()
    assert net.role(1) == StateRole.FOLLOWER
    leader = net.leader()
    assert leader in (2, 3)
    assert net.nodes[leader].raft.prs.voters == {2, 3}


def test_one_conf_change_at_a_time():
    net = Network([1, 2, 3])
    leader = elect(net, 1)
    net.isolate(1)
    leader.raw.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER_NODE, 4))
    with pytest.raises(ProposalDroppedError):
        leader.raw.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER_NODE, 5))
    net.recover()
    net.tick_all(2)
    leader.raw.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER_NODE, 5))  # now fine


def test_no_campaign_with_unapplied_conf_change():
    s = storage_with_peers([1, 2, 3])
    s.append([Entry(1, 1, EntryType.CONF_CHANGE, ConfChange(ConfChangeType.ADD_NODE, 4).encode())])
    s.set_hard_state(HardState(term=1, commit=1))
    r = new_raft(1, [1, 2, 3], storage=s)
    r.step(Message(MT.HUP, frm=1))
    assert r.role == StateRole.FOLLOWER


# -- snapshots and compaction (thesis §5) ---------------------------------------------------------


def compact(node, index=None):
    idx = index if index is not None else node.raft.raft_log.applied
    node.storage.create_snapshot(idx, node.raft.prs.conf_state(), b"snap@%d" % idx)
    node.storage.compact(idx)


def test_lagging_follower_catches_up_by_snapshot():
    net = Network([1, 2, 3])
    elect(net, 1)
    net.isolate(3)
    for i in range(10):
        net.propose(1, b"v%d" % i)
    compact(net.nodes[1])
    net.recover()
    net.tick_all(3)
    n3 = net.nodes[3]
    assert n3.snapshots_applied == [net.nodes[1].storage.snapshot().metadata.index]
    assert n3.raft.raft_log.committed == net.committed(1)
    net.propose(1, b"after")
    assert n3.applied[-1][2] == b"after"
    assert net.nodes[1].raft.prs.progress[3].state == ProgressState.REPLICATE


def test_snapshot_failure_falls_back_to_probe():
    r = new_raft(1, [1, 2, 3])
    r.step(Message(MT.HUP, frm=1))
    r.step(Message(MT.VOTE_RESP, frm=2, to=1, term=r.term))
    pr = r.prs.progress[3]
    pr.become_snapshot(10)
    r.step(Message(MT.SNAP_STATUS, frm=3, reject=True))
    assert pr.state == ProgressState.PROBE and pr.pending_snapshot == 0 and pr.probe_sent


def test_follower_ignores_stale_snapshot():
    net = Network([1, 2, 3])
    elect(net, 1)
    net.propose(1, b"x")
    r = net.nodes[2].raft

    r.step(
        Message(MT.SNAP, frm=1, to=2, term=r.term, snapshot=Snapshot(SnapshotMetadata(1, 1, ConfState((1, 2, 3))), b""))
    )
    (resp,) = [m for m in read_msgs(r) if m.type == MT.APP_RESP]
    assert resp.index == r.raft_log.committed and not resp.reject


def test_unreachable_moves_replicating_follower_to_probe():
    net = Network([1, 2, 3])
    leader = elect(net, 1)
    assert leader.raft.prs.progress[2].state == ProgressState.REPLICATE
    leader.raw.report_unreachable(2)
    assert leader.raft.prs.progress[2].state == ProgressState.PROBE


# -- RawNode API --------------------------------------------------------------------------------


def test_bootstrap_and_first_ready():
    s = MemoryStorage()
    n = RawNode(Config(1, rng=random.Random(1)), s)
    n.bootstrap([1, 2, 3])
    rd = n.ready()
    assert [ConfChange.decode(e.data).node_id for e in rd.entries] == [1, 2, 3]
    assert rd.committed_entries == rd.entries
    assert rd.hard_state == HardState(term=1, vote=0, commit=3)
    assert rd.must_sync
    s.append(rd.entries)
    s.set_hard_state(rd.hard_state)
    for e in rd.committed_entries:
        n.apply_conf_change(ConfChange.decode(e.data))
    n.advance(rd)
    assert not n.has_ready()
    assert n.status().conf_state == ConfState((1, 2, 3), ())
    with pytest.raises(RaftError):
        n.bootstrap([1])


def test_ready_twice_without_advance_is_an_error():
    n = RawNode(Config(1), MemoryStorage())
    n.bootstrap([1])
    n.ready()
    with pytest.raises(RaftError):
        n.ready()


def test_step_ignores_local_messages_and_unknown_responses():
    net = Network([1, 2, 3])
    leader = elect(net, 1)
    term = leader.raft.term
    leader.raw.step(Message(MT.HUP, frm=9))
    leader.raw.step(Message(MT.BEAT, frm=9))
    leader.raw.step(Message(MT.APP_RESP, frm=9, to=1, term=term, index=100))
    leader.raw.step(Message(MT.HEARTBEAT_RESP, frm=9, to=1, term=term))
    assert net.role(1) == StateRole.LEADER and leader.raft.term == term
    assert not [m for m in leader.raw.ready().messages if m.to == 9]


def test_single_node_commits_and_status():
    net = Network([1])
    elect(net, 1)
    net.propose(1, b"solo")
    st = net.nodes[1].raw.status()
    assert st.role == StateRole.LEADER and st.lead == 1 and st.commit == st.applied == 2
    assert st.progress[1].match == 2
    assert net.nodes[1].raw.lead == 1 and net.nodes[1].raw.term == 1
    assert net.nodes[1].applied == [(2, 1, b"solo")]


def test_restart_replays_conf_changes_after_snapshot():
    net = Network([1, 2, 3], bootstrap=True)
    elect(net, 1)
    net.nodes[1].raw.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER_NODE, 4))
    net.stabilize()
    node = net.nodes[2]
    applied = node.raft.raft_log.applied
    cfg = net.make_config(2)
    cfg.applied = applied
    fresh = RawNode(cfg, node.storage)
    assert fresh.status().conf_state == ConfState((1, 2, 3), (4,))


def test_config_validation():
    with pytest.raises(RaftError):
        RawNode(Config(0), MemoryStorage())
    with pytest.raises(RaftError):
        RawNode(Config(1, election_tick=1, heartbeat_tick=1), MemoryStorage())
    with pytest.raises(RaftError):
        RawNode(Config(1, read_only_lease_based=True, check_quorum=False), MemoryStorage())


def test_member_added_after_compaction_installs_a_snapshot_without_itself():
    """The leader's latest snapshot predates the new member; it still bootstraps from it and
    learns of its own addition from the log entries after the snapshot."""
    net = Network([1, 2, 3], bootstrap=True)
    elect(net, 1)
    for i in range(5):
        net.propose(1, b"v%d" % i)
    compact(net.nodes[1])
    net.add_node(4, empty=True)
    net.nodes[1].raw.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER_NODE, 4))
    net.stabilize()
    net.tick_all(3)
    n4 = net.nodes[4]
    assert n4.snapshots_applied and 4 not in net.nodes[1].storage.snapshot().metadata.conf_state.learners
    assert n4.raft.is_learner and n4.raft.raft_log.committed == net.committed(1)
    net.nodes[1].raw.propose_conf_change(ConfChange(ConfChangeType.ADD_NODE, 4))
    net.stabilize()
    net.tick_all(2)
    assert n4.raft.promotable()
    net.propose(4, b"hello")
    assert n4.applied[-1][2] == b"hello"
