"""Membership changes on real member processes, driven by etcdctl: grow to five and shrink back under
write load, a learner that catches up and is promoted, a member whose disk was wiped replaced, the
leader removed, and etcd's errors for bad requests (side by side with etcd 3.4.23)."""

from __future__ import annotations

import json
import random
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from chaos.cluster import LocalCluster, MemberProcess
from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc
from tests.procs import EtcdMember, RaftkvMember, etcdctl, free_port

pytestmark = [pytest.mark.integration, pytest.mark.etcd]

DEADLINE = 90.0


def wait_for(cond, what: str, timeout: float = DEADLINE, interval: float = 0.2):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def ctl_retrying(endpoints: str, *args: str, transient: tuple[str, ...] = ("unhealthy cluster",)) -> str:
    """etcdctl, asked again while it fails with a transient error (the strict reconfiguration check wants
    every voter connected for 5 s, as etcd's)."""
    last = ""

    def attempt() -> bool:
        nonlocal last
        r = etcdctl(endpoints, *args)
        if r.returncode == 0:
            last = r.stdout
            return True
        last = r.stderr
        if not any(t in r.stderr for t in transient):
            raise AssertionError(f"etcdctl {' '.join(args)} failed: {r.stderr}")
        return False

    wait_for(attempt, f"etcdctl {' '.join(args)} (last: {last[-300:]})")
    return last


def members(endpoints: str) -> list[dict]:
    return json.loads(etcdctl(endpoints, "member", "list", "-w", "json", check=True).stdout)["members"]


def member_id(endpoints: str, name: str) -> int:
    return next(m["ID"] for m in members(endpoints) if m.get("name") == name)


def status(endpoint: str) -> pb.StatusResponse | None:
    try:
        with grpc.insecure_channel(endpoint) as ch:
            return rpc_pb2_grpc.MaintenanceStub(ch).Status(pb.StatusRequest(), timeout=2)
    except grpc.RpcError:
        return None


def leader_name(c: LocalCluster) -> str:
    def find() -> str | None:
        sts = {m.name: status(m.endpoint) for m in c.members if m.running()}
        leads = {s.leader for s in sts.values() if s is not None}
        if len(leads) != 1 or 0 in leads:
            return None
        (lead,) = leads
        return next((n for n, s in sts.items() if s is not None and s.header.member_id == lead), None)

    return wait_for(find, "an agreed leader")


def endpoints(c: LocalCluster) -> str:
    return ",".join(m.endpoint for m in c.members if m.running())


class Load:
    """Writers putting unique keys through whichever members run, remembering what was acknowledged."""

    def __init__(self, c: LocalCluster, prefix: str) -> None:
        self.c = c
        self.prefix = prefix
        self.acked: dict[bytes, bytes] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(n,), daemon=True) for n in range(4)]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def run(self, n: int) -> None:
        rng = random.Random(n)
        i = 0
        while not self.stop.is_set():
            running = [m.endpoint for m in self.c.members if m.running()]
            if not running:
                time.sleep(0.05)
                continue
            key = f"{self.prefix}/{n}/{i}".encode()
            i += 1
            try:
                with grpc.insecure_channel(rng.choice(running)) as ch:
                    rpc_pb2_grpc.KVStub(ch).Put(pb.PutRequest(key=key, value=key), timeout=5)
            except grpc.RpcError:
                time.sleep(0.05)
                continue
            with self.lock:
                self.acked[key] = key


def assert_everywhere(c: LocalCluster, acked: dict[bytes, bytes], prefix: str) -> None:
    """Every acknowledged write is on every running member (read locally, once each caught up)."""
    assert acked, "the load acknowledged nothing"

    def has_all(m: MemberProcess) -> bool:
        try:
            with grpc.insecure_channel(m.endpoint) as ch:
                resp = rpc_pb2_grpc.KVStub(ch).Range(
                    pb.RangeRequest(key=prefix.encode() + b"/", range_end=prefix.encode() + b"0", serializable=True),
                    timeout=5,
                )
        except grpc.RpcError:
            return False
        stored = {kv.key: kv.value for kv in resp.kvs}
        return all(stored.get(k) == v for k, v in acked.items())

    for m in c.members:
        if m.running():
            wait_for(lambda m=m: has_all(m), f"every acknowledged write on {m.name}")


