"""The Lock and Election services from a gRPC client, against raftkv and real etcd 3.4.23 side by side.

Each scenario runs the same calls against both servers and records a transcript: every answer as
its text form (header reduced to its revision) or its gRPC code and message. Revisions are made
relative to the revision the scenario started at, lease ids are chosen by the test, so the two
transcripts must be equal line for line. The one difference by design is etcd 3.5's fix that
raftkv follows (``mutex: session is expired`` for a waiter whose lease went while it waited, where
3.4.23 answered success with a key that no longer exists): that scenario names it.

Waits are for conditions (a waiter's key appearing, a stream's next message), never for time,
except where a lease must expire, whose TTL the servers count.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from chaos.targets import LocalTarget
from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc
from proto.v3electionpb import v3election_pb2 as epb
from proto.v3electionpb import v3election_pb2_grpc
from proto.v3lockpb import v3lock_pb2 as lockpb
from proto.v3lockpb import v3lock_pb2_grpc
from tests.procs import EtcdMember, RaftkvMember
from tests.sidebyside import Transcript, assert_same

pytestmark = pytest.mark.integration
SHORT_TTL = 2  # etcd's minimum with the default election timeout
WAIT = 30.0
_scenarios = itertools.count(1)


class Session(Transcript):
    """One server's stubs and a transcript of what it answered."""

    def __init__(self, endpoint: str, first_lease: int = 0x7E57_0000) -> None:
        self._ids = itertools.count(first_lease)
        self.channel = grpc.insecure_channel(endpoint)
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self.lease = rpc_pb2_grpc.LeaseStub(self.channel)
        self.lock = v3lock_pb2_grpc.LockStub(self.channel)
        self.election = v3election_pb2_grpc.ElectionStub(self.channel)
        super().__init__(self.kv.Range(pb.RangeRequest(key=b"probe")).header.revision)

    def close(self) -> None:
        self.channel.close()

    def result(self, what: str, fut: grpc.Future, timeout: float = WAIT) -> Any:
        return self.call(what, lambda: fut.result(timeout=timeout))

    def grant(self, ttl: int) -> int:
        lease_id = next(self._ids)
        self.lease.LeaseGrant(pb.LeaseGrantRequest(ID=lease_id, TTL=ttl), timeout=10)
        return lease_id

    def keys(self, prefix: bytes) -> list[bytes]:
        end = prefix[:-1] + bytes([prefix[-1] + 1])
        return [kv.key for kv in self.kv.Range(pb.RangeRequest(key=prefix, range_end=end, keys_only=True)).kvs]

    def wait_keys(self, prefix: bytes, n: int, timeout: float = WAIT) -> None:
        """Until exactly n keys are under prefix (a waiter joined, an expired one left)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                got = self.keys(prefix)
            except grpc.RpcError as err:  # a leader change under the read (a member was killed)
                if err.code() != grpc.StatusCode.UNAVAILABLE:  # type: ignore[attr-defined]
                    raise
                got = None
            if got is not None and len(got) == n:
                break
            assert time.monotonic() < deadline, f"{prefix!r}: {got} (expected {n} keys)"
            time.sleep(0.05)
        self.note(f"keys under {prefix.decode()}", str(n))


Scenario = Callable[[Session], None]


def side_by_side(servers: dict[str, RaftkvMember | EtcdMember], scenario: Scenario) -> dict[str, list[str]]:
    logs = {}
    first_lease = 0x7E57_0000 + 1000 * next(_scenarios)  # the same leases on both servers
    for name, member in servers.items():
        s = Session(member.endpoint, first_lease)
        try:
            scenario(s)
        finally:
            s.close()
        logs[name] = s.log
    return logs


class Observer:
    """An Observe stream read by a thread; ``next`` waits for its next message."""

    def __init__(self, s: Session, name: bytes) -> None:
        self.s = s
        self.call = s.election.Observe(epb.LeaderRequest(name=name))
        self.q: queue.Queue[Any] = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for resp in self.call:
                self.q.put(resp)
            self.q.put("ended")
        except grpc.RpcError as err:
            self.q.put(err)

    def next(self, what: str) -> None:
        item = self.q.get(timeout=WAIT)
        if isinstance(item, grpc.RpcError):
            self.s.note(what, f"{item.code().name} {item.details()!r}")  # type: ignore[attr-defined]
        elif isinstance(item, str):
            self.s.note(what, item)
        else:
            self.s.note(what, self.s.text(item))

    def quiet(self, what: str) -> None:
        """Nothing was sent (checked after a write that was already answered and observed elsewhere)."""
        self.s.note(what, "nothing" if self.q.empty() else f"unexpected {self.q.get()}")

    def close(self) -> None:
        self.call.cancel()
        self.thread.join(10)


# ---- Lock ----


def test_lock_unlock_and_reentry(servers) -> None:
    def scenario(s: Session) -> None:
        a = s.grant(60)
        b = s.grant(60)
        held = s.call("lock a", lambda: s.lock.Lock(lockpb.LockRequest(name=b"lk1", lease=a)))
        s.call("lock a again (same acquisition)", lambda: s.lock.Lock(lockpb.LockRequest(name=b"lk1", lease=a)))
        s.call("the key", lambda: s.kv.Range(pb.RangeRequest(key=held.key)))
        waiting = s.lock.Lock.future(lockpb.LockRequest(name=b"lk1", lease=b))
        s.wait_keys(b"lk1/", 2)
        s.note("b waits", str(not waiting.done()))
        s.call("unlock a", lambda: s.lock.Unlock(lockpb.UnlockRequest(key=held.key)))
        got = s.result("b gets the lock", waiting)
        s.call("unlock a key nobody holds", lambda: s.lock.Unlock(lockpb.UnlockRequest(key=b"lk1/nobody")))
        s.call("unlock without a key", lambda: s.lock.Unlock(lockpb.UnlockRequest()))
        s.call("unlock b", lambda: s.lock.Unlock(lockpb.UnlockRequest(key=got.key)))
        s.call("lock with an empty name", lambda: s.lock.Lock(lockpb.LockRequest(name=b"", lease=a)))
        s.call("unlock it", lambda: s.lock.Unlock(lockpb.UnlockRequest(key=b"/" + format(a, "x").encode())))

    assert_same(side_by_side(servers, scenario))


def test_lock_with_a_revoked_or_unknown_lease(servers) -> None:
    def scenario(s: Session) -> None:
        a = s.grant(60)
        s.lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=a))
        s.call("lock with a revoked lease", lambda: s.lock.Lock(lockpb.LockRequest(name=b"lk2", lease=a)))
        s.call("lock with an unknown lease", lambda: s.lock.Lock(lockpb.LockRequest(name=b"lk2", lease=12345)))
        s.call("nothing was written", lambda: s.kv.Range(pb.RangeRequest(key=b"lk2/", range_end=b"lk20")))

    assert_same(side_by_side(servers, scenario))


def test_lock_without_a_lease_grants_one_of_60_seconds(servers) -> None:
    for name, member in servers.items():
        s = Session(member.endpoint)
        try:
            resp = s.lock.Lock(lockpb.LockRequest(name=b"lk3"))
            lease_id = int(resp.key.split(b"/")[1], 16)
            ttl = s.lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=lease_id, keys=True))
            assert ttl.grantedTTL == 60, name
            assert list(ttl.keys) == [resp.key], name
            assert resp.header.revision == s.kv.Range(pb.RangeRequest(key=resp.key)).kvs[0].create_revision, name
            s.lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=lease_id))
        finally:
            s.close()


def test_lease_expiry_while_holding_passes_the_lock(servers) -> None:
    def scenario(s: Session) -> None:
        a = s.grant(SHORT_TTL)  # never kept alive
        b = s.grant(60)
        s.call("lock a", lambda: s.lock.Lock(lockpb.LockRequest(name=b"lk4", lease=a)))
        waiting = s.lock.Lock.future(lockpb.LockRequest(name=b"lk4", lease=b))
        got = s.result("b gets the lock once a's lease expired", waiting)
        s.call("a's lease", lambda: s.lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=a)))
        s.call("keys", lambda: s.kv.Range(pb.RangeRequest(key=b"lk4/", range_end=b"lk40", keys_only=True)))
        s.call("unlock b", lambda: s.lock.Unlock(lockpb.UnlockRequest(key=got.key)))

    assert_same(side_by_side(servers, scenario))


def test_lease_revoked_while_holding_passes_the_lock(servers) -> None:
    def scenario(s: Session) -> None:
        a, b, c = s.grant(60), s.grant(60), s.grant(60)
        s.call("lock a", lambda: s.lock.Lock(lockpb.LockRequest(name=b"lk5", lease=a)))
        wb = s.lock.Lock.future(lockpb.LockRequest(name=b"lk5", lease=b))
        s.wait_keys(b"lk5/", 2)
        wc = s.lock.Lock.future(lockpb.LockRequest(name=b"lk5", lease=c))
        s.wait_keys(b"lk5/", 3)
        s.call("revoke a", lambda: s.lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=a)))
        got = s.result("b gets the lock", wb)
        s.note("c still waits", str(not wc.done()))
        s.call("revoke b", lambda: s.lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=b)))
        got = s.result("c gets the lock", wc)
        s.call("unlock c", lambda: s.lock.Unlock(lockpb.UnlockRequest(key=got.key)))

    assert_same(side_by_side(servers, scenario))


def test_lease_expiry_while_waiting(servers) -> None:
    """A waiter whose lease expires loses its place: the one behind it does not wait for it, and its
    own Lock, once the holder is gone, answers etcd 3.5's ``mutex: session is expired``."""

    def scenario(s: Session) -> None:
        a, b, c = s.grant(60), s.grant(SHORT_TTL), s.grant(60)
        held = s.call("lock a", lambda: s.lock.Lock(lockpb.LockRequest(name=b"lk6", lease=a)))
        wb = s.lock.Lock.future(lockpb.LockRequest(name=b"lk6", lease=b))
        s.wait_keys(b"lk6/", 2)
        wc = s.lock.Lock.future(lockpb.LockRequest(name=b"lk6", lease=c))
        s.wait_keys(b"lk6/", 3)
        s.wait_keys(b"lk6/", 2)  # b's lease expired, its key went with it
        s.note("b and c still wait", str(not wb.done() and not wc.done()))
        s.call("unlock a", lambda: s.lock.Unlock(lockpb.UnlockRequest(key=held.key)))
        got = s.result("c gets the lock", wc)
        s.result("b's Lock", wb)
        s.call("unlock c", lambda: s.lock.Unlock(lockpb.UnlockRequest(key=got.key)))

    logs = side_by_side(servers, scenario)
    (ours,) = [line for line in logs["raftkv"] if line.startswith("b's Lock")]
    (ref,) = [line for line in logs["etcd"] if line.startswith("b's Lock")]
    assert ours == "b's Lock: UNKNOWN 'mutex: session is expired'"  # etcd 3.5 (clientv3/concurrency.ErrSessionExpired)
    assert ref.startswith("b's Lock: header {") and "key: " in ref  # etcd 3.4.23: success, the key long gone
    logs["etcd"][logs["etcd"].index(ref)] = ours
    assert_same(logs)


