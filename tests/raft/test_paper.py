"""One test per important sentence of the Raft paper (sections cited in each docstring).

Like etcd's raft_paper_test.go: a bare Raft is stepped by hand and its messages inspected.
"""

import pytest

from raft.core import (
    NONE,
    Entry,
    HardState,
    Message,
    MessageType,
    ProposalDroppedError,
    StateRole,
)
from tests.raft.network import Network, new_raft, read_msgs, storage_with_peers

MT = MessageType


def msgs_of(r, t):
    return [m for m in read_msgs(r) if m.type == t]


def make_leader(r):
    """Elect r (a bare Raft in a 3-node cluster) by stepping granted votes into it."""
    r.become_candidate()
    for v in sorted(r.prs.voters):
        if v != r.id:
            r.step(Message(MT.VOTE_RESP, to=r.id, frm=v, term=r.term))
        if r.role == StateRole.LEADER:
            break
    assert r.role == StateRole.LEADER
    read_msgs(r)


def commit_noop(r):
    """Ack the leader's empty entry from every follower so it is committed."""
    for v in sorted(r.prs.voters):
        if v != r.id:
            r.step(Message(MT.APP_RESP, to=r.id, frm=v, term=r.term, index=r.raft_log.last_index()))
    read_msgs(r)


# -- §5.1 / Figure 2: rules for all servers -----------------------------------------------------


def test_start_as_follower():
    """§5.2: When servers start up, they begin as followers."""
    r = new_raft(1, [1, 2, 3])
    assert r.role == StateRole.FOLLOWER and r.term == 0


@pytest.mark.parametrize("role", ["follower", "candidate", "leader"])
def test_update_term_from_message(role):
    """§5.1: If one server's current term is smaller than the other's, it updates its term; a
    candidate or leader that discovers its term is out of date reverts to follower."""
    r = new_raft(1, [1, 2, 3])
    if role == "candidate":
        r.become_candidate()
    elif role == "leader":
        make_leader(r)
    r.step(Message(MT.APP, frm=2, to=1, term=5))
    assert r.term == 5 and r.role == StateRole.FOLLOWER and r.lead == 2


def test_reject_stale_term_message():
    """§5.1: If a server receives a request with a stale term number, it rejects the request."""
    r = new_raft(1, [1, 2, 3])
    r._load_state(HardState(term=2))
    r.step(Message(MT.APP, frm=2, to=1, term=1, entries=[Entry(1, 1)]))
    assert r.raft_log.last_index() == 0
    assert r.term == 2


def test_leader_bcast_beat():
    """§5.2: Leaders send periodic heartbeats (AppendEntries with no entries) to all followers."""
    r = new_raft(1, [1, 2, 3], heartbeat=2)
    make_leader(r)
    for _ in range(2):
        r.tick()
    hb = msgs_of(r, MT.HEARTBEAT)
    assert sorted(m.to for m in hb) == [2, 3]
    assert all(m.term == r.term and not m.entries for m in hb)


@pytest.mark.parametrize("role", ["follower", "candidate"])
def test_start_election_on_timeout(role):
    """§5.2: If a follower receives no communication over the election timeout, it increments
    its term, votes for itself, becomes a candidate and issues RequestVote RPCs in parallel
    to each of the other servers. A candidate that times out starts a new election."""
    r = new_raft(1, [1, 2, 3])
    if role == "candidate":
        r.become_candidate()
    term0 = r.term
    for _ in range(2 * r.election_timeout):
        r.tick()
    assert r.role == StateRole.CANDIDATE and r.term == term0 + 1 and r.vote == 1
    votes = msgs_of(r, MT.VOTE)
    assert sorted(m.to for m in votes) == [2, 3]
    assert all(m.term == term0 + 1 for m in votes)


@pytest.mark.parametrize(
    ("size", "votes", "role"),
    [
        (1, {}, StateRole.LEADER),
        (3, {2: True, 3: True}, StateRole.LEADER),
        (3, {2: True}, StateRole.LEADER),
        (5, {2: True, 3: True}, StateRole.LEADER),
        (5, {2: True}, StateRole.CANDIDATE),
        (5, {2: False, 3: False, 4: False}, StateRole.FOLLOWER),
        (3, {2: False, 3: False}, StateRole.FOLLOWER),
        (3, {}, StateRole.CANDIDATE),
    ],
)
def test_leader_election_in_one_round(size, votes, role):
    """§5.2: A candidate wins an election if it receives votes from a majority of the servers
    in the full cluster for the same term; it reverts when a majority rejected it."""
    r = new_raft(1, range(1, size + 1))
    r.step(Message(MT.HUP, frm=1))
    for frm, granted in votes.items():
        r.step(Message(MT.VOTE_RESP, frm=frm, to=1, term=r.term, reject=not granted))
    assert r.role == role
    assert r.term == 1


