"""Space on real member processes with etcdctl: the backend quota and the NOSPACE alarm, then
compaction, defragmentation and `alarm disarm`, side by side with etcd 3.4.23; auto-compaction in
both modes (periodic side by side with etcd); defragmentation of every member under write load; and a
disk that fills up during a defragmentation."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from chaos.cluster import LocalCluster
from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc
from tests.procs import EtcdMember, Process, RaftkvMember, etcdctl, free_port

pytestmark = [pytest.mark.integration, pytest.mark.etcd]

QUOTA = 1 << 20
VALUE = "x" * 2000
NOSPACE_ERROR = "Error: etcdserver: mvcc: database space exceeded"


def wait_for(cond, what: str, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def status_json(endpoint: str) -> dict:
    return json.loads(etcdctl(endpoint, "endpoint", "status", "-w", "json", check=True).stdout)[0]["Status"]


def last_line(r: subprocess.CompletedProcess[str]) -> str:
    lines = (r.stdout + r.stderr).strip().splitlines()
    return lines[-1] if lines else ""


def kv(endpoint: str) -> rpc_pb2_grpc.KVStub:
    return rpc_pb2_grpc.KVStub(grpc.insecure_channel(endpoint))


@pytest.fixture
def quota_pair(tmp_path: Path) -> Iterator[tuple[Process, Process]]:
    flags = [f"--quota-backend-bytes={QUOTA}"]
    raftkv = RaftkvMember("r1", tmp_path / "r1.etcd", extra=flags).start()
    etcd = EtcdMember("e1", tmp_path / "e1.etcd", extra=flags).start()
    yield raftkv, etcd
    raftkv.stop()
    etcd.stop()


def fill_until_nospace(endpoint: str) -> int:
    stub = kv(endpoint)
    for n in range(10_000):
        try:
            stub.Put(pb.PutRequest(key=b"k%05d" % n, value=VALUE.encode()), timeout=5)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
            assert exc.details() == "etcdserver: mvcc: database space exceeded"
            return n
    raise AssertionError("the quota was never reached")


def test_nospace_then_compaction_defrag_and_disarm_side_by_side_with_etcd(quota_pair: tuple[Process, Process]) -> None:
    transcripts = []
    for server in quota_pair:
        ep = server.endpoint
        own = status_json(ep)["header"]["member_id"]
        steps: list[str] = []

        def step(*args: str, stdin: str | None = None, ep: str = ep, steps: list[str] = steps, own: int = own) -> str:
            line = last_line(etcdctl(ep, *args, stdin=stdin))
            line = line.replace(str(own), "<own id>").replace(ep, "<endpoint>")
            command = re.sub(r"^compact [0-9]+", "compact <head>", " ".join(args))
            steps.append(f"{command} -> {re.sub(r'revision [0-9]+', 'revision N', line)}")
            return line

        n = fill_until_nospace(ep)
        assert n > 100
        step("alarm", "list")
        st = status_json(ep)
        steps.append(f"status errors -> {[e.replace(str(own), '<own id>') for e in st.get('errors', [])]}")
        before = st["dbSize"]
        assert step("get", "k00001", "--keys-only") == "k00001"  # reads work
        step("put", "more", "v")
        step("txn", stdin="\nput t1 v\n\n\n")
        assert step("txn", stdin="\nget k00001 --keys-only\n\n\n") == "k00001"  # no put in it: no cost
        step("lease", "grant", "60")
        deleted = last_line(etcdctl(ep, "del", "k", "--prefix"))
        assert deleted == str(n)  # deletes work
        steps.append("del k --prefix -> every key")
        rev = status_json(ep)["header"]["revision"]
        step("compact", str(rev))
        step("put", "more", "v")  # still refused: the alarm stays until it is disarmed
        step("defrag")
        after = status_json(ep)["dbSize"]
        assert after < before / 4, (before, after)
        step("alarm", "disarm")
        step("alarm", "list")
        step("put", "more", "v")
        steps.append(f"status errors after -> {status_json(ep).get('errors', [])}")
        transcripts.append(steps)
    ours, etcds = transcripts
    assert ours == etcds
    assert "alarm list -> memberID:<own id> alarm:NOSPACE" in ours
    assert f"put more v -> {NOSPACE_ERROR}" in ours and "put more v -> OK" in ours


# ---- auto-compaction ----


def compact_revision(endpoint: str) -> int:
    with grpc.insecure_channel(endpoint) as ch:
        return rpc_pb2_grpc.MaintenanceStub(ch).HashKV(pb.HashKVRequest(), timeout=5).compact_revision


def compacted_at(endpoint: str, rev: int) -> bool:
    r = etcdctl(endpoint, "get", "k", f"--rev={rev}")
    return "required revision has been compacted" in r.stderr


class Writer:
    def __init__(self, endpoints: list[str]) -> None:
        self.endpoints = endpoints
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        stubs = [kv(ep) for ep in self.endpoints]
        n = 0
        while not self.stop.wait(0.02):
            for stub in stubs:
                with contextlib.suppress(grpc.RpcError):
                    stub.Put(pb.PutRequest(key=b"k", value=b"%d" % n), timeout=5)
                n += 1

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def cluster_with(tmp_path: Path, *flags: str, env: dict[str, str] | None = None) -> LocalCluster:
    c = LocalCluster(tmp_path / "cluster", size=3, ports=[(free_port(), free_port()) for _ in range(3)], env=env)
    for m in c.members:
        m.args = list(flags)
    c.start(timeout=60)
    return c


def test_periodic_auto_compaction_keeps_the_window_side_by_side_with_etcd(tmp_path: Path) -> None:
    flags = ["--auto-compaction-mode=periodic", "--auto-compaction-retention=2s"]
    c = cluster_with(tmp_path, *flags)
    etcd = EtcdMember("e1", tmp_path / "e1.etcd", extra=flags).start()
    try:
        eps = [m.endpoint for m in c.members]
        with Writer([eps[0], etcd.endpoint]):
            # neither compacts before a whole retention has passed, then both do, by themselves
            for ep in (eps[0], etcd.endpoint):
                wait_for(lambda ep=ep: compact_revision(ep) > 1, f"auto-compaction on {ep}", timeout=60)
                first = compact_revision(ep)
                wait_for(lambda ep=ep, first=first: compact_revision(ep) > first, f"a second one on {ep}")
                assert compacted_at(ep, 2)
        # the leader compacted through the log: every raftkv member at the same revision
        wait_for(lambda: len({compact_revision(ep) for ep in eps}) == 1, "the same compaction on every member")
        head = status_json(eps[0])["header"]["revision"]
        assert compact_revision(eps[0]) < head  # the recent window is kept
        assert not compacted_at(eps[0], head)
    finally:
        etcd.stop()
        c.stop()


def test_revision_auto_compaction_keeps_the_last_revisions(tmp_path: Path) -> None:
    c = cluster_with(
        tmp_path,
        "--auto-compaction-mode=revision",
        "--auto-compaction-retention=10",
        env={"RAFTKV_REVISION_COMPACTION_INTERVAL": "0.5"},  # etcd checks every 5 minutes
    )
    try:
        eps = [m.endpoint for m in c.members]
        for i in range(40):
            etcdctl(eps[i % 3], "put", "k", f"v{i}", check=True)
        head = status_json(eps[0])["header"]["revision"]
        for ep in eps:
            wait_for(lambda ep=ep: compact_revision(ep) == head - 10, f"compaction at {head - 10} on {ep}")
        assert compacted_at(eps[1], head - 11)
        got = etcdctl(eps[2], "get", "k", f"--rev={head - 10}", "--print-value-only", check=True).stdout.strip()
        assert got == "v29"  # the tenth last revision is still there
    finally:
        c.stop()


# ---- defragmentation ----


def test_defragmenting_every_member_under_load_loses_nothing(tmp_path: Path) -> None:
    c = cluster_with(tmp_path)
    try:
        eps = ",".join(m.endpoint for m in c.members)
        stubs = [kv(m.endpoint) for m in c.members]
        for i in range(300):  # history to reclaim
            stubs[i % 3].Put(pb.PutRequest(key=b"old/%d" % (i % 20), value=b"v" * 1000), timeout=5)
        acked: list[bytes] = []
        stop = threading.Event()

        def load() -> None:
            i = 0
            while not stop.is_set():
                key = b"new/%d" % i
                try:
                    stubs[i % 3].Put(pb.PutRequest(key=key, value=key), timeout=5)
                    acked.append(key)
                except grpc.RpcError:
                    pass
                i += 1

        thread = threading.Thread(target=load, daemon=True)
        thread.start()
        try:
            wait_for(lambda: len(acked) > 20, "writes before")
            rev = status_json(c.members[0].endpoint)["header"]["revision"]
            etcdctl(eps, "compact", str(rev), "--physical", check=True)
            before = [status_json(m.endpoint)["dbSize"] for m in c.members]
            out = etcdctl(eps, "defrag", "--cluster", check=True).stdout
            assert out.count("Finished defragmenting etcd member") == 3
            n = len(acked)
            wait_for(lambda: len(acked) > n + 20, "writes after")
        finally:
            stop.set()
            thread.join(10)
        after = [status_json(m.endpoint)["dbSize"] for m in c.members]
        assert all(a < b for a, b in zip(after, before, strict=True)), (before, after)
        for m in c.members:
            with grpc.insecure_channel(m.endpoint) as ch:
                resp = rpc_pb2_grpc.KVStub(ch).Range(pb.RangeRequest(key=b"new/", range_end=b"new0"), timeout=5)
            assert set(acked) <= {x.key for x in resp.kvs}
    finally:
        c.stop()


def test_a_disk_that_fills_during_defrag_fails_it_and_loses_nothing(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], check=True)
    filler = disk / "filler"
    member = RaftkvMember("d1", disk / "d1.etcd")
    try:
        member.log_path = tmp_path / "d1.log"
        member.start()
        for i in range(200):
            etcdctl(member.endpoint, "put", f"k{i % 50}", "v" * 1000, check=True)
        etcdctl(member.endpoint, "put", "kept", "yes", check=True)
        size_before = status_json(member.endpoint)["dbSize"]
        st = os.statvfs(disk)
        with open(filler, "wb") as f:  # leave a few KiB: less than the compacted copy needs
            f.write(b"\0" * (st.f_bavail * st.f_frsize - 8192))
        r = etcdctl(member.endpoint, "defrag")
        assert r.returncode != 0
        assert "Failed to defragment etcd member" in r.stderr and "No space left on device" in r.stderr
        # the member goes on serving, with everything it had
        got = etcdctl(member.endpoint, "get", "kept", "--print-value-only", check=True).stdout.strip()
        assert got == "yes"
        assert status_json(member.endpoint)["dbSize"] == size_before
        assert not [p for p in (disk / "d1.etcd" / "member" / "snap").iterdir() if "defrag" in p.name]
        filler.unlink()
        assert "Finished defragmenting" in etcdctl(member.endpoint, "defrag", check=True).stdout
        etcdctl(member.endpoint, "put", "after", "yes", check=True)
        assert etcdctl(member.endpoint, "get", "kept", "--print-value-only", check=True).stdout.strip() == "yes"
        assert member.proc is not None and member.proc.poll() is None
    finally:
        member.stop()
        subprocess.run(["umount", str(disk)], check=False)
