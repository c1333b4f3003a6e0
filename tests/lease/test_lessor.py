"""The lessor on its own: replicated changes, key maps, persistence, and the primary's clock (a fake one)."""

from __future__ import annotations

import math

import lmdb
import msgpack
import pytest

from kvstore.lease import MAX_LEASE_TTL, LeaseExpired, NotPrimary, min_lease_ttl
from kvstore.lease.errors import LeaseExistsError, LeaseNotFoundError, LeaseTTLTooLargeError
from kvstore.lease.lessor import FOREVER, LEASE_REVOKE_RATE, lease_key
from raft.errors import StartupError
from tests.lease.helpers import FakeClock, Node


@pytest.fixture
def node(tmp_path):
    n = Node.open(tmp_path / "db")
    yield n
    n.close()


# ---- configuration ----


@pytest.mark.parametrize(
    ("heartbeat", "election", "expected"),
    [
        (100, 1000, 2),
        (100, 500, 1),
        (10, 100, 1),
        (100, 3000, 5),
        (50, 1000, 2),
        (300, 1000, 2),
        (100, 1050, 2),
        (100, 1400, 3),
    ],
)
def test_min_lease_ttl_is_etcds(heartbeat, election, expected):
    # etcd: ceil(((3 * (election / heartbeat)) / 2) * heartbeat) in seconds, integer ticks
    assert min_lease_ttl(heartbeat, election) == expected


# ---- grant ----


def test_grant_raises_ttl_to_minimum(node):
    assert node.grant(1, 0).ttl == 2
    assert node.grant(2, -7).ttl == 2
    assert node.grant(3, 1).ttl == 2
    assert node.grant(4, 3).ttl == 3
    assert node.grant(5, MAX_LEASE_TTL).ttl == MAX_LEASE_TTL


def test_grant_errors(node):
    with pytest.raises(LeaseTTLTooLargeError):
        node.grant(1, MAX_LEASE_TTL + 1)
    with pytest.raises(LeaseNotFoundError):
        node.grant(0, 10)
    node.grant(1, 10)
    with pytest.raises(LeaseExistsError):
        node.grant(1, 20)
    assert node.lessor.lookup(1).ttl == 10


def test_negative_ids_are_leases_too(node):
    # etcd 3.4 accepts a client-chosen negative id (only server-chosen ids are positive)
    node.grant(-5, 10)
    assert node.lessor.exists(-5)
    node.put(b"k", lease=-5)
    assert node.lessor.lease_of(b"k") == -5
    node.write(lambda w: node.lessor.revoke(w, -5))
    assert node.keys() == {}


def test_grant_on_a_follower_never_expires(node):
    node.grant(1, 5)
    assert node.lessor.lookup(1).expiry == FOREVER
    node.clock.advance(1e6)
    assert node.lessor.expired(100, 7.0) == []


# ---- keys ----


def test_attach_detach_through_the_store(node):
    node.grant(1, 10)
    node.grant(2, 10)
    node.put(b"a", lease=1)
    node.put(b"b", lease=1)
    assert node.lessor.lookup(1).keys == {b"a", b"b"}
    node.put(b"a", lease=2)  # moves to lease 2
    assert node.lessor.lookup(1).keys == {b"b"}
    assert node.lessor.lookup(2).keys == {b"a"}
    node.put(b"a")  # no lease: detached
    assert node.lessor.lease_of(b"a") == 0
    assert node.lessor.lookup(2).keys == set()
    node.write(lambda w: w.delete_range(b"b", None))
    assert node.lessor.lookup(1).keys == set()
    assert node.lessor.lease_of(b"b") == 0


def test_attach_to_unknown_lease_is_ignored(node):
    node.lessor.attach(42, b"x")
    assert node.lessor.lease_of(b"x") == 0
    node.lessor.detach(42, b"x")  # no error either


# ---- revoke ----