def test_caller_gone_mid_wait_leaves_no_key(servers) -> None:
    def scenario(s: Session) -> None:
        a, b, c = s.grant(60), s.grant(60), s.grant(60)
        held = s.call("lock a", lambda: s.lock.Lock(lockpb.LockRequest(name=b"lk7", lease=a)))
        s.call("b gives up", lambda: s.lock.Lock(lockpb.LockRequest(name=b"lk7", lease=b), timeout=1.5))
        s.wait_keys(b"lk7/", 1)  # b's key was deleted when its caller went away
        wc = s.lock.Lock.future(lockpb.LockRequest(name=b"lk7", lease=c))
        s.wait_keys(b"lk7/", 2)
        wc_cancel = s.lock.Lock.future(lockpb.LockRequest(name=b"lk7", lease=b))
        s.wait_keys(b"lk7/", 3)
        wc_cancel.cancel()  # a client-side cancel (RST_STREAM) mid-wait
        s.wait_keys(b"lk7/", 2)
        s.call("b's lease lives on", lambda: s.lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=b, keys=True)))
        s.call("unlock a", lambda: s.lock.Unlock(lockpb.UnlockRequest(key=held.key)))
        got = s.result("c gets the lock", wc)
        s.call("unlock c", lambda: s.lock.Unlock(lockpb.UnlockRequest(key=got.key)))

    logs = side_by_side(servers, scenario)
    for log in logs.values():  # the TTL left is the servers' clock: only its presence is compared
        for i, line in enumerate(log):
            if line.startswith("b's lease lives on"):
                log[i] = re.sub(r"TTL: \d+", "TTL: n", line)
    assert_same(logs)


