"""Migration both ways with Debian's etcd 3.4.23, and HashKV as etcd computes it (issue 14, "Must show" 2
and 4's HashKV part), with real processes, real etcdctl:

- raftkv -> etcd: ``etcdctl snapshot save`` from raftkv, ``etcdctl snapshot status`` reads it,
  ``etcdctl snapshot restore``, a real etcd started on the result serves the same ``get "" --prefix
  -w json`` at the same revision, with the same leases and the same HashKV;
- etcd -> raftkv: ``raftkv snapshot restore`` of real etcd's snapshot, for one member and for a
  three-member cluster, serves the same, hashes the same, and goes on from the same revision;
- HashKV equal across raftkv members and equal to real etcd's for the same history (the same
  requests, lease ids given, a compaction at a deletion's revision), and the one documented case
  where it cannot be equal to 3.4.23's, shown byte by byte.

Every wait is for a condition; nothing asserts a duration.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import crc32c
import grpc
import pytest

from chaos.cluster import LocalCluster
from kvstore.bbolt import BoltFile
from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc
from tests.procs import ETCD, ETCDCTL, EtcdMember, Process, RaftkvMember, etcdctl, free_port

pytestmark = [pytest.mark.integration, pytest.mark.etcd]

LEASE_A, LEASE_B = 0x1001, 0x1002


@pytest.fixture(autouse=True)
def _tools() -> None:
    if ETCD is None or ETCDCTL is None:
        pytest.fail("etcd-server and etcd-client must be installed (scripts/test installs them)")


class Client:
    def __init__(self, endpoint: str) -> None:
        self.channel = grpc.insecure_channel(endpoint, options=[("grpc.max_receive_message_length", 1 << 30)])
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self.lease = rpc_pb2_grpc.LeaseStub(self.channel)
        self.maint = rpc_pb2_grpc.MaintenanceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def put(self, key: bytes, value: bytes, lease: int = 0) -> int:
        return self.kv.Put(pb.PutRequest(key=key, value=value, lease=lease), timeout=10).header.revision

    def hash_kv(self, revision: int = 0) -> pb.HashKVResponse:
        return self.maint.HashKV(pb.HashKVRequest(revision=revision), timeout=10)


def with_client(endpoint: str, fn: Callable[[Client], object]) -> object:
    c = Client(endpoint)
    try:
        return fn(c)
    finally:
        c.close()


def history(c: Client) -> int:
    """The same requests for raftkv and etcd; returns the compaction revision (a deletion's)."""
    for i in range(30):
        c.put(b"a/%02d" % i, b"value %d" % i)
    c.lease.LeaseGrant(pb.LeaseGrantRequest(ID=LEASE_A, TTL=3600), timeout=10)
    c.lease.LeaseGrant(pb.LeaseGrantRequest(ID=LEASE_B, TTL=1800), timeout=10)
    c.put(b"l/1", b"leased", LEASE_A)
    c.put(b"l/2", b"leased", LEASE_A)
    c.put(b"l/3", b"short", LEASE_B)
    for i in range(10):
        c.put(b"a/%02d" % i, b"second %d" % i)
    compact_at = c.kv.DeleteRange(pb.DeleteRangeRequest(key=b"a/05"), timeout=10).header.revision
    c.kv.Txn(
        pb.TxnRequest(
            compare=[pb.Compare(key=b"a/01", target=pb.Compare.VALUE, value=b"second 1")],
            success=[
                pb.RequestOp(request_put=pb.PutRequest(key=b"t/1", value=b"yes")),
                pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=b"a/06")),
                pb.RequestOp(request_put=pb.PutRequest(key=b"t/2", value=b"also")),
            ],
        ),
        timeout=10,
    )
    c.kv.DeleteRange(pb.DeleteRangeRequest(key=b"a/20", range_end=b"a/25"), timeout=10)
    c.lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=LEASE_B), timeout=10)
    c.kv.Compact(pb.CompactionRequest(revision=compact_at, physical=True), timeout=10)
    c.put(b"a/01", b"third")
    c.put(b"big", bytes(range(256)) * 400)  # 100 KiB: overflow pages
    c.put(b"z", b"last")
    return compact_at


