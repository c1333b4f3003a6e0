"""Leases on a real three-member raftkv cluster: forwarding, leader loss, one revision everywhere.

NEEDS THE WIRING (Lease service registered, applier dispatch, member hooks): skips itself while
the Lease service answers UNIMPLEMENTED.

- keep-alives sent to a follower reach the leader and keep the lease alive; once they stop, the
  lease expires and its keys disappear in one revision, the same on every member;
- keep-alives through a leader kill keep the lease alive (a new leader extends every lease by an
  election timeout before it counts), and the lease still expires once they stop;
- watchers on every member see a revoke's deletes as one response at one revision (needs Watch).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from chaos.cluster import LocalCluster, MemberProcess
from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc
from proto.mvccpb.kv_pb2 import Event
from tests.procs import free_port

pytestmark = pytest.mark.integration

# Seconds after a lease's deadline by which its keys must be gone: a bound on "never", not on how soon
# (that is test_lessor.py's and test_runner.py's, on a fake clock); a busy machine may take a while.
MARGIN = 10.0
ELECTION = 1.0  # the default election timeout: what a new leader adds to every lease


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path / "cluster", size=3, ports=[(free_port(), free_port()) for _ in range(3)])
    c.start(timeout=60)
    try:
        yield c
    finally:
        c.stop()


def roles(c: LocalCluster, timeout: float = 30.0) -> tuple[MemberProcess, list[MemberProcess]]:
    """(leader, followers) among the running members, once they agree on a leader that is running."""
    deadline = time.monotonic() + timeout
    while True:
        lead = c.wait_ready(timeout)
        leader = None
        followers = []
        for m in c.members:
            if not m.running():
                continue
            with grpc.insecure_channel(m.endpoint) as ch:
                st = rpc_pb2_grpc.MaintenanceStub(ch).Status(pb.StatusRequest(), timeout=30)
            if st.header.member_id == lead:
                leader = m
            else:
                followers.append(m)
        if leader is not None:
            return leader, followers
        assert time.monotonic() < deadline, "no running leader"
        time.sleep(0.1)  # the members still name a leader that is gone


def kv(endpoint: str) -> tuple[grpc.Channel, rpc_pb2_grpc.KVStub, rpc_pb2_grpc.LeaseStub]:
    ch = grpc.insecure_channel(endpoint)
    return ch, rpc_pb2_grpc.KVStub(ch), rpc_pb2_grpc.LeaseStub(ch)


class KeepAlive:
    """A client renewing one lease every `every` seconds through one endpoint, reconnecting on errors."""

    def __init__(self, endpoint: str, lease_id: int, every: float = 0.5) -> None:
        self.endpoint = endpoint
        self.lease_id = lease_id
        self.every = every
        self.answers: list[tuple[float, int]] = []  # (sent at, TTL)
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            requests: queue.Queue[pb.LeaseKeepAliveRequest | None] = queue.Queue()
            with grpc.insecure_channel(self.endpoint) as ch:
                responses = rpc_pb2_grpc.LeaseStub(ch).LeaseKeepAlive(iter(requests.get, None))
                try:
                    while not self._stop.is_set():
                        sent = time.monotonic()
                        requests.put(pb.LeaseKeepAliveRequest(ID=self.lease_id))
                        resp = next(responses)
                        self.answers.append((sent, resp.TTL))
                        self._stop.wait(self.every)
                    requests.put(None)
                    for _ in responses:
                        pass
                except grpc.RpcError as exc:
                    self.errors.append(f"{exc.code()}: {exc.details()}")
                    requests.put(None)
                    self._stop.wait(0.2)

    def stop(self) -> float:
        """Stops renewing; returns when the last renewal that got a TTL was sent."""
        self._stop.set()
        self._thread.join(60)
        return max(sent for sent, ttl in self.answers if ttl > 0)


def present(endpoint: str, keys: list[bytes], rev: int = 0) -> list[bytes]:
    ch, stub, _ = kv(endpoint)
    with ch:
        ranges = [(k, pb.RangeRequest(key=k, revision=rev, serializable=True)) for k in keys]
        return [k for k, r in ranges if stub.Range(r, timeout=30).count]


def local_rev(endpoint: str) -> int:
    ch, stub, _ = kv(endpoint)
    with ch:
        return stub.Range(pb.RangeRequest(key=b"\x00", serializable=True), timeout=30).header.revision


def wait_gone(members: list[MemberProcess], keys: list[bytes], deadline: float) -> float:
    while True:
        now = time.monotonic()
        if all(not present(m.endpoint, keys) for m in members):
            return now
        assert now < deadline, f"keys still there {now - deadline:.2f}s after their deadline+margin"
        time.sleep(0.05)


def test_keepalives_through_a_follower_then_expiry_in_one_revision_everywhere(cluster):
    _, followers = roles(cluster)
    follower = followers[0]
    keys = [b"lease/a", b"lease/b", b"lease/c"]
    ch, _, lease_stub = kv(follower.endpoint)
    with ch:
        # TTL 4 s, renewed every 0.5 s: the renewals may fall 3.5 s behind on a busy machine
        lease = lease_stub.LeaseGrant(pb.LeaseGrantRequest(TTL=4), timeout=10)
    assert lease.TTL == 4
    for key, m in zip(keys, cluster.members, strict=True):  # attached through every member
        ch, stub, _ = kv(m.endpoint)
        with ch:
            stub.Put(pb.PutRequest(key=key, value=b"v", lease=lease.ID), timeout=10)
    ka = KeepAlive(follower.endpoint, lease.ID)
    time.sleep(lease.TTL + 2)  # well past the TTL
    for m in cluster.members:
        assert present(m.endpoint, keys) == keys
    last = ka.stop()
    assert not ka.errors
    assert all(ttl == lease.TTL for _, ttl in ka.answers)
    gone = wait_gone(cluster.members, keys, last + lease.TTL + MARGIN)
    assert gone >= last + lease.TTL - 0.05
    revs = set()
    for m in cluster.members:
        rev = local_rev(m.endpoint)
        assert present(m.endpoint, keys, rev) == []
        assert present(m.endpoint, keys, rev - 1) == keys  # all three deleted by the one revision rev
        revs.add(rev)
    assert len(revs) == 1


def test_keepalives_through_a_leader_kill_keep_the_lease(cluster):
    leader, followers = roles(cluster)
    via = followers[0]
    ch, stub, lease_stub = kv(via.endpoint)
    with ch:
        lease = lease_stub.LeaseGrant(pb.LeaseGrantRequest(TTL=3), timeout=10)
        stub.Put(pb.PutRequest(key=b"alive", value=b"v", lease=lease.ID), timeout=10)
    ka = KeepAlive(via.endpoint, lease.ID)
    time.sleep(1)
    cluster.kill_member(leader.name)
    new_leader, _ = roles(cluster)
    assert new_leader.name != leader.name
    time.sleep(2 * lease.TTL)  # renewed through the election and the new leader
    assert present(via.endpoint, [b"alive"]) == [b"alive"]
    last = ka.stop()
    assert [ttl for _, ttl in ka.answers if ttl <= 0] == []
    alive = [m for m in cluster.members if m.running()]
    gone = wait_gone(alive, [b"alive"], last + lease.TTL + ELECTION + MARGIN)
    assert gone >= last + lease.TTL - 0.05
    ch, _, lease_stub = kv(via.endpoint)
    with ch:
        assert lease_stub.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=lease.ID), timeout=10).TTL == -1


def test_watchers_on_every_member_see_one_revision_of_deletes(cluster):
    members = cluster.members
    keys = [b"w/1", b"w/2", b"w/3"]
    ch, stub, lease_stub = kv(members[1].endpoint)
    with ch:
        lease = lease_stub.LeaseGrant(pb.LeaseGrantRequest(TTL=60), timeout=10)
        for k in keys:
            stub.Put(pb.PutRequest(key=k, value=b"v", lease=lease.ID), timeout=10)
        start = stub.Range(pb.RangeRequest(key=b"w/"), timeout=10).header.revision + 1
    seen: dict[str, list[list[tuple[int, bytes, int]]]] = {}
    threads = []
    ready = threading.Barrier(len(members) + 1)

    def watch(m: MemberProcess) -> None:
        create = pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"w/", range_end=b"w0", start_revision=start))
        requests: queue.Queue[pb.WatchRequest | None] = queue.Queue()
        requests.put(create)
        with grpc.insecure_channel(m.endpoint) as wch:
            responses = rpc_pb2_grpc.WatchStub(wch).Watch(iter(requests.get, None), timeout=300)
            assert next(responses).created
            ready.wait(60)
            got: list[list[tuple[int, bytes, int]]] = []
            for resp in responses:
                got.append([(ev.type, ev.kv.key, ev.kv.mod_revision) for ev in resp.events])
                if sum(len(g) for g in got) >= len(keys):
                    break
            seen[m.name] = got
            requests.put(None)

    for m in members:
        t = threading.Thread(target=watch, args=(m,), daemon=True)
        t.start()
        threads.append(t)
    ready.wait(60)
    ch, _, lease_stub = kv(members[2].endpoint)
    with ch:
        revoked = lease_stub.LeaseRevoke(pb.LeaseRevokeRequest(ID=lease.ID), timeout=10).header.revision
    for t in threads:
        t.join(120)
    for m in members:  # the three deletes, in one response, at the revoke's revision, on every member
        assert seen[m.name] == [[(Event.DELETE, k, revoked) for k in keys]], m.name
