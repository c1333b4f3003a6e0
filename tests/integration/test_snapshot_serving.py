"""Maintenance.Snapshot on a running member: consistent copies while clients write, and a client that
walks away mid-stream costs nothing (no file left, the member keeps serving)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import pytest

from kvstore.mvcc.revision import bytes_to_rev
from kvstore.snapshot.snapshot_file import open_snapshot, status
from kvstore.snapshot.stream import save_stream
from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc
from tests.procs import RaftkvMember

pytestmark = pytest.mark.integration

WRITES = 1500


def outgoing(member: RaftkvMember) -> list[Path]:
    return list((member.data_dir / "member" / "snap").glob("outgoing-etcd-*"))


def save(endpoint: str, path: Path) -> None:
    with grpc.insecure_channel(endpoint) as ch:
        stream = rpc_pb2_grpc.MaintenanceStub(ch).Snapshot(pb.SnapshotRequest(), timeout=60)
        save_stream((r.blob for r in stream), path)


def test_snapshots_taken_during_writes_are_consistent_prefixes(raftkv: RaftkvMember, tmp_path: Path) -> None:
    done = threading.Event()
    acked: list[int] = []

    def writer() -> None:
        with grpc.insecure_channel(raftkv.endpoint) as ch:
            kv = rpc_pb2_grpc.KVStub(ch)
            for i in range(WRITES):
                acked.append(
                    kv.Put(pb.PutRequest(key=b"k/%05d" % (i % 300), value=b"x" * 200), timeout=10).header.revision
                )
        done.set()

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    paths = []
    while not done.is_set() or len(paths) < 3:
        path = tmp_path / f"snap{len(paths)}.db"
        save(raftkv.endpoint, path)
        paths.append(path)
    t.join(60)
    assert len(acked) == WRITES and acked == list(range(2, WRITES + 2))
    for path in paths:
        with open_snapshot(path) as snap:
            revision = status(snap.db).revision
            revs = [bytes_to_rev(k)[0] for k, _ in snap.db.root().bucket(b"key")]
        # every revision up to the snapshot's, none after: a copy of one moment
        assert revs == list(range(2, revision + 1)), path
    assert not outgoing(raftkv)


def test_a_client_that_walks_away_mid_stream_leaves_nothing(raftkv: RaftkvMember, tmp_path: Path) -> None:
    with grpc.insecure_channel(raftkv.endpoint) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        for i in range(40):
            kv.Txn(
                pb.TxnRequest(
                    success=[
                        pb.RequestOp(request_put=pb.PutRequest(key=b"k/%05d" % (i * 50 + j), value=b"v" * 1000))
                        for j in range(50)
                    ]
                ),
                timeout=10,
            )
        for _ in range(3):
            stream = rpc_pb2_grpc.MaintenanceStub(ch).Snapshot(pb.SnapshotRequest(), timeout=60)
            first = next(stream)
            assert first.remaining_bytes > 0 and len(first.blob) == 32 * 1024
            stream.cancel()
        kv.Put(pb.PutRequest(key=b"still", value=b"serving"), timeout=10)
    deadline = time.monotonic() + 60
    while outgoing(raftkv):  # the server notices the cancellations and removes its copies
        assert time.monotonic() < deadline, f"left behind: {outgoing(raftkv)}"
        time.sleep(0.02)
    save(raftkv.endpoint, tmp_path / "whole.db")
    with open_snapshot(tmp_path / "whole.db") as snap:
        assert status(snap.db).total_key >= 2000