def get_all(endpoint: str) -> dict:
    return json.loads(etcdctl(endpoint, "get", "", "--prefix", "-w", "json", check=True).stdout)


def served(endpoint: str) -> tuple:
    """What get "" --prefix -w json says that two clusters must agree on: the keys with all their
    fields, the count, and the revision (the header's ids and raft term are the cluster's own)."""
    got = get_all(endpoint)
    return got["kvs"], got["count"], got["header"]["revision"]


def leases(endpoint: str) -> dict[str, tuple[int, list[str]]]:
    out = {}
    for line in etcdctl(endpoint, "lease", "list", check=True).stdout.splitlines()[1:]:
        ttl = json.loads(etcdctl(endpoint, "lease", "timetolive", line, "--keys", "-w", "json", check=True).stdout)
        out[line] = (ttl["granted-ttl"], sorted(ttl.get("keys") or []))
    return out


def raftkv_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raftkv_cmd.main", "snapshot", *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def raftkv(tmp_path: Path) -> Iterator[RaftkvMember]:
    m = RaftkvMember("rk", tmp_path / "rk.etcd").start()
    yield m
    m.stop()


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdMember]:
    m = EtcdMember("ref", tmp_path / "ref.etcd").start()
    yield m
    m.stop()


def started_on_restore(member: Process, restore: Callable[[Process], None]) -> Process:
    """Restores member's data directory with its own name and peer URL, then starts it."""
    restore(member)
    return member.start()


def etcdctl_restore(snapshot: Path) -> Callable[[Process], None]:
    def run(m: Process) -> None:
        peer = f"http://127.0.0.1:{m.peer_port}"
        etcdctl(
            "127.0.0.1:1",
            "snapshot",
            "restore",
            str(snapshot),
            f"--name={m.name}",
            f"--data-dir={m.data_dir}",
            f"--initial-cluster={m.name}={peer}",
            f"--initial-advertise-peer-urls={peer}",
            check=True,
        )

    return run


def raftkv_restore(snapshot: Path) -> Callable[[Process], None]:
    def run(m: Process) -> None:
        peer = f"http://127.0.0.1:{m.peer_port}"
        done = raftkv_cli(
            "restore",
            str(snapshot),
            f"--name={m.name}",
            f"--data-dir={m.data_dir}",
            f"--initial-cluster={m.name}={peer}",
            f"--initial-advertise-peer-urls={peer}",
        )
        assert done.returncode == 0, done.stderr

    return run


# ---- raftkv -> etcd ----


def test_etcd_starts_from_a_raftkv_snapshot_with_everything_intact(raftkv: RaftkvMember, tmp_path: Path) -> None:
    compact_at = with_client(raftkv.endpoint, history)
    snap = tmp_path / "raftkv.db"
    etcdctl(raftkv.endpoint, "snapshot", "save", str(snap), check=True)
    status = json.loads(etcdctl("127.0.0.1:1", "snapshot", "status", str(snap), "-w", "json", check=True).stdout)
    before = served(raftkv.endpoint)
    assert status["revision"] == before[2]
    ours = raftkv_cli("status", str(snap), "-w", "json")
    assert ours.returncode == 0 and json.loads(ours.stdout) == status
    expected_leases = leases(raftkv.endpoint)
    assert sorted(expected_leases) == [f"{LEASE_A:016x}"]
    raftkv_hash = with_client(raftkv.endpoint, lambda c: c.hash_kv())

    etcd = started_on_restore(EtcdMember("restored", tmp_path / "restored.etcd"), etcdctl_restore(snap))
    try:
        assert served(etcd.endpoint) == before
        assert leases(etcd.endpoint) == expected_leases
        etcd_hash = with_client(etcd.endpoint, lambda c: c.hash_kv())
        assert (etcd_hash.hash, etcd_hash.compact_revision, etcd_hash.header.revision) == (
            raftkv_hash.hash,
            compact_at,
            before[2],
        )
        for endpoint in (raftkv.endpoint, etcd.endpoint):  # history below the compaction is gone in both
            old = etcdctl(endpoint, "get", "a/01", f"--rev={compact_at - 1}")
            assert old.returncode != 0 and "required revision has been compacted" in old.stderr
        at = [
            etcdctl(e, "get", "", "--prefix", f"--rev={compact_at}", "-w", "json").stdout
            for e in (raftkv.endpoint, etcd.endpoint)
        ]
        assert json.loads(at[0])["kvs"] == json.loads(at[1])["kvs"]
        # etcd goes on from raftkv's revision
        assert with_client(etcd.endpoint, lambda c: c.put(b"after", b"x")) == before[2] + 1
    finally:
        etcd.stop()