# ---- Election ----


def test_election_campaign_proclaim_observe_resign(servers) -> None:
    def scenario(s: Session) -> None:
        a, b = s.grant(60), s.grant(60)
        s.call("no leader yet", lambda: s.election.Leader(epb.LeaderRequest(name=b"el1")))
        obs = Observer(s, b"el1")  # on an election nobody runs: waits
        won_a = s.call(
            "a campaigns", lambda: s.election.Campaign(epb.CampaignRequest(name=b"el1", lease=a, value=b"A"))
        )
        obs.next("observed")
        wb = s.election.Campaign.future(epb.CampaignRequest(name=b"el1", lease=b, value=b"B"))
        s.wait_keys(b"el1/", 2)
        s.note("b waits", str(not wb.done()))
        s.call("leader", lambda: s.election.Leader(epb.LeaderRequest(name=b"el1")))
        s.call("a proclaims", lambda: s.election.Proclaim(epb.ProclaimRequest(leader=won_a.leader, value=b"A2")))
        obs.next("observed")
        s.call(
            "a campaigns again with another value",
            lambda: s.election.Campaign(epb.CampaignRequest(name=b"el1", lease=a, value=b"A3")),
        )
        obs.next("observed")
        s.call("a resigns", lambda: s.election.Resign(epb.ResignRequest(leader=won_a.leader)))
        won_b = s.result("b wins", wb)
        obs.next("observed")
        s.call("leader", lambda: s.election.Leader(epb.LeaderRequest(name=b"el1")))
        s.call(
            "a proclaims after resigning",
            lambda: s.election.Proclaim(epb.ProclaimRequest(leader=won_a.leader, value=b"x")),
        )
        s.call("a resigns again", lambda: s.election.Resign(epb.ResignRequest(leader=won_a.leader)))
        obs.quiet("observed")
        s.call("b proclaims", lambda: s.election.Proclaim(epb.ProclaimRequest(leader=won_b.leader, value=b"B2")))
        obs.next("observed")
        s.call("b resigns", lambda: s.election.Resign(epb.ResignRequest(leader=won_b.leader)))
        s.call("no leader", lambda: s.election.Leader(epb.LeaderRequest(name=b"el1")))
        obs.close()

    assert_same(side_by_side(servers, scenario))