@pytest.mark.parametrize(("vote", "granted"), [(NONE, True), (2, True), (3, False)])
def test_follower_vote(vote, granted):
    """§5.2: Each server will vote for at most one candidate in a given term, on a
    first-come-first-served basis."""
    r = new_raft(1, [1, 2, 3])
    r._load_state(HardState(term=1, vote=vote))
    r.step(Message(MT.VOTE, frm=2, to=1, term=1))
    (resp,) = msgs_of(r, MT.VOTE_RESP)
    assert resp.reject is not granted


@pytest.mark.parametrize("msg_type", [MT.APP, MT.HEARTBEAT])
def test_candidate_fallback(msg_type):
    """§5.2: If the AppendEntries RPC is from a leader whose term is at least as large as the
    candidate's current term, the candidate recognizes the leader and returns to follower."""
    r = new_raft(1, [1, 2, 3])
    r.step(Message(MT.HUP, frm=1))
    r.step(Message(msg_type, frm=2, to=1, term=r.term))
    assert r.role == StateRole.FOLLOWER and r.lead == 2 and r.term == 1


def test_election_timeout_is_randomized():
    """§5.2: Raft uses randomized election timeouts, chosen from a fixed interval."""
    r = new_raft(1, [1, 2, 3], election=10)
    seen = set()
    for _ in range(200):
        r.become_follower(r.term + 1, NONE)
        t = 0
        while r.role == StateRole.FOLLOWER:
            r.tick()
            t += 1
        seen.add(t)
    assert min(seen) >= 10 and max(seen) < 20
    assert len(seen) > 5


def test_election_timeout_comes_from_injected_rng():
    class Fixed:
        def randrange(self, n):
            return n - 1

    r = new_raft(1, [1, 2, 3], election=10, rng=Fixed())
    assert r.randomized_election_timeout == 19


# -- §5.3 log replication -------------------------------------------------------------------


def test_leader_start_replication():
    """§5.3: The leader appends the command to its log as a new entry, then issues
    AppendEntries RPCs in parallel to each of the other servers to replicate the entry."""
    r = new_raft(1, [1, 2, 3])
    make_leader(r)
    commit_noop(r)
    li = r.raft_log.last_index()
    r.step(Message(MT.PROP, frm=1, entries=[Entry(0, 0, data=b"some data")]))
    assert r.raft_log.last_index() == li + 1
    apps = msgs_of(r, MT.APP)
    assert sorted(m.to for m in apps) == [2, 3]
    for m in apps:
        assert (m.index, m.log_term, m.commit) == (li, 1, li)
        assert [(e.index, e.term, e.data) for e in m.entries] == [(li + 1, 1, b"some data")]


def test_leader_commit_entry_and_tells_followers():
    """§5.3: When the entry has been safely replicated, the leader applies it; it includes
    the highest committed index in future AppendEntries so the followers find out."""
    r = new_raft(1, [1, 2, 3])
    make_leader(r)
    commit_noop(r)
    li = r.raft_log.last_index()
    r.step(Message(MT.PROP, frm=1, entries=[Entry(0, 0, data=b"x")]))
    read_msgs(r)
    r.step(Message(MT.APP_RESP, frm=2, to=1, term=r.term, index=li + 1))
    assert r.raft_log.committed == li + 1
    apps = msgs_of(r, MT.APP)
    assert {m.to for m in apps} == {2, 3} and all(m.commit == li + 1 for m in apps)


@pytest.mark.parametrize(
    ("size", "acks", "committed"),
    [(1, [], True), (3, [], False), (3, [2], True), (5, [2], False), (5, [2, 3], True), (5, [2, 3, 4], True)],
)
def test_leader_acknowledge_commit(size, acks, committed):
    """§5.3: A log entry is committed once the leader that created it has replicated it on a
    majority of the servers."""
    r = new_raft(1, range(1, size + 1))
    r.step(Message(MT.HUP, frm=1))
    for v in range(2, size + 1):
        if r.role != StateRole.LEADER:
            r.step(Message(MT.VOTE_RESP, frm=v, to=1, term=r.term))
    read_msgs(r)
    li = r.raft_log.last_index()
    for a in acks:
        r.step(Message(MT.APP_RESP, frm=a, to=1, term=r.term, index=li))
    assert (r.raft_log.committed == li) is committed