# ---- etcd -> raftkv ----


def test_raftkv_starts_from_an_etcd_snapshot_and_back(etcd: EtcdMember, tmp_path: Path) -> None:
    compact_at = with_client(etcd.endpoint, history)
    snap = tmp_path / "etcd.db"
    etcdctl(etcd.endpoint, "snapshot", "save", str(snap), check=True)
    before = served(etcd.endpoint)
    expected_leases = leases(etcd.endpoint)
    etcd_hash = with_client(etcd.endpoint, lambda c: c.hash_kv())
    ours = raftkv_cli("status", str(snap), "-w", "json")
    theirs = etcdctl("127.0.0.1:1", "snapshot", "status", str(snap), "-w", "json", check=True).stdout
    assert ours.returncode == 0 and json.loads(ours.stdout) == json.loads(theirs)
    # raftkv snapshot save takes the same snapshot from etcd as etcdctl does
    also = tmp_path / "etcd-by-raftkv.db"
    assert raftkv_cli("save", str(also), f"--endpoints={etcd.endpoint}").returncode == 0
    assert json.loads(raftkv_cli("status", str(also), "-w", "json").stdout) == json.loads(theirs)

    rk = started_on_restore(RaftkvMember("rk", tmp_path / "rk.etcd"), raftkv_restore(snap))
    try:
        assert served(rk.endpoint) == before
        assert leases(rk.endpoint) == expected_leases
        rk_hash = with_client(rk.endpoint, lambda c: c.hash_kv())
        assert (rk_hash.hash, rk_hash.compact_revision, rk_hash.header.revision) == (
            etcd_hash.hash,
            compact_at,
            before[2],
        )
        members = json.loads(etcdctl(rk.endpoint, "member", "list", "-w", "json", check=True).stdout)["members"]
        assert [m["name"] for m in members] == ["rk"]
        assert with_client(rk.endpoint, lambda c: c.put(b"after", b"x")) == before[2] + 1
        # and back to etcd: a snapshot of the restored raftkv
        again = tmp_path / "again.db"
        saved = raftkv_cli("save", str(again), f"--endpoints={rk.endpoint}")
        assert saved.returncode == 0, saved.stderr
        after = served(rk.endpoint)
    finally:
        rk.stop()
    etcd2 = started_on_restore(EtcdMember("back", tmp_path / "back.etcd"), etcdctl_restore(again))
    try:
        assert served(etcd2.endpoint) == after
        assert leases(etcd2.endpoint) == expected_leases
    finally:
        etcd2.stop()