def add_and_start(c: LocalCluster, name: str, learner: bool = False) -> MemberProcess:
    m = c.add_process(name, free_port(), free_port())
    args = ["member", "add", name, f"--peer-urls={m.peer_url}"] + (["--learner"] if learner else [])
    out = ctl_retrying(endpoints(c), *args)
    assert f'ETCD_NAME="{name}"' in out and 'ETCD_INITIAL_CLUSTER_STATE="existing"' in out
    c.start_member(name, timeout=DEADLINE)
    return m


def remove(c: LocalCluster, name: str) -> None:
    mid = member_id(endpoints(c), name)
    others = ",".join(m.endpoint for m in c.members if m.running() and m.name != name)
    out = ctl_retrying(others, "member", "remove", f"{mid:x}")
    assert f"Member {mid:16x} removed" in out
    m = c.member(name)
    if m.proc is not None:
        assert m.proc.wait(30) == 0  # a removed member stops itself, as etcd does (exit 0)
    c.stop_member(name)
    c.forget(name)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    base = tmp_path_factory.mktemp("membership")
    c = LocalCluster(base / "cluster", size=3, ports=[(free_port(), free_port()) for _ in range(3)])
    c.start(timeout=60)
    yield c
    c.stop()


def test_grow_to_five_and_shrink_to_three_under_load(cluster: LocalCluster) -> None:
    with Load(cluster, "grow") as load:
        wait_for(lambda: len(load.acked) > 20, "writes before the changes")
        add_and_start(cluster, "m4")
        add_and_start(cluster, "m5")
        listed = members(endpoints(cluster))
        assert sorted(m["name"] for m in listed) == ["m1", "m2", "m3", "m4", "m5"]
        assert all(m["clientURLs"] and not m.get("isLearner") for m in listed)
        n = len(load.acked)
        wait_for(lambda: len(load.acked) > n + 20, "writes with five members")
        remove(cluster, "m1")
        remove(cluster, "m2")
        n = len(load.acked)
        wait_for(lambda: len(load.acked) > n + 20, "writes after shrinking")
    assert sorted(m["name"] for m in members(endpoints(cluster))) == ["m3", "m4", "m5"]
    assert_everywhere(cluster, load.acked, "grow")


def test_a_learner_catches_up_and_is_promoted(cluster: LocalCluster) -> None:
    eps = endpoints(cluster)
    m = cluster.add_process("m6", free_port(), free_port())
    ctl_retrying(eps, "member", "add", "m6", "--learner", f"--peer-urls={m.peer_url}")
    listed = {x["ID"]: x for x in members(eps)}
    (new_id,) = [i for i, x in listed.items() if not x.get("name")]
    assert listed[new_id]["isLearner"] and not listed[new_id].get("clientURLs")  # unstarted, shown as such
    # not started: it cannot have caught up, and only the leader can tell; the others ask it
    refused = etcdctl(eps, "member", "promote", f"{new_id:x}")
    assert "can only promote a learner member which is in sync with leader" in refused.stderr
    too_many = etcdctl(eps, "member", "add", "m7", "--learner", f"--peer-urls=http://127.0.0.1:{free_port()}")
    assert "too many learner members in cluster" in too_many.stderr
    with Load(cluster, "learner") as load:
        cluster.start_member("m6", timeout=DEADLINE)
        wait_for(lambda: len(load.acked) > 20, "writes while the learner catches up")
        st = status(m.endpoint)
        assert st is not None and st.isLearner
        # a learner serves serializable reads only
        assert etcdctl(m.endpoint, "get", "learner", "--prefix", "--consistency=s", check=True).returncode == 0
        for args in (("put", "x", "y"), ("get", "x"), ("member", "list"), ("user", "list")):  # Auth too
            r = etcdctl(m.endpoint, *args)
            assert r.returncode != 0 and "etcdserver: rpc not supported for learner" in r.stderr, args
        out = ctl_retrying(eps, "member", "promote", f"{new_id:x}", transient=("in sync with leader",))
        assert f"Member {new_id:16x} promoted" in out
        assert not next(x for x in members(eps) if x["ID"] == new_id).get("isLearner")
        wait_for(lambda: etcdctl(m.endpoint, "put", "promoted", "yes").returncode == 0, "a write through it")
        st = status(m.endpoint)
        assert st is not None and not st.isLearner
        n = len(load.acked)
        wait_for(lambda: len(load.acked) > n + 20, "writes with the new voter")
        remove(cluster, "m3")  # back to three voters
    again = etcdctl(endpoints(cluster), "member", "promote", f"{new_id:x}")
    assert "etcdserver: can only promote a learner member" in again.stderr  # a voter already
    assert_everywhere(cluster, load.acked, "learner")


