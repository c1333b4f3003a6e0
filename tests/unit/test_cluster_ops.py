"""The state machine's side of operating a cluster, without processes: membership changes as the
applier validates them (etcd's ValidateConfigurationChange), what each member records (and what a
snapshot carries: etcd's members_removed and alarm encodings), alarms and the writes they refuse, the
backend quota's costs, and the strict reconfiguration rules."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from kvstore.alarms import CORRUPT, NOSPACE, AlarmStore, go_text
from kvstore.apply import Applier, Op, encode_request
from kvstore.errors import (
    Corrupt,
    MemberBadURLs,
    MemberExist,
    MemberNotEnoughStarted,
    MemberNotFound,
    MemberNotLearner,
    NoSpace,
    PeerURLExist,
    TooManyLearners,
)
from kvstore.lease import Lessor
from kvstore.membership import ChangeContext, MemberInfo, Membership, new_member_id
from kvstore.mvcc import Backend, KVStore
from kvstore.quota import Quota, cost
from kvstore.server import reconfig
from kvstore.snapshot import etcd_schema as s
from kvstore.snapshot.snapshot_file import open_snapshot, write_snapshot
from proto.etcdserverpb import rpc_pb2 as pb


class State:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.backend = Backend(path)
        self.lessor = Lessor(self.backend, min_ttl=1)
        self.applier = Applier(KVStore(self.backend, leases=self.lessor), leases=self.lessor)
        self.index = self.applier.applied_index

    def reopen(self) -> State:
        self.backend.close()
        return State(self.path)

    def conf(self, kind: str, member_id: int, **ctx: object) -> tuple[bool, object]:
        self.index += 1
        accepted, result = self.applier.apply_conf_change(self.index, 1, kind, member_id, ChangeContext(**ctx), None)
        return accepted, result

    def apply(self, op: Op, request: object) -> object:
        self.index += 1
        data = encode_request(op, self.index, request.SerializeToString())  # type: ignore[attr-defined]
        return self.applier.apply([(self.index, 1, data)])[0][1]


@pytest.fixture
def state(tmp_path: Path) -> State:
    st = State(tmp_path / "db")
    for i, port in ((1, 1), (2, 2), (3, 3)):
        accepted, result = st.conf("add", i, name=f"m{i}", peer_urls=(f"http://h:{port}",))
        assert accepted and result.error is None
    return st


# ---- membership ----


def test_changes_and_their_errors(state: State) -> None:
    cases = [
        (("add", 2), {"peer_urls": ("http://new:1",)}, MemberExist),
        (("add", 9), {"peer_urls": ("http://h:2",)}, PeerURLExist),
        (("add_learner", 9), {"peer_urls": ("http://h:3",), "learner": True}, PeerURLExist),
        (("remove", 9), {}, MemberNotFound),
        (("update", 9), {"peer_urls": ("http://x:1",)}, MemberNotFound),
        (("update", 2), {"peer_urls": ("http://h:1",)}, PeerURLExist),  # another member's URL
        (("add", 2), {"promote": True}, MemberNotLearner),
        (("add", 9), {"promote": True}, MemberNotFound),
    ]
    for (kind, mid), ctx, error in cases:
        accepted, result = state.conf(kind, mid, **ctx)
        assert not accepted and isinstance(result.error, error), (kind, mid, ctx)
    # nothing changed, and every rejected entry still counts as applied
    assert sorted(state.applier.membership.members) == [1, 2, 3]
    assert state.backend.consistent_index()[0] == state.index


def test_learner_promotion_update_and_removal(state: State) -> None:
    accepted, result = state.conf("add_learner", 4, peer_urls=("http://h:4",), learner=True)
    assert accepted and [m.id for m in result.members if m.is_learner] == [4]
    accepted, result = state.conf("add_learner", 5, peer_urls=("http://h:5",), learner=True)
    assert not accepted and isinstance(result.error, TooManyLearners)  # etcd allows one learner
    assert state.applier.membership.conf_state() == ((1, 2, 3), (4,))
    accepted, _ = state.conf("add", 4, promote=True)
    assert accepted and state.applier.membership.conf_state() == ((1, 2, 3, 4), ())
    accepted, result = state.conf("update", 2, peer_urls=("http://moved:2",))
    assert not accepted and result.error is None  # an update takes no effect on Raft's configuration
    assert state.applier.membership.members[2].peer_urls == ["http://moved:2"]
    accepted, _ = state.conf("remove", 3)
    assert accepted
    # a removed id is never accepted again, whatever the change
    for kind, ctx in (("add", {"peer_urls": ("http://h:9",)}), ("remove", {}), ("update", {})):
        accepted, result = state.conf(kind, 3, **ctx)
        assert not accepted and isinstance(result.error, MemberNotFound)
    reopened = state.reopen()  # all of it is durable
    m = reopened.applier.membership
    assert m.conf_state() == ((1, 2, 4), ()) and m.removed == {3}
    assert m.members[2].peer_urls == ["http://moved:2"] and m.members[1].name == "m1"


def test_the_last_voter_is_never_removed(tmp_path: Path) -> None:
    st = State(tmp_path / "db")
    st.conf("add", 1, peer_urls=("http://h:1",))
    st.conf("add_learner", 2, peer_urls=("http://h:2",), learner=True)
    accepted, result = st.conf("remove", 1)
    assert not accepted and isinstance(result.error, MemberNotEnoughStarted)
    accepted, _ = st.conf("remove", 2)  # a learner may go
    assert accepted


def test_replayed_entries_answer_whether_they_took_effect(state: State) -> None:
    state.conf("add_learner", 4, peer_urls=("http://h:4",), learner=True)
    state.conf("add", 4, promote=True)
    state.conf("remove", 2)
    m = state.applier.membership
    for kind, mid, ctx, reflected in [
        ("add_learner", 4, {}, True),
        ("add", 4, {"promote": True}, True),
        ("remove", 2, {}, True),
        ("remove", 1, {}, False),
        ("add", 7, {}, False),
    ]:
        accepted, result = state.applier.apply_conf_change(1, 1, kind, mid, ChangeContext(**ctx), None)
        assert result is None and accepted is reflected and m.reflects(kind, mid, ChangeContext(**ctx)) is reflected


def test_removed_ids_are_stored_as_etcd_stores_them(state: State) -> None:
    state.conf("remove", 0xABC)  # unknown: rejected, not recorded
    state.conf("remove", 3)
    with state.backend.begin_read() as txn:
        pairs = list(txn.cursor(db=state.backend.dbs[s.MEMBERS_REMOVED]))
    assert pairs == [(b"3", b"removed")]
    assert Membership(state.backend).removed == {3}


def test_contexts_round_trip_and_ids_follow_etcd() -> None:
    ctx = ChangeContext(77, "n", ("http://a:1",), True, False)
    assert ChangeContext.decode(ctx.encode()) == ctx
    assert ChangeContext.decode(b"") == ChangeContext()
    a = new_member_id(["http://b:2", "http://a:1"], 1000)
    assert a == new_member_id(["http://a:1", "http://b:2"], 1000)  # the URLs are sorted first
    assert a != new_member_id(["http://a:1", "http://b:2"], 1001)  # the time makes a re-add a new id


# ---- alarms and the quota ----


def test_nospace_refuses_puts_and_grants_but_not_deletes_or_compactions(state: State) -> None:
    assert state.apply(Op.PUT, pb.PutRequest(key=b"a", value=b"1")).header.revision == 2  # type: ignore[attr-defined]
    resp = state.apply(Op.ALARM, pb.AlarmRequest(action=pb.AlarmRequest.ACTIVATE, memberID=7, alarm=NOSPACE))
    assert list(resp.alarms) == [pb.AlarmMember(memberID=7, alarm=NOSPACE)]  # type: ignore[attr-defined]
    put = pb.RequestOp(request_put=pb.PutRequest(key=b"b", value=b"2"))
    rng = pb.RequestOp(request_range=pb.RangeRequest(key=b"a"))
    assert isinstance(state.apply(Op.PUT, pb.PutRequest(key=b"b")), NoSpace)
    assert isinstance(state.apply(Op.TXN, pb.TxnRequest(failure=[put])), NoSpace)  # a put in either branch
    assert isinstance(state.apply(Op.LEASE_GRANT, pb.LeaseGrantRequest(ID=5, TTL=60)), NoSpace)
    assert not isinstance(state.apply(Op.TXN, pb.TxnRequest(success=[rng])), NoSpace)
    assert state.apply(Op.DELETE_RANGE, pb.DeleteRangeRequest(key=b"a")).deleted == 1  # type: ignore[attr-defined]
    assert not isinstance(state.apply(Op.COMPACT, pb.CompactionRequest(revision=2)), NoSpace)
    got = state.apply(Op.ALARM, pb.AlarmRequest(action=pb.AlarmRequest.GET))
    assert [go_text(a) for a in got.alarms] == ["memberID:7 alarm:NOSPACE "]  # type: ignore[attr-defined]
    resp = state.apply(Op.ALARM, pb.AlarmRequest(action=pb.AlarmRequest.DEACTIVATE, memberID=7, alarm=NOSPACE))
    assert len(resp.alarms) == 1  # type: ignore[attr-defined]
    assert state.apply(Op.PUT, pb.PutRequest(key=b"b")).header.revision > 2  # type: ignore[attr-defined]
    again = state.apply(Op.ALARM, pb.AlarmRequest(action=pb.AlarmRequest.DEACTIVATE, memberID=7, alarm=NOSPACE))
    assert len(again.alarms) == 0  # type: ignore[attr-defined]


def test_corrupt_refuses_every_write_and_compaction(state: State) -> None:
    state.apply(Op.ALARM, pb.AlarmRequest(action=pb.AlarmRequest.ACTIVATE, memberID=0, alarm=CORRUPT))
    for op, req in [
        (Op.PUT, pb.PutRequest(key=b"a")),
        (Op.DELETE_RANGE, pb.DeleteRangeRequest(key=b"a")),
        (Op.TXN, pb.TxnRequest()),
        (Op.COMPACT, pb.CompactionRequest(revision=1)),
        (Op.LEASE_GRANT, pb.LeaseGrantRequest(ID=1, TTL=60)),
        (Op.LEASE_REVOKE, pb.LeaseRevokeRequest(ID=1)),
    ]:
        assert isinstance(state.apply(op, req), Corrupt), op
    assert go_text(pb.AlarmMember(alarm=CORRUPT)) == "alarm:CORRUPT "


def test_alarms_persist_in_etcds_encoding(state: State) -> None:
    state.apply(Op.ALARM, pb.AlarmRequest(action=pb.AlarmRequest.ACTIVATE, memberID=9, alarm=NOSPACE))
    state.apply(Op.ALARM, pb.AlarmRequest(action=pb.AlarmRequest.ACTIVATE, memberID=0, alarm=CORRUPT))
    with state.backend.begin_read() as txn:
        keys = [k for k, v in txn.cursor(db=state.backend.dbs[s.ALARM]) if v == b""]
    expected = [pb.AlarmMember(memberID=9, alarm=NOSPACE), pb.AlarmMember(alarm=CORRUPT)]
    assert sorted(keys) == sorted(a.SerializeToString() for a in expected)
    store = AlarmStore(state.reopen().backend)
    assert store.active(NOSPACE) and store.active(CORRUPT)
    assert [(a.alarm, a.memberID) for a in store.get()] == [(NOSPACE, 9), (CORRUPT, 0)]
    assert [a.memberID for a in store.get(CORRUPT)] == [0]


def test_quota_costs_as_etcd_charges() -> None:
    put = pb.PutRequest(key=b"k" * 10, value=b"v" * 100)
    assert cost(put) == 256 + 110
    txn = pb.TxnRequest(
        success=[pb.RequestOp(request_put=put), pb.RequestOp(request_range=pb.RangeRequest(key=b"x"))],
        failure=[pb.RequestOp(request_put=put), pb.RequestOp(request_put=put)],
    )
    assert cost(txn) == 2 * (256 + 110)  # the larger branch
    assert cost(pb.LeaseGrantRequest(TTL=5)) == 64
    assert cost(pb.DeleteRangeRequest(key=b"k")) == 0 and cost(pb.TxnRequest()) == 0
    size = [1000]
    q = Quota(2000, lambda: size[0], size_ttl=0)
    assert q.available(put) and q.available(pb.DeleteRangeRequest())
    size[0] = 1700
    assert not q.available(put) and q.available(pb.DeleteRangeRequest())
    assert Quota(-1, lambda: 10**12).available(put)  # a negative quota disables the check


# ---- strict reconfiguration ----


def fake(voters: list[tuple[int, str]], connected: dict[int, float | None], me: int = 1) -> SimpleNamespace:
    members = {i: MemberInfo(i, name, [f"http://h:{i}"]) for i, name in voters}
    membership = SimpleNamespace(members=members, voters=lambda: list(members.values()))
    log = SimpleNamespace(connected_for=lambda peer: connected.get(peer), progress=lambda: None, leader=me)
    cfg = SimpleNamespace(strict_reconfig_check=True)
    return SimpleNamespace(member_id=me, applier=SimpleNamespace(membership=membership), log=log, cfg=cfg)


def test_strict_checks_count_started_and_connected_members() -> None:
    up = {2: 10.0, 3: 10.0}
    healthy = fake([(1, "a"), (2, "b"), (3, "c")], up)
    reconfig._may_add(healthy, learner=False)
    reconfig._may_remove(healthy, 3)
    # an unstarted voter (no name yet) and one more would lose the started quorum
    two_unstarted = fake([(1, "a"), (2, "b"), (3, ""), (4, "")], {2: 10.0, 3: 10.0, 4: 10.0})
    with pytest.raises(MemberNotEnoughStarted):
        reconfig._may_add(two_unstarted, learner=False)
    reconfig._may_add(fake([(1, "a")], {}), learner=False)  # the one-member cluster exception
    # a voter connected for less than 5 s blocks additions
    fresh = fake([(1, "a"), (2, "b"), (3, "c")], {2: 10.0, 3: 1.0})
    with pytest.raises(Exception, match="unhealthy"):
        reconfig._may_add(fresh, learner=True)
    # removing a member that is down is fine; removing a live one when another is down is not
    one_down = fake([(1, "a"), (2, "b"), (3, "c")], {2: 10.0, 3: None})
    reconfig._may_remove(one_down, 3)
    with pytest.raises(Exception, match="unhealthy"):
        reconfig._may_remove(one_down, 2)
    with pytest.raises(MemberNotEnoughStarted):
        reconfig._may_remove(fake([(1, "a")], {}), 1)  # the last voter


def test_peer_urls_are_checked_as_etcd_checks_them() -> None:
    assert reconfig.parse_urls(["http://b:2", " https://a:1 ", "unix://s:3"]) == [
        "http://b:2",
        "https://a:1",
        "unix://s:3",
    ]
    for bad in ([], ["127.0.0.1:2380"], ["ftp://a:1"], ["http://a"], ["http://a:1/path"], ["http://a:x"]):
        with pytest.raises(MemberBadURLs):
            reconfig.parse_urls(bad)


def test_a_snapshot_carries_alarms_and_removed_members_in_etcds_buckets(state: State, tmp_path: Path) -> None:
    state.apply(Op.ALARM, pb.AlarmRequest(action=pb.AlarmRequest.ACTIVATE, memberID=42, alarm=NOSPACE))
    state.conf("remove", 2)
    path = tmp_path / "snap.db"
    write_snapshot(state.backend, path, "3.5.17")
    with open_snapshot(path) as snap:
        root = snap.db.root()
        assert list(root.bucket(s.ALARM)) == [(pb.AlarmMember(memberID=42, alarm=NOSPACE).SerializeToString(), b"")]
        assert list(root.bucket(s.MEMBERS_REMOVED)) == [(b"2", b"removed")]
        assert sorted(k for k, _ in root.bucket(s.MEMBERS)) == [b"1", b"3"]