def test_leader_commits_preceding_entries():
    """§5.3: Committing an entry also commits all preceding entries in the leader's log,
    including entries created by previous leaders."""
    s = storage_with_peers([1, 2, 3])
    s.append([Entry(1, 1), Entry(2, 2)])
    s.set_hard_state(HardState(term=2))
    r = new_raft(1, [1, 2, 3], storage=s)
    make_leader(r)
    li = r.raft_log.last_index()
    r.step(Message(MT.APP_RESP, frm=2, to=1, term=r.term, index=li))
    assert r.raft_log.committed == li == 3


def test_follower_commit_entry():
    """§5.3: Once a follower learns that a log entry is committed, it applies the entry."""
    r = new_raft(1, [1, 2, 3])
    r.become_follower(1, 2)
    r.step(Message(MT.APP, frm=2, to=1, term=1, entries=[Entry(1, 1, data=b"a"), Entry(1, 2, data=b"b")], commit=1))
    assert r.raft_log.committed == 1
    assert [e.data for e in r.raft_log.next_ents()] == [b"a"]


@pytest.mark.parametrize(
    ("index", "log_term", "reject", "hint"),
    [(0, 0, False, 0), (1, 1, False, 0), (2, 2, False, 0), (2, 1, True, 1), (3, 3, True, 2)],
)
def test_follower_check_msg_app(index, log_term, reject, hint):
    """§5.3: If the follower does not find an entry in its log with the same index and term
    as the one in AppendEntries, it refuses the new entries."""
    s = storage_with_peers([1, 2, 3])
    s.append([Entry(1, 1), Entry(2, 2)])
    r = new_raft(1, [1, 2, 3], storage=s)
    r._load_state(HardState(term=2, commit=1))
    r.become_follower(2, 2)
    r.step(Message(MT.APP, frm=2, to=1, term=2, log_term=log_term, index=index))
    (resp,) = msgs_of(r, MT.APP_RESP)
    assert resp.reject is reject
    if reject:
        assert resp.reject_hint == hint


@pytest.mark.parametrize(
    ("index", "term", "ents", "want"),
    [
        (2, 2, [(3, 3)], [(1, 1), (2, 2), (3, 3)]),
        (1, 1, [(2, 3), (3, 4)], [(1, 1), (2, 3), (3, 4)]),
        (0, 0, [(1, 1)], [(1, 1), (2, 2)]),
        (0, 0, [(1, 3)], [(1, 3)]),
    ],
)
def test_follower_append_entries(index, term, ents, want):
    """§5.3: If an existing entry conflicts with a new one (same index, different terms),
    delete the existing entry and all that follow it; append any new entries not in the log."""
    s = storage_with_peers([1, 2, 3])
    s.append([Entry(1, 1), Entry(2, 2)])
    r = new_raft(1, [1, 2, 3], storage=s)
    r.become_follower(2, 2)
    r.step(Message(MT.APP, frm=2, to=1, term=2, log_term=term, index=index, entries=[Entry(t, i) for i, t in ents]))
    assert [(e.index, e.term) for e in r.raft_log.all_entries()] == want


FIG7_LEADER = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
FIG7_FOLLOWERS = {
    "a": [1, 1, 1, 4, 4, 5, 5, 6, 6],
    "b": [1, 1, 1, 4],
    "c": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    "d": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    "e": [1, 1, 1, 4, 4, 4, 4],
    "f": [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
}


@pytest.mark.parametrize("case", sorted(FIG7_FOLLOWERS))
def test_leader_sync_follower_log(case):
    """§5.3 / Figure 7: the leader handles inconsistencies by forcing the followers' logs to
    duplicate its own; conflicting entries in follower logs are overwritten."""
    net = Network([1, 2, 3], pre_vote=False)
    for nid, terms in ((1, FIG7_LEADER), (2, FIG7_FOLLOWERS[case]), (3, FIG7_LEADER)):
        node = net.nodes[nid]
        node.storage.append([Entry(t, i + 1) for i, t in enumerate(terms)])
        node.storage.set_hard_state(HardState(term=7))
        net.restart(nid)
    net.campaign(1)
    assert net.role(1) == StateRole.LEADER and net.term(1) == 8
    net.propose(1, b"x")
    assert net.log(2) == net.log(1)
    assert net.log(2)[-1] == (12, 8, b"x")


# -- §5.4.1 election restriction ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("log_term", "index", "granted"),
    [
        (1, 1, False),
        (1, 2, False),
        (1, 3, False),
        (2, 1, False),
        (2, 2, True),
        (2, 3, True),
        (3, 1, True),
        (3, 2, True),
        (3, 3, True),
    ],
)
def test_voter_checks_up_to_date(log_term, index, granted):
    """§5.4.1: The voter denies its vote if its own log is more up-to-date than that of the
    candidate: compare the terms of the last entries, then the lengths of the logs."""
    s = storage_with_peers([1, 2, 3])
    s.append([Entry(1, 1), Entry(2, 2)])
    r = new_raft(1, [1, 2, 3], storage=s)
    r.step(Message(MT.VOTE, frm=2, to=1, term=3, log_term=log_term, index=index))
    (resp,) = msgs_of(r, MT.VOTE_RESP)
    assert resp.reject is not granted


