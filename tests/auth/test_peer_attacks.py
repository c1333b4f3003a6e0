"""The peer-port attacks of issue 15, each tried on a three-member cluster without TLS: none harms it.

The attacker knows what anyone can learn from a client port (cluster id, member ids, the leader,
its term) and can reach every peer port, but cannot read the traffic between members. Before
these defenses, one forged heartbeat with term 2^64-1 left the cluster leaderless for good, one
forged append planted a key, one undecodable entry crashed a member on every restart, heartbeats
repeated once a second cut throughput tenfold, and four connections declaring 60 MiB frames grew a
member by 200 MB. After each attack: every member runs, the term did not move, the leader is the
same, a write through every member succeeds, and every member holds the same keys and hash.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from chaos.cluster import LocalCluster, MemberProcess
from kvstore.apply import Op, encode_request
from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc as rpc
from raft import transport as tr
from tests.auth import peer_attack as pa
from tests.procs import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    ports = [(free_port(), free_port()) for _ in range(3)]
    c = LocalCluster(tmp_path_factory.mktemp("attacks") / "cluster", size=3, ports=ports)
    c.start(timeout=60)
    yield c
    c.stop()


def status(m: MemberProcess) -> pb.StatusResponse:
    with grpc.insecure_channel(m.endpoint) as ch:
        return rpc.MaintenanceStub(ch).Status(pb.StatusRequest(), timeout=10)


def peer(m: MemberProcess) -> tuple[str, int]:
    return (m.host, m.peer_port)


def rss_kib(m: MemberProcess) -> int:
    for line in Path(f"/proc/{m.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def assert_unharmed(c: LocalCluster, before: pa.Ids, tag: str) -> None:
    assert all(m.running() for m in c.members), "a member died"
    c.wait_ready(timeout=30)
    after = pa.learn(c.members[0].endpoint)
    assert (after.term, after.leader) == (before.term, before.leader), f"term or leader moved: {before} -> {after}"
    for i, m in enumerate(c.members):
        with grpc.insecure_channel(m.endpoint) as ch:
            rpc.KVStub(ch).Put(pb.PutRequest(key=f"after/{tag}/{i}".encode(), value=b"ok"), timeout=10)
    dumps, hashes = [], set()
    rev = 0
    for m in c.members:
        with grpc.insecure_channel(m.endpoint) as ch:
            resp = rpc.KVStub(ch).Range(pb.RangeRequest(key=b"\x00", range_end=b"\x00"), timeout=10)
            rev = max(rev, resp.header.revision)
            dumps.append([(kv.key, kv.value, kv.mod_revision) for kv in resp.kvs])
    for m in c.members:
        with grpc.insecure_channel(m.endpoint) as ch:
            hashes.add(rpc.MaintenanceStub(ch).HashKV(pb.HashKVRequest(revision=rev), timeout=10).hash)
    assert dumps[0] == dumps[1] == dumps[2]
    assert len(hashes) == 1, "members diverged"
    assert not [k for k, _, _ in dumps[0] if k.startswith(b"fabricated")]


def leader_and_followers(c: LocalCluster, ids: pa.Ids) -> tuple[MemberProcess, list[MemberProcess]]:
    by_id = {ids.member_ids[m.name]: m for m in c.members}
    lead = by_id[ids.leader]
    return lead, [m for m in c.members if m is not lead]


def test_heartbeat_with_term_2_64_minus_1(cluster: LocalCluster) -> None:
    ids = pa.learn(cluster.members[0].endpoint)
    lead, followers = leader_and_followers(cluster, ids)
    for target in cluster.members:
        frm = ids.leader if target is not lead else ids.member_ids[followers[0].name]
        to = ids.member_ids[target.name]
        for term in (2**64 - 1, 2**63, ids.term + 1):
            sock = pa.connect(peer(target))
            data = pa.hello(ids, frm, to) + pa.messages(ids, frm, to, pa.heartbeat(frm, to, term))
            assert pa.send_and_wait_closed(sock, data), "the member kept a connection it could not verify"
    assert_unharmed(cluster, ids, "high-term")


def test_forged_append_with_the_leaders_term(cluster: LocalCluster) -> None:
    ids = pa.learn(cluster.members[0].endpoint)
    lead, followers = leader_and_followers(cluster, ids)
    index = status(lead).raftIndex
    body = pb.PutRequest(key=b"fabricated", value=b"by an attacker").SerializeToString()
    for target in followers:
        to = ids.member_ids[target.name]
        for data in (encode_request(Op.PUT, 1, body), b"\xc1"):  # a fabricated key; one undecodable byte
            app = pa.append(ids.leader, to, ids.term, index, ids.term, data, commit=index + 1)
            sock = pa.connect(peer(target))
            assert pa.send_and_wait_closed(sock, pa.hello(ids, ids.leader, to) + pa.messages(ids, ids.leader, to, app))
    assert_unharmed(cluster, ids, "append")
    # and a member restarted afterwards comes back (nothing undecodable reached its log)
    victim = followers[0]
    cluster.kill_member(victim.name)
    cluster.start_member(victim.name, wait=True, timeout=60)
    cluster.wait_ready(timeout=60)
    ids = pa.learn(cluster.members[0].endpoint)  # a restart may have moved the term legitimately
    assert_unharmed(cluster, ids, "append-restart")


def test_repeated_high_term_heartbeats_while_writing(cluster: LocalCluster) -> None:
    ids = pa.learn(cluster.members[0].endpoint)
    lead, followers = leader_and_followers(cluster, ids)
    writes = 0
    with grpc.insecure_channel(lead.endpoint) as ch:
        kv = rpc.KVStub(ch)
        for round_ in range(6):
            for target in followers:
                to = ids.member_ids[target.name]
                hb = pa.heartbeat(ids.leader, to, ids.term + 100 + round_)
                sock = pa.connect(peer(target))
                pa.send_and_wait_closed(sock, pa.hello(ids, ids.leader, to) + pa.messages(ids, ids.leader, to, hb))
            for i in range(20):
                kv.Put(pb.PutRequest(key=f"during/{round_}/{i}".encode(), value=b"v"), timeout=10)
                writes += 1
            time.sleep(0.5)  # the attack's own pace: once every half second
    assert writes == 120
    assert_unharmed(cluster, ids, "repeated")


def test_huge_declared_frames_from_many_connections(cluster: LocalCluster) -> None:
    ids = pa.learn(cluster.members[0].endpoint)
    target = cluster.members[1]
    to = ids.member_ids[target.name]
    frm = ids.member_ids[cluster.members[0].name]
    before = rss_kib(target)
    socks = []
    for n in range(8):
        sock = pa.connect(peer(target))
        sock.setblocking(False)
        header = (pa.hello(ids, frm, to) if n % 2 else b"") + struct.pack(">I", 60 << 20)
        socks.append((sock, header + b"\x00" * (50 << 20)))
    deadline = time.monotonic() + 60
    sent = [0] * len(socks)
    open_ = set(range(len(socks)))
    while open_ and time.monotonic() < deadline:
        for i in list(open_):
            sock, data = socks[i]
            try:
                n = sock.send(data[sent[i] : sent[i] + (1 << 20)])
                sent[i] += n
                if sent[i] >= len(data):
                    open_.discard(i)
            except BlockingIOError:
                pass
            except OSError:
                open_.discard(i)  # closed by the member
        time.sleep(0.01)
    for sock, _ in socks:
        sock.close()
    assert sum(sent) < 8 * (50 << 20), "the member read every declared byte"
    grown = rss_kib(target) - before
    assert grown < 64 * 1024, f"the member grew by {grown} KiB"
    assert_unharmed(cluster, ids, "frames")


def test_connections_that_send_nothing_are_closed(cluster: LocalCluster) -> None:
    ids = pa.learn(cluster.members[0].endpoint)
    target = cluster.members[2]
    idle = [socket.create_connection(peer(target), timeout=60) for _ in range(tr.MAX_PENDING + 8)]
    try:
        with grpc.insecure_channel(target.endpoint) as ch:  # the real peers still get through meanwhile
            rpc.KVStub(ch).Put(pb.PutRequest(key=b"while-idle", value=b"v"), timeout=10)
        closed = 0
        for sock in idle:  # each is closed: at once past MAX_PENDING, the others after FIRST_FRAME_TIMEOUT
            with contextlib.suppress(ConnectionError, TimeoutError):
                if sock.recv(1) == b"":
                    closed += 1
        assert closed == len(idle)
    finally:
        for sock in idle:
            sock.close()
    assert_unharmed(cluster, ids, "idle")