def test_a_member_whose_disk_was_wiped_is_replaced(cluster: LocalCluster) -> None:
    victim = next(m for m in cluster.members if m.name != leader_name(cluster))
    with Load(cluster, "wipe") as load:
        wait_for(lambda: len(load.acked) > 20, "writes before the disk is lost")
        old_id = member_id(endpoints(cluster), victim.name)
        cluster.kill_member(victim.name)
        shutil.rmtree(victim.data_dir)
        # the operator's procedure: remove the dead member, add it again (a new id), start it afresh
        ctl_retrying(endpoints(cluster), "member", "remove", f"{old_id:x}")
        cluster.forget(victim.name)
        fresh = add_and_start(cluster, victim.name)
        assert fresh.peer_port != victim.peer_port
        n = len(load.acked)
        wait_for(lambda: len(load.acked) > n + 20, "writes after the replacement")
    new_id = member_id(endpoints(cluster), victim.name)
    assert new_id != old_id
    # the removed id is never reused: a start from the old data is refused (here: the old id's data is gone,
    # so we check the id is listed nowhere)
    assert old_id not in [m["ID"] for m in members(endpoints(cluster))]
    assert_everywhere(cluster, load.acked, "wipe")


def test_removing_the_leader_elects_another_and_the_removed_member_refuses_to_rejoin(cluster: LocalCluster) -> None:
    lead = leader_name(cluster)
    old = cluster.member(lead)
    lead_id = member_id(endpoints(cluster), lead)
    remove(cluster, lead)
    new_lead = leader_name(cluster)
    assert new_lead != lead
    assert etcdctl(endpoints(cluster), "put", "after-leader-removal", "ok").returncode == 0
    # started again on its data, it refuses: it was removed for good
    cluster.members.append(old)
    with pytest.raises((RuntimeError, TimeoutError)):
        cluster.start_member(lead, timeout=30)
    assert old.proc is not None and old.proc.wait(30) != 0
    assert "permanently removed from the cluster" in old.log_path.read_text()
    cluster.stop_member(lead)
    cluster.forget(lead)
    assert lead_id not in [m["ID"] for m in members(endpoints(cluster))]
    shutil.rmtree(old.data_dir)
    add_and_start(cluster, lead)  # a new member in its place, for the tests that follow


def test_a_member_that_crashes_before_its_first_start_and_a_down_voter(cluster: LocalCluster) -> None:
    eps = endpoints(cluster)
    m = cluster.add_process("late", free_port(), free_port())
    ctl_retrying(eps, "member", "add", "late", f"--peer-urls={m.peer_url}")
    # four voters, three up: still a quorum, writes go on
    assert etcdctl(eps, "put", "with-an-unstarted-voter", "ok").returncode == 0
    # strict reconfiguration: with a voter not connected, no other change is taken
    r = etcdctl(eps, "member", "add", "nope", f"--peer-urls=http://127.0.0.1:{free_port()}")
    assert "etcdserver: unhealthy cluster" in r.stderr
    # it crashes right after it was started, then starts for real
    cluster.start_member("late", wait=False)
    time.sleep(0.2)  # not a condition: the point is to kill it at an arbitrary early moment
    cluster.signal_member("late", signal.SIGKILL)
    cluster.stop_member("late")
    cluster.start_member("late", timeout=DEADLINE)
    assert etcdctl(m.endpoint, "get", "with-an-unstarted-voter", "--print-value-only", check=True).stdout.strip() == (
        "ok"
    )
    remove(cluster, "late")


# ---- etcd's errors, side by side ----


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RaftkvMember, EtcdMember]]:
    base = tmp_path_factory.mktemp("membership-errors")
    raftkv = RaftkvMember("r1", base / "r1.etcd").start()
    etcd = EtcdMember("e1", base / "e1.etcd").start()
    yield raftkv, etcd
    raftkv.stop()
    etcd.stop()