def test_candidate_sends_last_log_position():
    """§5.4.1: The RequestVote RPC includes information about the candidate's log."""
    s = storage_with_peers([1, 2, 3])
    s.append([Entry(1, 1), Entry(2, 2)])
    r = new_raft(1, [1, 2, 3], storage=s)
    r.step(Message(MT.HUP, frm=1))
    for m in msgs_of(r, MT.VOTE):
        assert (m.index, m.log_term) == (2, 2)


# -- §5.4.2 committing entries from previous terms -------------------------------------------


def test_leader_only_commits_current_term_by_counting():
    """§5.4.2: Raft never commits log entries from previous terms by counting replicas. Only
    log entries from the leader's current term are committed by counting replicas."""
    s = storage_with_peers([1, 2, 3])
    s.append([Entry(1, 1), Entry(2, 2)])
    s.set_hard_state(HardState(term=2))
    r = new_raft(1, [1, 2, 3], storage=s)
    make_leader(r)  # term 3, appends an empty entry at index 3
    assert r.raft_log.last_index() == 3
    r.step(Message(MT.APP_RESP, frm=2, to=1, term=3, index=2))
    assert r.raft_log.committed == 0  # index 2 (term 2) is on a majority but not committed
    r.step(Message(MT.APP_RESP, frm=2, to=1, term=3, index=3))
    assert r.raft_log.committed == 3  # and now it is, indirectly


def test_figure_8_scenario():
    """§5.4.2 / Figure 8: an old-term entry on a majority can still be overwritten, so it must
    not be considered committed; once the leader commits an entry of its own term, the older
    entry is safe and a stale candidate can no longer win."""
    net = Network([1, 2, 3, 4, 5], pre_vote=False, check_quorum=False)
    net.campaign(1)  # term 1, empty entry at 1 everywhere
    assert net.committed(1) == 1
    # (a) S1 replicates index 2 (term 1) only to S2.
    for other in (3, 4, 5):
        net.cut(1, other)
    net.propose(1, b"old")
    assert net.log(2)[-1] == (2, 1, b"old") and net.log(3)[-1][0] == 1
    assert net.committed(1) == 1
    # (b) S1 crashes; S5 wins term 2 with S3 and S4, appends index 2 (term 2) locally only.
    net.recover()
    net.isolate(1)
    net.restart(1)
    net.ignore(MT.APP)
    net.campaign(5)
    assert net.role(5) == StateRole.LEADER and net.term(5) == 2
    # (c) S5 crashes; S1 comes back and, after losing term 2 (S3 and S4 voted for S5), wins
    # term 3 with S2, S3 and S4.
    net.recover()
    net.isolate(5)
    net.restart(5)
    net.campaign(1)
    assert net.role(1) == StateRole.CANDIDATE and net.term(1) == 2
    net.campaign(1)
    assert net.role(1) == StateRole.LEADER and net.term(1) == 3
    # The old entry reached a majority only together with S1's term-3 entry, so it is committed.
    assert net.committed(1) == 3
    assert net.log(3)[1] == (2, 1, b"old")
    # (d) S1 crashes; S5 cannot win any more: its last term (2) is older than the majority's (3).
    net.recover()
    net.isolate(1)
    net.restart(1)
    net.campaign(5)
    assert net.role(5) != StateRole.LEADER
    net.campaign(2)
    assert net.role(2) == StateRole.LEADER
    # and S5's uncommitted index 2 is overwritten by the committed one
    assert net.log(5)[1] == (2, 1, b"old")


def test_proposal_without_leader_is_dropped():
    r = new_raft(1, [1, 2, 3])
    with pytest.raises(ProposalDroppedError):
        r.step(Message(MT.PROP, frm=1, entries=[Entry(0, 0, data=b"x")]))
    r.become_candidate()
    with pytest.raises(ProposalDroppedError):
        r.step(Message(MT.PROP, frm=1, entries=[Entry(0, 0, data=b"x")]))
