"""Durability of a member: no acknowledged write is lost to SIGKILL, crashes at failpoints, a torn
log tail or a full disk; damaged files stop start-up with a message naming them."""

from __future__ import annotations

import os
import random
import struct
import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest

from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc
from tests.procs import RaftkvMember, wait_for


class Writers:
    """Threads putting unique keys as fast as they can, remembering what was acknowledged."""

    def __init__(self, endpoint: str, prefix: str, threads: int = 4, window: int = 16) -> None:
        self.endpoint = endpoint
        self.prefix = prefix
        self.acked: dict[bytes, bytes] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(n, window), daemon=True) for n in range(threads)]

    def __enter__(self) -> Writers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def wait_for_acks(self, count: int) -> None:
        wait_for(f"{count} acknowledged writes", lambda: len(self.acked) >= count)

    def _run(self, n: int, window: int) -> None:
        i = 0
        with grpc.insecure_channel(self.endpoint) as channel:
            stub = rpc_pb2_grpc.KVStub(channel)
            while not self.stop.is_set():
                batch = []
                for _ in range(window):
                    key = f"{self.prefix}/{n}/{i}".encode()
                    value = os.urandom(8).hex().encode()
                    batch.append((key, value, stub.Put.future(pb.PutRequest(key=key, value=value), timeout=5)))
                    i += 1
                for key, value, fut in batch:
                    try:
                        fut.result()
                    except grpc.RpcError:
                        continue
                    with self.lock:
                        self.acked[key] = value


def assert_all_present(endpoint: str, acked: dict[bytes, bytes]) -> None:
    assert acked, "the load generator never got an acknowledgement"
    with grpc.insecure_channel(endpoint) as channel:
        got = rpc_pb2_grpc.KVStub(channel).Range(pb.RangeRequest(key=b"\x00", range_end=b"\x00"), timeout=30)
    stored = {kv.key: kv.value for kv in got.kvs}
    lost = [k for k, v in acked.items() if stored.get(k) != v]
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged writes lost, e.g. {lost[:5]}"


def put(endpoint: str, key: bytes, value: bytes) -> int:
    with grpc.insecure_channel(endpoint) as channel:
        return rpc_pb2_grpc.KVStub(channel).Put(pb.PutRequest(key=key, value=value), timeout=10).header.revision


def test_sigkill_under_load_loses_no_acknowledged_write(tmp_path: Path) -> None:
    member = RaftkvMember("m1", tmp_path / "m1.etcd").start()
    acked: dict[bytes, bytes] = {}
    rng = random.Random(7)
    last_rev = 0
    try:
        for round_ in range(4):
            with Writers(member.endpoint, f"round{round_}") as w:
                w.wait_for_acks(20)  # under load (however long it takes to get there), then a while longer
                time.sleep(rng.uniform(0.0, 0.8))
                member.kill()
            acked.update(w.acked)
            member.start()
            assert_all_present(member.endpoint, acked)
            rev = put(member.endpoint, b"probe", b"x")
            assert rev > last_rev, "revisions went backwards after a restart"
            last_rev = rev
    finally:
        member.stop()


@pytest.mark.parametrize("point", ["beforeWALSave", "afterWALSave", "beforeApply", "afterApply"])
def test_crash_at_a_failpoint_loses_no_acknowledged_write(tmp_path: Path, point: str) -> None:
    data = tmp_path / "m1.etcd"
    member = RaftkvMember("m1", data, env={"RAFTKV_FAILPOINTS": f"{point}=40*crash"})
    member.start()
    with Writers(member.endpoint, "fp") as w:
        member.proc.wait(120)  # the failpoint kills it on its 40th hit
    assert member.stop() == 137
    member.env = {}  # restart the same member without the failpoint
    member.start()
    try:
        assert_all_present(member.endpoint, w.acked)
    finally:
        member.stop()