def _error(endpoint: str, *args: str) -> str:
    r = etcdctl(endpoint, *args)
    assert r.returncode != 0, (args, r.stdout)
    return r.stderr.strip().splitlines()[-1]


def test_bad_membership_requests_get_etcds_errors(pair: tuple[RaftkvMember, EtcdMember]) -> None:
    raftkv, etcd = pair
    for server in (raftkv, etcd):
        own = next(iter(members(server.endpoint)))
        server.own_id = own["ID"]  # type: ignore[attr-defined]
        server.own_peer = own["peerURLs"][0]  # type: ignore[attr-defined]
    cases = [
        ("bad url", lambda s: ("member", "add", "x", "--peer-urls=127.0.0.1:9")),
        ("url with a path", lambda s: ("member", "add", "x", "--peer-urls=http://127.0.0.1:9/path")),
        ("peer url in use", lambda s: ("member", "add", "x", f"--peer-urls={s.own_peer}")),
        ("remove unknown", lambda s: ("member", "remove", "1234")),
        ("update unknown", lambda s: ("member", "update", "1234", "--peer-urls=http://127.0.0.1:9")),
        ("promote a voter", lambda s: ("member", "promote", f"{s.own_id:x}")),
        ("promote unknown", lambda s: ("member", "promote", "1234")),
        ("remove the last voter", lambda s: ("member", "remove", f"{s.own_id:x}")),
    ]
    for what, args in cases:
        ours, theirs = _error(raftkv.endpoint, *args(raftkv)), _error(etcd.endpoint, *args(etcd))
        assert ours == theirs, what
    # and both keep serving
    for server in (raftkv, etcd):
        assert etcdctl(server.endpoint, "put", "still", "here").returncode == 0
        assert [m["name"] for m in members(server.endpoint)] == [server.name]


def test_member_update_changes_the_peer_urls(tmp_path: Path) -> None:
    m = RaftkvMember("u1", tmp_path / "u1.etcd").start()
    try:
        own = members(m.endpoint)[0]
        new_url = f"http://127.0.0.1:{free_port()}"
        out = etcdctl(m.endpoint, "member", "update", f"{own['ID']:x}", f"--peer-urls={new_url}", check=True).stdout
        assert f"Member {own['ID']:16x} updated" in out
        assert members(m.endpoint)[0]["peerURLs"] == [new_url]
    finally:
        m.stop()


def test_a_member_joining_after_compaction_catches_up_by_snapshot_and_all_restart(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path / "cluster", size=3, ports=[(free_port(), free_port()) for _ in range(3)])
    for m in c.members:
        m.args = ["--snapshot-count=200"]
    c.start(timeout=60)
    try:
        with grpc.insecure_channel(c.members[0].endpoint) as ch:
            stub = rpc_pb2_grpc.KVStub(ch)
            for start in range(0, 6000, 500):  # far beyond the 5000 entries kept after a compaction
                futures = [
                    stub.Put.future(pb.PutRequest(key=b"snap/%05d" % i, value=b"x" * 20), timeout=60)
                    for i in range(start, start + 500)
                ]
                for f in futures:
                    f.result()
        joiner = add_and_start(c, "m4")
        assert "installing snapshot from the leader" in joiner.log_path.read_text()
        assert sorted(m["name"] for m in members(endpoints(c))) == ["m1", "m2", "m3", "m4"]
        # every member down at once, then up: the membership the log applied comes back (four voters)
        for m in c.members:
            c.kill_member(m.name)
        for m in c.members:
            c.start_member(m.name, wait=False)
        c.wait_ready(timeout=DEADLINE)
        assert etcdctl(endpoints(c), "put", "after-restart", "ok").returncode == 0
        listed = members(endpoints(c))
        assert sorted(m["name"] for m in listed) == ["m1", "m2", "m3", "m4"]
        assert not any(m.get("isLearner") for m in listed)
        for m in c.members:
            with grpc.insecure_channel(m.endpoint) as ch:
                got = rpc_pb2_grpc.KVStub(ch).Range(
                    pb.RangeRequest(key=b"snap/", range_end=b"snap0", serializable=True, count_only=True), timeout=10
                )
            assert got.count == 6000, m.name
    finally:
        c.stop()