def test_revoke_deletes_every_key_in_one_revision(node):
    node.grant(7, 10)
    for key in (b"c", b"a", b"b"):
        node.put(key, lease=7)
    node.put(b"other")
    before = node.store.current_rev
    _, w = node.write(lambda w: node.lessor.revoke(w, 7))
    assert node.store.current_rev == before + 1
    assert [(kind, kv.key, kv.mod_revision) for kind, kv in w.changes] == [
        (1, b"a", before + 1),
        (1, b"b", before + 1),
        (1, b"c", before + 1),
    ]
    assert node.keys() == {b"other": 0}
    assert not node.lessor.exists(7)
    assert node.lessor.lease_of(b"a") == 0
    with node.backend.begin_read() as txn:
        assert txn.get(lease_key(7), db=node.backend.dbs[b"lease"]) is None


def test_revoke_without_keys_makes_no_revision(node):
    node.grant(7, 10)
    before = node.store.current_rev
    node.write(lambda w: node.lessor.revoke(w, 7))
    assert node.store.current_rev == before


def test_revoke_unknown(node):
    with pytest.raises(LeaseNotFoundError):
        node.write(lambda w: node.lessor.revoke(w, 9))


def test_revoke_calls_on_revoke(node):
    seen = []
    node.lessor.on_revoke = seen.append
    node.grant(3, 10)
    node.write(lambda w: node.lessor.revoke(w, 3))
    assert seen == [3]


# ---- persistence ----


def test_leases_and_keys_survive_reopen(node):
    node.grant(1, 10)
    node.grant(2, 30)
    node.put(b"a", lease=1)
    node.put(b"b", lease=2)
    node.put(b"c", lease=2)
    node.put(b"c")  # detached again
    node.write(lambda w: node.lessor.checkpoint(w.txn, 2, 17))
    node2 = node.reopen()
    try:
        lessor = node2.lessor
        assert sorted((lease.id, lease.ttl, lease.remaining_ttl) for lease in lessor) == [(1, 10, 0), (2, 30, 17)]
        assert lessor.lookup(1).keys == {b"a"}
        assert lessor.lookup(2).keys == {b"b"}
        assert lessor.lease_of(b"c") == 0
        assert all(lease.expiry == FOREVER for lease in lessor)
    finally:
        node2.close()


def test_restore_raises_ttl_to_current_minimum(node):
    node.grant(1, 2)
    node.close()
    node2 = Node.open(node.path, min_ttl=5)
    try:
        assert node2.lessor.lookup(1).ttl == 5
    finally:
        node2.close()


def test_corrupt_lease_record_stops_startup(node):
    with node.backend.begin_write() as txn:
        txn.put(lease_key(3), b"\xc1garbage", db=node.backend.dbs[b"lease"])
    node.close()
    with pytest.raises(StartupError, match="lease record"):
        Node.open(node.path)


def test_misfiled_lease_record_stops_startup(node):
    with node.backend.begin_write() as txn:
        txn.put(lease_key(3), msgpack.packb((4, 10, 0)), db=node.backend.dbs[b"lease"])
    node.close()
    with pytest.raises(StartupError, match="lease record"):
        Node.open(node.path)


def test_grant_aborted_with_its_transaction_is_not_stored(node):
    txn = node.backend.begin_write()
    node.lessor.grant(txn, 5, 10)
    txn.abort()
    node2 = node.reopen()
    try:
        assert not node2.lessor.exists(5)
    finally:
        node2.close()


def test_reload_from_another_backend(tmp_path):
    a = Node.open(tmp_path / "a")
    a.grant(1, 10)
    a.put(b"k", lease=1)
    a.backend.close()
    b = Node.open(tmp_path / "b", clock=a.clock)
    b.grant(9, 10)
    b.put(b"z", lease=9)
    b.lessor.promote(1.0)
    # install a's data in b: reload the lessor, then open the store on the new backend
    from kvstore.mvcc import Backend, KVStore

    b.backend.close()
    new_backend = Backend(tmp_path / "a")
    b.lessor.reload(new_backend)
    store = KVStore(new_backend, leases=b.lessor)
    try:
        assert [lease.id for lease in b.lessor] == [1]
        assert b.lessor.lookup(1).keys == {b"k"}
        assert b.lessor.lease_of(b"z") == 0
        assert b.lessor.lookup(1).expiry == a.clock.now + 10  # still primary: counting from now
        assert store.current_rev == 2
    finally:
        new_backend.close()


# ---- the primary ----