def test_failed_fsync_stops_the_member_without_acknowledging(tmp_path: Path) -> None:
    data = tmp_path / "m1.etcd"
    member = RaftkvMember("m1", data, env={"RAFTKV_FAILPOINTS": "afterWALSave=30*error"}).start()
    with Writers(member.endpoint, "fsync") as w:
        code = member.proc.wait(120)
    assert code == 1
    assert "cannot persist to WAL" in member.log()
    member.stop()
    member.env = {}
    member.start()
    try:
        assert_all_present(member.endpoint, w.acked)
    finally:
        member.stop()


def wal_segment(data: Path) -> Path:
    return sorted((data / "member" / "wal").glob("*.wal"))[-1]


def test_torn_log_tail_is_repaired(tmp_path: Path) -> None:
    data = tmp_path / "m1.etcd"
    member = RaftkvMember("m1", data).start()
    with Writers(member.endpoint, "torn") as w:
        w.wait_for_acks(20)
    member.kill()
    with open(wal_segment(data), "ab") as f:  # a batch that was being written when the power went
        f.write(struct.pack("<II", 200, 12345) + b"\x93\x01\x05partial")
    member.start()
    try:
        assert_all_present(member.endpoint, w.acked)
        assert "repairing torn WAL tail" in member.log()
        put(member.endpoint, b"after-repair", b"ok")
    finally:
        member.stop()


def start_fails(tmp_path: Path, member: RaftkvMember) -> str:
    cmd = member.command()
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    return result.stderr


def test_corrupt_log_record_refuses_to_start(tmp_path: Path) -> None:
    data = tmp_path / "m1.etcd"
    member = RaftkvMember("m1", data).start()
    for i in range(50):
        put(member.endpoint, b"k%d" % i, b"v" * 100)
    member.stop()
    segment = wal_segment(data)
    raw = bytearray(segment.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    segment.write_bytes(bytes(raw))
    err = start_fails(tmp_path, member)
    assert str(segment) in err and "corrupt" in err
    assert segment.read_bytes() == bytes(raw), "a refused start must not modify the log"


def test_corrupt_backend_refuses_to_start(tmp_path: Path) -> None:
    data = tmp_path / "m1.etcd"
    member = RaftkvMember("m1", data).start()
    put(member.endpoint, b"k", b"v")
    member.stop()
    db = data / "member" / "db" / "data.mdb"
    with open(db, "r+b") as f:
        f.write(os.urandom(16384))  # both LMDB meta pages
    err = start_fails(tmp_path, member)
    assert str(db) in err


def test_lost_backend_is_rebuilt_from_the_log(tmp_path: Path) -> None:
    data = tmp_path / "m1.etcd"
    member = RaftkvMember("m1", data).start()
    acked = {b"k%d" % i: b"v%d" % i for i in range(100)}
    for k, v in acked.items():
        put(member.endpoint, k, v)
    member.stop()
    for f in (data / "member" / "db").iterdir():
        f.unlink()
    member.start()
    try:
        assert_all_present(member.endpoint, acked)
    finally:
        member.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root (CI runs as root)")
def test_full_disk_stops_the_member_and_loses_nothing(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], check=True)
    try:
        member = RaftkvMember("m1", mnt / "m1.etcd").start()
        acked: dict[bytes, bytes] = {}
        with grpc.insecure_channel(member.endpoint) as channel:
            stub = rpc_pb2_grpc.KVStub(channel)
            for i in range(10_000):
                key, value = b"full%d" % i, os.urandom(2000)
                try:
                    stub.Put(pb.PutRequest(key=key, value=value), timeout=10)
                except grpc.RpcError as exc:
                    if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and member.proc.poll() is None:
                        continue  # only slow (a busy machine), not refused: not acknowledged, go on
                    break
                acked[key] = value
        assert member.proc.wait(120) == 1, "a member that cannot persist must stop"
        assert "No space left on device" in member.log() or "MDB_MAP_FULL" in member.log()
        member.stop()
        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
        member.start()
        assert_all_present(member.endpoint, acked)
        member.stop()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
