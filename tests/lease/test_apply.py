"""The lease apply functions over a real store: what the applier does for grant, revoke and checkpoint.

These run without the applier wiring: each request is applied as the applier will, inside one
store revision (``WriteTxn``) of one backend write transaction.
"""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from kvstore.lease import MAX_LEASE_TTL, apply_lease_checkpoint, apply_lease_grant, apply_lease_revoke
from kvstore.lease.errors import LeaseError, LeaseExistsError, LeaseNotFoundError, LeaseTTLTooLargeError
from kvstore.mvcc.store import EVENT_DELETE
from proto.etcdserverpb import rpc_pb2 as pb
from tests.lease.helpers import FakeClock, Node


def grant(node: Node, lease_id: int, ttl: int) -> pb.LeaseGrantResponse:
    body = pb.LeaseGrantRequest(ID=lease_id, TTL=ttl).SerializeToString()
    return node.write(lambda w: apply_lease_grant(node.lessor, w, body))[0]


def revoke(node: Node, lease_id: int):
    body = pb.LeaseRevokeRequest(ID=lease_id).SerializeToString()
    return node.write(lambda w: apply_lease_revoke(node.lessor, w, body))


def checkpoint(node: Node, *cps: tuple[int, int]) -> pb.LeaseCheckpointResponse:
    req = pb.LeaseCheckpointRequest(checkpoints=[pb.LeaseCheckpoint(ID=i, remaining_TTL=r) for i, r in cps])
    body = req.SerializeToString()
    return node.write(lambda w: apply_lease_checkpoint(node.lessor, w, body))[0]


@pytest.fixture
def node(tmp_path):
    n = Node.open(tmp_path / "db")
    yield n
    n.close()


def test_grant_response(node):
    node.put(b"x")
    resp = grant(node, 42, 1)
    assert (resp.ID, resp.TTL, resp.header.revision) == (42, 2, 2)


@pytest.mark.parametrize(
    ("lease_id", "ttl", "error"),
    [(0, 10, LeaseNotFoundError), (7, MAX_LEASE_TTL + 1, LeaseTTLTooLargeError), (1, 10, LeaseExistsError)],
)
def test_grant_errors_change_nothing(node, lease_id, ttl, error):
    grant(node, 1, 10)
    with pytest.raises(error):
        grant(node, lease_id, ttl)
    assert [lease.id for lease in node.lessor] == [1]
    assert node.lessor.lookup(1).ttl == 10


def test_revoke_response_and_events(node):
    grant(node, 5, 10)
    node.put(b"b", lease=5)
    node.put(b"a", lease=5)
    node.put(b"c")
    resp, w = revoke(node, 5)
    assert resp.header.revision == 5 == node.store.current_rev
    assert [(kind, kv.key, kv.mod_revision) for kind, kv in w.changes] == [
        (EVENT_DELETE, b"a", 5),
        (EVENT_DELETE, b"b", 5),
    ]
    assert node.keys() == {b"c": 0}
    assert node.store.range(b"a", None, rev=4).kvs[0].lease == 5  # history keeps the lease


def test_revoke_unknown(node):
    with pytest.raises(LeaseNotFoundError):
        revoke(node, 3)


def test_checkpoint_records_remaining_and_skips_unknown(node):
    grant(node, 1, 100)
    grant(node, 2, 100)
    resp = checkpoint(node, (1, 40), (9, 5), (2, 70))
    assert resp.header.revision == 1
    assert node.lessor.lookup(1).remaining_ttl == 40
    assert node.lessor.lookup(2).remaining_ttl == 70
    node2 = node.reopen()
    try:
        assert node2.lessor.lookup(1).remaining_ttl == 40
    finally:
        node2.close()


# ---- determinism: the same requests give the same state whatever the clocks and roles ----

LEASES = st.integers(1, 4)
KEYS = st.sampled_from([b"a", b"b", b"c", b"d"])
REQUESTS = st.lists(
    st.one_of(
        st.tuples(st.just("grant"), LEASES, st.integers(-1, 12)),
        st.tuples(st.just("revoke"), LEASES, st.just(0)),
        st.tuples(st.just("put"), KEYS, st.integers(0, 4)),
        st.tuples(st.just("delete"), KEYS, st.just(0)),
        st.tuples(st.just("checkpoint"), LEASES, st.integers(0, 12)),
        st.tuples(st.just("tick"), st.just(0), st.integers(0, 30)),
    ),
    max_size=40,
)


def apply(node: Node, op: str, a: object, b: int) -> object:
    try:
        if op == "grant":
            return grant(node, a, b).SerializeToString()  # type: ignore[arg-type]
        if op == "revoke":
            resp, w = revoke(node, a)  # type: ignore[arg-type]
            return resp.SerializeToString(), [(k, kv.SerializeToString()) for k, kv in w.changes]
        if op == "checkpoint":
            return checkpoint(node, (a, b)).SerializeToString()  # type: ignore[arg-type]
        if op == "put":
            if b and not node.lessor.exists(b):
                raise LeaseNotFoundError()  # what the applier checks first
            return node.put(a, b"v", b)  # type: ignore[arg-type]
        if op == "delete":
            return node.write(lambda w: w.delete_range(a, None))[0]
        node.clock.advance(b)  # only the primary's clock moves; nothing replicated may notice
        return None
    except LeaseError as exc:
        return type(exc).__name__


def dump(node: Node) -> tuple:
    backend = node.backend
    with backend.begin_read() as txn:
        return tuple(tuple(txn.cursor(db=backend.dbs[name])) for name in (b"key", b"lease")), node.store.current_rev


@settings(max_examples=60, deadline=None)
@given(REQUESTS)
def test_replicas_agree(tmp_path_factory, requests):
    base = tmp_path_factory.mktemp("replicas")
    follower = Node.open(base / "follower", clock=FakeClock(1000.0))
    leader = Node.open(base / "leader", clock=FakeClock(77.0))
    leader.lessor.promote(1.0)
    try:
        for op, a, b in requests:
            if op == "tick":
                leader.clock.advance(b)
                continue
            assert apply(follower, op, a, b) == apply(leader, op, a, b)
        assert dump(follower) == dump(leader)
        for n in (follower, leader):
            maps = {lease.id: (lease.ttl, lease.remaining_ttl, frozenset(lease.keys)) for lease in n.lessor}
            assert maps == {
                lease.id: (lease.ttl, lease.remaining_ttl, frozenset(lease.keys)) for lease in follower.lessor
            }
            live = n.keys()
            assert {k: lease for k, lease in live.items() if lease} == {
                k: n.lessor.lease_of(k) for k in live if n.lessor.lease_of(k)
            }
        # what a restart rebuilds equals what was kept in memory
        reopened = follower.reopen()
        try:
            assert {lease.id: (lease.ttl, lease.remaining_ttl, frozenset(lease.keys)) for lease in reopened.lessor} == {
                lease.id: (lease.ttl, lease.remaining_ttl, frozenset(lease.keys)) for lease in leader.lessor
            }
        finally:
            reopened.close()
    finally:
        follower.close()
        leader.close()