def test_promote_counts_ttl_plus_extension(node):
    node.grant(1, 10)
    node.grant(2, 20)
    node.write(lambda w: node.lessor.checkpoint(w.txn, 2, 4))
    node.lessor.promote(1.5)
    now = node.clock.now
    assert node.lessor.lookup(1).expiry == now + 11.5
    assert node.lessor.lookup(2).expiry == now + 5.5  # from the checkpointed remaining TTL
    assert node.lessor.primary


def test_expiry_on_the_primary(node):
    lessor = node.lessor
    lessor.promote(0)
    node.grant(1, 5)
    node.grant(2, 20)
    node.clock.advance(4.999)
    assert lessor.expired(100, 7.0) == []
    node.clock.advance(0.001)
    assert lessor.expired(100, 7.0) == [1]
    assert lessor.expired(100, 7.0) == []  # not again before the retry interval
    node.clock.advance(7.0)
    assert lessor.expired(100, 7.0) == [1]  # the revoke did not land: found again
    node.clock.advance(8.0)
    assert lessor.expired(100, 7.0) == [1, 2]  # 1 is due for its retry too


def test_expired_respects_limit_and_order(node):
    lessor = node.lessor
    lessor.promote(0)
    for i in range(1, 11):
        node.grant(i, 2 + i)
    node.clock.advance(100)
    assert lessor.expired(3, 7.0) == [1, 2, 3]
    assert lessor.expired(3, 7.0) == [4, 5, 6]
    assert lessor.expired(100, 7.0) == [7, 8, 9, 10]


def test_revoked_lease_leaves_the_queue(node):
    lessor = node.lessor
    lessor.promote(0)
    node.grant(1, 5)
    node.write(lambda w: lessor.revoke(w, 1))
    node.clock.advance(10)
    assert lessor.expired(10, 7.0) == []


def test_renew(node):
    lessor = node.lessor
    with pytest.raises(NotPrimary):
        lessor.renew(1)
    lessor.promote(0)
    node.grant(1, 5)
    with pytest.raises(LeaseNotFoundError):
        lessor.renew(2)
    node.clock.advance(4)
    assert lessor.renew(1) == (5, False)
    assert lessor.lookup(1).expiry == node.clock.now + 5
    node.clock.advance(4.5)
    assert lessor.expired(10, 7.0) == []  # renewed: not yet
    node.clock.advance(0.5)
    with pytest.raises(LeaseExpired):
        lessor.renew(1)
    assert lessor.expired(10, 7.0) == [1]


def test_renew_asks_to_clear_a_checkpoint(node):
    lessor = node.lessor
    node.grant(1, 100)
    node.write(lambda w: lessor.checkpoint(w.txn, 1, 30))
    lessor.promote(0)
    assert lessor.lookup(1).expiry == node.clock.now + 30
    ttl, clear = lessor.renew(1)
    assert (ttl, clear) == (100, True)
    assert lessor.lookup(1).expiry == node.clock.now + 100  # the full TTL at once
    node.write(lambda w: lessor.checkpoint(w.txn, 1, 0))
    assert lessor.renew(1) == (100, False)


def test_demote_stops_counting(node):
    lessor = node.lessor
    lessor.promote(0)
    node.grant(1, 5)
    lessor.demote()
    assert not lessor.primary
    assert lessor.lookup(1).expiry == FOREVER
    node.clock.advance(100)
    assert lessor.expired(10, 7.0) == []
    assert lessor.due_checkpoints() == []
    with pytest.raises(NotPrimary):
        lessor.renew(1)


def test_time_to_live_truncates(node):
    lessor = node.lessor
    node.grant(1, 10)
    assert lessor.time_to_live(lessor.lookup(1)) == (2**63 - 1) // 10**9  # nobody counts: Go's max duration
    lessor.promote(0)
    node.clock.advance(0.4)
    assert lessor.time_to_live(lessor.lookup(1)) == 9
    node.clock.advance(9.6)
    assert lessor.time_to_live(lessor.lookup(1)) == 0
    node.clock.advance(1.5)
    assert lessor.time_to_live(lessor.lookup(1)) == -1


def test_leases_sorted_by_expiry_then_id(node):
    lessor = node.lessor
    lessor.promote(0)
    node.grant(3, 10)
    node.grant(1, 20)
    node.grant(2, 10)
    assert [lease.id for lease in lessor.leases()] == [2, 3, 1]