def test_election_bad_input(servers) -> None:
    def scenario(s: Session) -> None:
        a = s.grant(60)
        s.lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=a))
        s.call("campaign with a revoked lease", lambda: s.election.Campaign(epb.CampaignRequest(name=b"el2", lease=a)))
        s.call("proclaim without a leader", lambda: s.election.Proclaim(epb.ProclaimRequest(value=b"v")))
        s.call("resign without a leader", lambda: s.election.Resign(epb.ResignRequest()))
        fake = epb.LeaderKey(name=b"el2", key=b"el2/1", rev=1, lease=a)
        s.call("proclaim as nobody", lambda: s.election.Proclaim(epb.ProclaimRequest(leader=fake, value=b"v")))
        s.call("resign as nobody", lambda: s.election.Resign(epb.ResignRequest(leader=fake)))
        empty = epb.LeaderKey(name=b"el2", rev=1, lease=a)
        s.call("proclaim with an empty key", lambda: s.election.Proclaim(epb.ProclaimRequest(leader=empty, value=b"v")))
        s.call("leader of nobody", lambda: s.election.Leader(epb.LeaderRequest(name=b"el2")))
        s.call("nothing was written", lambda: s.kv.Range(pb.RangeRequest(key=b"el2/", range_end=b"el20")))

    assert_same(side_by_side(servers, scenario))


