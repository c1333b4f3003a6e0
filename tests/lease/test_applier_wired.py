"""Leases through the real Applier (log codec -> Applier -> lessor + KVStore -> LMDB)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvstore.apply import Applier, Op, encode_request
from kvstore.errors import LeaseNotFound
from kvstore.lease import Lessor
from kvstore.mvcc import Backend, KVStore
from kvstore.mvcc.store import EVENT_DELETE, EVENT_PUT
from proto.etcdserverpb import rpc_pb2 as pb
from tests.lease.helpers import FakeClock


class Member:
    def __init__(self, path: Path, clock: FakeClock | None = None) -> None:
        self.path = path
        self.clock = clock or FakeClock()
        self.backend = Backend(path)
        self.lessor = Lessor(self.backend, min_ttl=2, clock=self.clock)
        self.store = KVStore(self.backend, leases=self.lessor)
        self.batches: list = []
        self.applier = Applier(self.store, leases=self.lessor, on_changes=self.batches.extend)
        self.index = self.applier.applied_index
        self.closed = False

    def apply(self, *reqs: tuple[Op, object]) -> list:
        entries = []
        for op, msg in reqs:
            self.index += 1
            entries.append((self.index, 1, encode_request(op, self.index, msg.SerializeToString())))  # type: ignore[attr-defined]
        return [result for _, result in self.applier.apply(entries)]

    def reopen(self) -> Member:
        self.close()
        return Member(self.path, self.clock)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.backend.close()


@pytest.fixture
def member(tmp_path):
    m = Member(tmp_path / "m")
    yield m
    m.close()


def grant(lease_id: int, ttl: int) -> tuple[Op, pb.LeaseGrantRequest]:
    return Op.LEASE_GRANT, pb.LeaseGrantRequest(ID=lease_id, TTL=ttl)


def put(key: bytes, lease: int = 0, **kw: object) -> tuple[Op, pb.PutRequest]:
    return Op.PUT, pb.PutRequest(key=key, value=b"v", lease=lease, **kw)


def revoke(lease_id: int) -> tuple[Op, pb.LeaseRevokeRequest]:
    return Op.LEASE_REVOKE, pb.LeaseRevokeRequest(ID=lease_id)


def test_grant_put_revoke(member):
    results = member.apply(grant(5, 1), put(b"a", 5), put(b"b", 5), put(b"c"))
    assert (results[0].ID, results[0].TTL, results[0].header.revision) == (5, 2, 1)
    assert member.lessor.lookup(5).keys == {b"a", b"b"}
    member.batches.clear()
    (resp,) = member.apply(revoke(5))
    assert resp.header.revision == 5
    assert member.batches == [
        (5, [(EVENT_DELETE, member.batches[0][1][0][1]), (EVENT_DELETE, member.batches[0][1][1][1])])
    ]
    assert [kv.key for _, kv in member.batches[0][1]] == [b"a", b"b"]
    assert [kv.key for kv in member.store.range(b"\x00", b"").kvs] == [b"c"]
    assert isinstance(member.apply(revoke(5))[0], LeaseNotFound)


def test_put_with_unknown_lease_fails(member):
    (result,) = member.apply(put(b"a", 9))
    assert isinstance(result, LeaseNotFound)
    assert member.store.current_rev == 1


def test_put_without_lease_detaches_but_ignore_lease_keeps(member):
    member.apply(grant(5, 10), put(b"a", 5), put(b"b", 5))
    member.apply(put(b"a"), put(b"b", ignore_lease=True))
    assert member.lessor.lookup(5).keys == {b"b"}
    member.apply((Op.DELETE_RANGE, pb.DeleteRangeRequest(key=b"b")))
    assert member.lessor.lookup(5).keys == set()


def test_txn_put_with_lease_attaches(member):
    member.apply(grant(5, 10))
    txn = pb.TxnRequest(success=[pb.RequestOp(request_put=pb.PutRequest(key=b"t", value=b"1", lease=5))])
    (resp,) = member.apply((Op.TXN, txn))
    assert resp.succeeded
    assert member.lessor.lease_of(b"t") == 5
    bad = pb.TxnRequest(success=[pb.RequestOp(request_put=pb.PutRequest(key=b"u", value=b"1", lease=6))])
    assert isinstance(member.apply((Op.TXN, bad))[0], LeaseNotFound)


def test_checkpoint_through_the_log(member):
    member.apply(grant(5, 1000))
    cp = pb.LeaseCheckpointRequest(checkpoints=[pb.LeaseCheckpoint(ID=5, remaining_TTL=300)])
    member.apply((Op.LEASE_CHECKPOINT, cp))
    assert member.lessor.lookup(5).remaining_ttl == 300


def test_restart_replays_nothing_twice_and_restores_leases(member):
    member.apply(grant(5, 10), put(b"a", 5), grant(6, 20))
    index = member.index
    m2 = member.reopen()
    try:
        assert m2.applier.applied_index == index
        assert m2.lessor.lookup(5).keys == {b"a"}
        assert m2.lessor.exists(6)
        # the log replays its tail: entries already applied are skipped, so no "lease already exists"
        m2.index = index - 1
        replay = m2.apply(grant(6, 20))
        assert replay == []
    finally:
        m2.close()


def test_members_agree(tmp_path):
    a = Member(tmp_path / "a", FakeClock(1.0))
    b = Member(tmp_path / "b", FakeClock(500.0))
    b.lessor.promote(1.0)  # b leads: its clock and expiries must not change anything replicated
    reqs = [grant(1, 5), put(b"x", 1), put(b"y", 1), grant(2, 7), put(b"z", 2), revoke(1), put(b"z"), revoke(2)]
    try:
        for req in reqs:
            b.clock.advance(3)
            ra, rb = a.apply(req), b.apply(req)
            assert [r.SerializeToString() for r in ra] == [r.SerializeToString() for r in rb]
        assert a.batches == b.batches
        assert [(kind, kv.key) for rev, evs in a.batches for kind, kv in evs][-3:] == [
            (EVENT_DELETE, b"x"),
            (EVENT_DELETE, b"y"),
            (EVENT_PUT, b"z"),
        ]
    finally:
        a.close()
        b.close()