def test_checkpoints(tmp_path):
    node = Node.open(tmp_path / "db", checkpoint_interval=60.0)
    try:
        lessor = node.lessor
        lessor.promote(0)
        node.grant(1, 600)  # long: checkpointed
        node.grant(2, 30)  # shorter than the interval: never
        assert lessor.due_checkpoints() == []
        node.clock.advance(60)
        assert lessor.due_checkpoints() == [(1, 540)]
        assert lessor.due_checkpoints() == []  # rescheduled when the checkpoint is applied
        node.write(lambda w: lessor.checkpoint(w.txn, 1, 540))
        node.clock.advance(59.5)
        assert lessor.due_checkpoints() == []
        node.clock.advance(0.5)
        assert lessor.due_checkpoints() == [(1, 480)]
        node.write(lambda w: lessor.checkpoint(w.txn, 1, 480))
        # renewed as the next one falls due: nothing to record, but it stays scheduled
        node.clock.advance(60)
        lessor.renew(1)
        assert lessor.due_checkpoints() == []
        node.clock.advance(60)
        assert lessor.due_checkpoints() == [(1, 540)]
    finally:
        node.close()


def test_checkpoint_of_unknown_lease_is_ignored(node):
    node.write(lambda w: node.lessor.checkpoint(w.txn, 5, 3))
    assert not node.lessor.exists(5)


def test_checkpoint_survives_restart_and_a_new_primary_counts_from_it(node):
    node.grant(1, 3600)
    node.write(lambda w: node.lessor.checkpoint(w.txn, 1, 100))
    node2 = node.reopen()
    try:
        node2.lessor.promote(1.0)
        assert node2.lessor.lookup(1).expiry == node2.clock.now + 101
    finally:
        node2.close()


def test_promote_spreads_a_pile_of_expiries(tmp_path):
    clock = FakeClock()
    node = Node.open(tmp_path / "db", clock=clock)
    n = 3 * LEASE_REVOKE_RATE
    try:
        txn = node.backend.begin_write()
        for i in range(1, n + 1):
            node.lessor.grant(txn, i, 10)
        txn.commit()
        node.lessor.promote(1.0)
        expiries = sorted(lease.expiry - clock.now for lease in node.lessor)
        assert expiries[0] == pytest.approx(11.0)
        # no one-second window holds more than 3/4 of the revoke rate (plus the window's first lease)
        target = (3 * LEASE_REVOKE_RATE) // 4
        for start in range(0, len(expiries), 97):
            window = [e for e in expiries if expiries[start] <= e < expiries[start] + 1.0]
            assert len(window) <= target + 1
        assert max(expiries) == pytest.approx(11.0 + n / target, abs=0.01)
        assert all(math.isfinite(e) for e in expiries)
    finally:
        node.close()


def test_lease_bucket_holds_id_ttl_remaining(node):
    node.grant(0x1234, 10)
    with node.backend.begin_read() as txn:
        raw = txn.get(lease_key(0x1234), db=node.backend.dbs[b"lease"])
    assert msgpack.unpackb(raw) == [0x1234, 10, 0]
    assert lease_key(0x1234) == b"\x00\x00\x00\x00\x00\x00\x12\x34"
    assert lease_key(-1) == b"\xff" * 8
    assert isinstance(node.backend.env, lmdb.Environment)


def test_renewal_that_shortens_the_expiry_requeues(node):
    lessor = node.lessor
    node.grant(1, 5)
    lessor.promote(3.0)  # expires at +8
    node.clock.advance(1)
    lessor.renew(1)  # now +5 from here: earlier than before
    node.clock.advance(5)
    assert lessor.expired(10, 7.0) == [1]


def test_renewals_do_not_touch_the_queue_until_the_lease_comes_up(node):
    lessor = node.lessor
    lessor.promote(0)
    node.grant(1, 5)
    queued = lessor._expiries.time_of(1)
    for _ in range(10):
        node.clock.advance(1)
        lessor.renew(1)
    assert lessor._expiries.time_of(1) == queued  # the heap was not touched
    assert lessor.expired(10, 7.0) == []  # came up: moved to its real expiry
    assert lessor._expiries.time_of(1) == node.clock.now + 5
    node.clock.advance(5)
    assert lessor.expired(10, 7.0) == [1]