def wait_for(condition: Callable[[], object], what: str, timeout: float = 60.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = condition()
            if got:
                return got
        except grpc.RpcError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def hash_kv_at(endpoint: str, revision: int) -> pb.HashKVResponse:
    return with_client(endpoint, lambda c: c.hash_kv(revision))  # type: ignore[return-value]


def current_rev(endpoint: str) -> int:
    return with_client(endpoint, lambda c: c.kv.Range(pb.RangeRequest(key=b"z"), timeout=5).header.revision)  # type: ignore[return-value]


def test_a_three_member_cluster_restored_from_an_etcd_snapshot(etcd: EtcdMember, tmp_path: Path) -> None:
    with_client(etcd.endpoint, history)
    snap = tmp_path / "etcd.db"
    etcdctl(etcd.endpoint, "snapshot", "save", str(snap), check=True)
    before = served(etcd.endpoint)
    etcd_hash = with_client(etcd.endpoint, lambda c: c.hash_kv())
    cluster = LocalCluster(tmp_path / "cluster", size=3, ports=[(free_port(), free_port()) for _ in range(3)])
    for m in cluster.members:
        done = raftkv_cli(
            "restore",
            str(snap),
            f"--name={m.name}",
            f"--data-dir={m.data_dir}",
            f"--initial-cluster={cluster.initial_cluster}",
            f"--initial-cluster-token={cluster.token}",
            f"--initial-advertise-peer-urls={m.peer_url}",
        )
        assert done.returncode == 0, done.stderr
    cluster.start(timeout=60)
    try:
        for m in cluster.members:
            assert served(m.endpoint) == before
            h = hash_kv_at(m.endpoint, 0)
            assert (h.hash, h.header.revision) == (etcd_hash.hash, before[2])
        members = json.loads(etcdctl(cluster.endpoints, "member", "list", "-w", "json", check=True).stdout)["members"]
        assert sorted(m["name"] for m in members) == ["m1", "m2", "m3"]
        rev = with_client(cluster.members[0].endpoint, lambda c: c.put(b"after", b"x"))
        assert rev == before[2] + 1
        for m in cluster.members:
            wait_for(lambda m=m: current_rev(m.endpoint) >= rev, f"{m.name} to apply revision {rev}")
        assert len({hash_kv_at(m.endpoint, rev).hash for m in cluster.members}) == 1
    finally:
        cluster.stop()


# ---- HashKV across members and against etcd ----


def stable_hashes(endpoints: list[str]) -> list[int]:
    """Maintenance.Hash of every member, taken while every member sits at the same applied index."""

    def attempt() -> list[int] | None:
        def applied(e: str) -> int:
            return with_client(e, lambda c: c.maint.Status(pb.StatusRequest(), timeout=5).raftAppliedIndex)  # type: ignore[return-value]

        first = [applied(e) for e in endpoints]
        hashes = [with_client(e, lambda c: c.maint.Hash(pb.HashRequest(), timeout=10).hash) for e in endpoints]
        if len(set(first)) == 1 and [applied(e) for e in endpoints] == first:
            return hashes  # type: ignore[return-value]
        return None

    return wait_for(attempt, "every member at the same applied index")  # type: ignore[return-value]


def test_hash_kv_equal_across_members_and_to_etcd(etcd: EtcdMember, tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "cluster", size=3, ports=[(free_port(), free_port()) for _ in range(3)])
    cluster.start(timeout=60)
    try:
        compact_at = with_client(cluster.members[1].endpoint, history)
        assert with_client(etcd.endpoint, history) == compact_at
        last = current_rev(etcd.endpoint)
        assert current_rev(cluster.members[1].endpoint) == last
        for m in cluster.members:
            wait_for(lambda m=m: current_rev(m.endpoint) >= last, f"{m.name} to apply revision {last}")
        for rev in (0, compact_at + 1, compact_at + 3, last - 1, last):
            theirs = hash_kv_at(etcd.endpoint, rev)
            for m in cluster.members:
                mine = hash_kv_at(m.endpoint, rev)
                assert (mine.hash, mine.compact_revision, mine.header.revision) == (
                    theirs.hash,
                    theirs.compact_revision,
                    theirs.header.revision,
                ), (m.name, rev)
        for endpoint in (etcd.endpoint, cluster.members[0].endpoint):
            with pytest.raises(grpc.RpcError) as err:
                hash_kv_at(endpoint, compact_at)
            assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE
            assert err.value.details() == "etcdserver: mvcc: required revision has been compacted"
            with pytest.raises(grpc.RpcError) as err:
                hash_kv_at(endpoint, last + 100)
            assert err.value.details() == "etcdserver: mvcc: required revision is a future revision"
        hashes = stable_hashes([m.endpoint for m in cluster.members])
        assert len(set(hashes)) == 1
        out = etcdctl(cluster.endpoints, "endpoint", "hashkv", "--cluster", "-w", "json", check=True).stdout
        assert len({e["HashKV"]["hash"] for e in json.loads(out)}) == 1
    finally:
        cluster.stop()


def key_records(endpoint: str, path: Path) -> list[tuple[bytes, bytes]]:
    etcdctl(endpoint, "snapshot", "save", str(path), check=True)
    with BoltFile.open(path) as db:
        return list(db.root().bucket(b"key"))


def unfiltered_hash(records: list[tuple[bytes, bytes]], rev: int) -> int:
    """etcd's HashByRev over records when its keep set is empty: every stored revision up to rev."""
    h = crc32c.crc32c(b"key")
    for k, v in records:
        if int.from_bytes(k[:8], "big") <= rev:
            h = crc32c.crc32c(v, crc32c.crc32c(k, h))
    return h


def test_where_hash_kv_cannot_equal_etcd_3_4_23s(raftkv: RaftkvMember, etcd: EtcdMember, tmp_path: Path) -> None:
    """A deletion at exactly the compaction revision: etcd 3.4.23 drops its tombstone from the backend
    (the bug etcd-io/etcd#18089, fixed in 3.4.34 and 3.5.15: a watch from that revision misses the
    deletion), raftkv keeps it. While some key is alive, HashKV's keep filter leaves it out and the
    hashes agree; once nothing is alive, etcd skips the filter, the tombstone counts, and they differ
    by exactly that record."""

    def run(c: Client) -> int:
        c.put(b"a", b"1")  # 2
        c.put(b"b", b"2")  # 3
        c.put(b"a", b"3")  # 4
        rev = c.kv.DeleteRange(pb.DeleteRangeRequest(key=b"a"), timeout=10).header.revision  # 5
        c.kv.Compact(pb.CompactionRequest(revision=rev, physical=True), timeout=10)
        return rev

    compact_at = with_client(raftkv.endpoint, run)
    assert with_client(etcd.endpoint, run) == compact_at
    assert hash_kv_at(raftkv.endpoint, 0).hash == hash_kv_at(etcd.endpoint, 0).hash  # "b" alive: filtered
    mine = key_records(raftkv.endpoint, tmp_path / "raftkv.db")
    theirs = key_records(etcd.endpoint, tmp_path / "etcd.db")
    tombstone = compact_at.to_bytes(8, "big") + b"_" + bytes(8) + b"t"
    assert [k for k, _ in mine] == [k for k, _ in theirs] + [tombstone]  # the one difference

    last = with_client(raftkv.endpoint, lambda c: c.kv.DeleteRange(pb.DeleteRangeRequest(key=b"b")).header.revision)
    assert (
        with_client(etcd.endpoint, lambda c: c.kv.DeleteRange(pb.DeleteRangeRequest(key=b"b")).header.revision) == last
    )
    mine_h, theirs_h = hash_kv_at(raftkv.endpoint, 0).hash, hash_kv_at(etcd.endpoint, 0).hash
    assert mine_h != theirs_h
    mine = key_records(raftkv.endpoint, tmp_path / "raftkv2.db")
    theirs = key_records(etcd.endpoint, tmp_path / "etcd2.db")
    assert mine_h == unfiltered_hash(mine, last)
    assert theirs_h == unfiltered_hash(theirs, last)
    assert [r for r in mine if r[0] != tombstone] == theirs