def test_election_lease_expiry_while_leading_and_waiting(servers) -> None:
    def scenario(s: Session) -> None:
        a, b = s.grant(SHORT_TTL), s.grant(60)
        obs = Observer(s, b"el3")
        s.call("a campaigns", lambda: s.election.Campaign(epb.CampaignRequest(name=b"el3", lease=a, value=b"A")))
        obs.next("observed")
        wb = s.election.Campaign.future(epb.CampaignRequest(name=b"el3", lease=b, value=b"B"))
        won_b = s.result("b wins once a's lease expired", wb)
        obs.next("observed")
        c = s.grant(SHORT_TTL)
        wc = s.election.Campaign.future(epb.CampaignRequest(name=b"el3", lease=c, value=b"C"))
        s.wait_keys(b"el3/", 2)
        s.wait_keys(b"el3/", 1)  # c's lease expired while it waited
        s.note("c still waits", str(not wc.done()))
        s.call("b resigns", lambda: s.election.Resign(epb.ResignRequest(leader=won_b.leader)))
        # c's wait ends (nobody is ahead): etcd answers its Campaign, though its key is gone
        s.result("c's campaign", wc)
        s.call("no leader", lambda: s.election.Leader(epb.LeaderRequest(name=b"el3")))
        obs.quiet("observed")
        obs.close()

    assert_same(side_by_side(servers, scenario))


def test_election_caller_gone_mid_campaign_resigns(servers) -> None:
    def scenario(s: Session) -> None:
        a, b = s.grant(60), s.grant(60)
        won = s.call("a campaigns", lambda: s.election.Campaign(epb.CampaignRequest(name=b"el4", lease=a, value=b"A")))
        s.call("b gives up", lambda: s.election.Campaign(epb.CampaignRequest(name=b"el4", lease=b), timeout=1.5))
        s.wait_keys(b"el4/", 1)
        s.call("a resigns", lambda: s.election.Resign(epb.ResignRequest(leader=won.leader)))
        s.call("no leader", lambda: s.election.Leader(epb.LeaderRequest(name=b"el4")))

    assert_same(side_by_side(servers, scenario))


# ---- a member killed under a waiting Lock (three members each) ----


@pytest.mark.parametrize("kind", ["raftkv", "etcd"])
def test_lock_waiter_on_a_killed_member(tmp_path: Path, kind: str) -> None:
    """b waits for the lock through m2, its lease kept alive through m2 too; m2 is killed: b's lease
    expires, its key goes, and c (waiting behind b through m3) gets the lock when a unlocks."""
    target = LocalTarget(tmp_path / kind, kind=kind, size=3)
    target.start()
    try:
        m1, m2, m3 = (Session(target.endpoint(n)) for n in target.names)
        a, c = m1.grant(60), m1.grant(60)
        b = 0x6B11_0001
        m2.lease.LeaseGrant(pb.LeaseGrantRequest(ID=b, TTL=SHORT_TTL + 1), timeout=10)
        stop = threading.Event()

        def keepalive() -> Iterator[pb.LeaseKeepAliveRequest]:
            while not stop.wait(0.5):
                yield pb.LeaseKeepAliveRequest(ID=b)

        renewals = m2.lease.LeaseKeepAlive(keepalive())

        def drain() -> None:
            with contextlib.suppress(grpc.RpcError):
                for _ in renewals:
                    pass

        threading.Thread(target=drain, daemon=True).start()
        held = m1.lock.Lock(lockpb.LockRequest(name=b"kl", lease=a), timeout=10)
        wb = m2.lock.Lock.future(lockpb.LockRequest(name=b"kl", lease=b))
        m1.wait_keys(b"kl/", 2)
        wc = m3.lock.Lock.future(lockpb.LockRequest(name=b"kl", lease=c))
        m1.wait_keys(b"kl/", 3)
        target.kill("m2")
        with pytest.raises(grpc.RpcError) as err:
            wb.result(timeout=WAIT)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        m1.wait_keys(b"kl/", 2)  # b's lease expired with nobody renewing it
        assert not wc.done()
        deadline = time.monotonic() + WAIT
        while True:  # the killed member may have led: the next request may meet the election
            try:
                m1.lock.Unlock(lockpb.UnlockRequest(key=held.key), timeout=10)
                break
            except grpc.RpcError:
                assert time.monotonic() < deadline, "Unlock was never answered"
                time.sleep(0.2)
        got = wc.result(timeout=WAIT)
        assert got.key == b"kl/" + format(c, "x").encode()
        stop.set()
        renewals.cancel()
        for s in (m1, m2, m3):
            s.close()
    finally:
        target.stop()
