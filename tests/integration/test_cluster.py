"""A real three-member cluster on loopback: replication, leader loss, snapshot catch-up, etcdctl everywhere."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from chaos.cluster import LocalCluster
from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc
from tests.procs import etcdctl, free_port, wait_for


def make_cluster(tmp_path: Path, *extra: str) -> LocalCluster:
    ports = [(free_port(), free_port()) for _ in range(3)]
    return LocalCluster(tmp_path / "cluster", size=3, ports=ports, extra_args=list(extra))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = make_cluster(tmp_path)
    c.start(timeout=60)
    yield c
    c.stop()


def status(endpoint: str) -> pb.StatusResponse:
    with grpc.insecure_channel(endpoint) as ch:
        return rpc_pb2_grpc.MaintenanceStub(ch).Status(pb.StatusRequest(), timeout=5)


def leader_name(c: LocalCluster) -> str:
    lead = c.wait_ready()
    for m in c.members:
        if m.running() and status(m.endpoint).header.member_id == lead:
            return m.name
    raise AssertionError("leader not found")


def dump(endpoint: str) -> list[dict]:
    out = etcdctl(endpoint, "get", "", "--prefix", "-w", "json", check=True).stdout
    kvs = json.loads(out).get("kvs", [])
    return [{k: kv.get(k) for k in ("key", "value", "create_revision", "mod_revision", "version")} for kv in kvs]


def test_writes_through_every_member_are_identical_everywhere(cluster: LocalCluster) -> None:
    for i, m in enumerate(cluster.members):
        etcdctl(m.endpoint, "put", f"via/{m.name}", f"value-{i}", check=True)
        # a linearizable read on any member sees a write made through another one at once
        for other in cluster.members:
            got = etcdctl(other.endpoint, "get", f"via/{m.name}", "--print-value-only", check=True).stdout
            assert got.strip() == f"value-{i}"
    txn = 'value("via/m1") = "value-0"\n\nput via/txn yes\n\nput via/txn no\n\n'
    etcdctl(cluster.members[2].endpoint, "txn", stdin=txn, check=True)
    dumps = [dump(m.endpoint) for m in cluster.members]
    assert dumps[0] and dumps[0] == dumps[1] == dumps[2]
    statuses = [status(m.endpoint) for m in cluster.members]
    assert len({s.leader for s in statuses}) == 1
    assert len({s.header.cluster_id for s in statuses}) == 1
    assert len({s.header.member_id for s in statuses}) == 3
    members = etcdctl(cluster.endpoints, "member", "list", "-w", "json", check=True).stdout
    assert sorted(m["name"] for m in json.loads(members)["members"]) == ["m1", "m2", "m3"]


class Load:
    """Writers on every member, retrying on errors, remembering acknowledged writes."""

    def __init__(self, endpoints: list[str]) -> None:
        self.endpoints = endpoints
        self.acked: dict[bytes, bytes] = {}
        self.errors = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(n,), daemon=True) for n in range(6)]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def run(self, n: int) -> None:
        endpoint = self.endpoints[n % len(self.endpoints)]
        i = 0
        with grpc.insecure_channel(endpoint) as ch:
            stub = rpc_pb2_grpc.KVStub(ch)
            while not self.stop.is_set():
                key, value = b"load/%d/%d" % (n, i), b"v%d" % i
                i += 1
                try:
                    stub.Put(pb.PutRequest(key=key, value=value), timeout=3)
                except grpc.RpcError:
                    with self.lock:
                        self.errors += 1
                    time.sleep(0.05)
                    continue
                with self.lock:
                    self.acked[key] = value


def test_leader_killed_under_load_loses_nothing(cluster: LocalCluster) -> None:
    old = leader_name(cluster)
    old_id = status(cluster.member(old).endpoint).header.member_id
    survivors = [m for m in cluster.members if m.name != old]

    def new_leader() -> int:
        leaders = set()
        for m in survivors:
            try:
                leaders.add(status(m.endpoint).leader)
            except grpc.RpcError:
                leaders.add(0)
        # right after the kill the survivors still name the dead leader: that is not an election
        return leaders.pop() if len(leaders) == 1 and not leaders & {0, old_id} else 0

    with Load([m.endpoint for m in cluster.members]) as load:
        wait_for("writes acknowledged before the kill", lambda: len(load.acked) >= 50)
        t0 = time.monotonic()
        cluster.kill_member(old)
        wait_for("a new leader among the survivors", new_leader)
        print(f"a new leader after {time.monotonic() - t0:.1f}s (election timeout 1 s)")  # measured, not asserted
        with load.lock:
            at_election = len(load.acked)
        # clients that retry carry on: requests lost with the old leader time out (3 s) and are retried
        wait_for("acknowledged writes after the election", lambda: len(load.acked) >= at_election + 50, timeout=120)
    cluster.start_member(old)
    cluster.wait_ready(60)
    for m in cluster.members:  # every acknowledged write is on every member, the killed one included
        with grpc.insecure_channel(m.endpoint) as ch:
            got = rpc_pb2_grpc.KVStub(ch).Range(
                pb.RangeRequest(key=b"load/", range_end=b"load0", serializable=False), timeout=30
            )
        stored = {kv.key: kv.value for kv in got.kvs}
        lost = [k for k, v in load.acked.items() if stored.get(k) != v]
        assert not lost, f"{m.name} lost {len(lost)} acknowledged writes"
    dumps = [dump(m.endpoint) for m in cluster.members]
    assert dumps[0] == dumps[1] == dumps[2]


@pytest.mark.parametrize("crash_while_installing", [False, True])
def test_member_down_during_compaction_catches_up_by_snapshot(tmp_path: Path, crash_while_installing: bool) -> None:
    c = make_cluster(tmp_path, "--snapshot-count=200")
    c.start(timeout=60)
    try:
        lead = leader_name(c)
        lagging = next(m for m in c.members if m.name != lead)
        c.stop_member(lagging.name)
        leader_ep = c.member(lead).endpoint
        with grpc.insecure_channel(leader_ep) as ch:
            stub = rpc_pb2_grpc.KVStub(ch)
            for start in range(0, 6000, 500):  # far beyond the 5000 entries kept after a compaction
                batch = [
                    stub.Put.future(pb.PutRequest(key=b"snap/%05d" % i, value=b"x" * 20), timeout=60)
                    for i in range(start, start + 500)
                ]
                for f in batch:
                    f.result()
            stub.Put(pb.PutRequest(key=b"snap/last", value=b"done"), timeout=30)
        if crash_while_installing:  # dies between recording the snapshot and installing it
            lagging.env = {"RAFTKV_FAILPOINTS": "beforeSnapshotInstall=crash"}
            c.start_member(lagging.name, wait=False)
            assert lagging.proc.wait(120) == 137
            c.stop_member(lagging.name)
            lagging.env = {}
        c.start_member(lagging.name)
        c.wait_ready(60)

        def caught_up() -> bool:
            try:
                return status(lagging.endpoint).raftAppliedIndex >= status(leader_ep).raftAppliedIndex
            except grpc.RpcError:  # busy installing the snapshot: ask again
                return False

        wait_for("the lagging member to catch up", caught_up, timeout=120, interval=0.2)
        # (the log is copied by a thread: poll, do not read once)
        installed = "installing snapshot from the leader"
        wait_for("the snapshot install in its log", lambda: installed in lagging.log_path.read_text())
        with grpc.insecure_channel(lagging.endpoint) as ch:
            got = rpc_pb2_grpc.KVStub(ch).Range(
                pb.RangeRequest(key=b"snap/", range_end=b"snap0", serializable=True, count_only=True), timeout=10
            )
        assert got.count == 6001
        assert dump(lagging.endpoint) == dump(leader_ep)
    finally:
        c.stop()


def test_cluster_restarts_with_data_intact(cluster: LocalCluster) -> None:
    for i in range(20):
        etcdctl(cluster.endpoints, "put", f"keep/{i}", str(i), check=True)
    before = dump(cluster.members[0].endpoint)
    cluster.stop()
    cluster.start(timeout=60)
    for m in cluster.members:
        assert dump(m.endpoint) == before


def test_move_leader(cluster: LocalCluster) -> None:
    lead = leader_name(cluster)
    target = next(m for m in cluster.members if m.name != lead)
    target_id = f"{status(target.endpoint).header.member_id:x}"
    out = etcdctl(cluster.endpoints, "move-leader", target_id, check=True).stdout
    assert "Leadership transferred" in out
    assert leader_name(cluster) == target.name
