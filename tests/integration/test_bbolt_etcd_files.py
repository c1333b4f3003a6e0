"""The bbolt reader on files real etcd 3.4.23 writes, made at test time: a snapshot (``etcdctl snapshot
save``) and etcd's own live database file (free pages, no freelist written, branch levels, overflow
pages). Every key etcd serves is found, the integrity check passes, and the status computed here is
the one ``etcdctl snapshot status`` prints. And the other way: what the writer makes from etcd's file
is accepted by etcdctl (bbolt's own Tx.Check) with the same hash."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from kvstore.bbolt import BoltFile, Nested, write_file
from kvstore.bbolt.layout import NO_FREELIST
from kvstore.snapshot.etcd_schema import BUCKETS as ETCD_BUCKETS
from kvstore.snapshot.snapshot_file import status
from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc
from proto.mvccpb.kv_pb2 import KeyValue
from tests.procs import ETCD, ETCDCTL, EtcdMember, etcdctl

pytestmark = [pytest.mark.integration, pytest.mark.etcd]

BIG = bytes(range(256)) * 4096  # 1 MiB: a value on 257 pages


@pytest.fixture(scope="module")
def etcd_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A real etcd filled with enough data for a three-level tree, then its snapshot and its db file."""
    if ETCD is None or ETCDCTL is None:
        pytest.fail("etcd-server and etcd-client must be installed (scripts/test installs them)")
    base = tmp_path_factory.mktemp("etcd-files")
    member = EtcdMember("ref", base / "ref.etcd").start()
    try:
        with grpc.insecure_channel(member.endpoint) as ch:
            kv = rpc_pb2_grpc.KVStub(ch)
            for batch in range(30):  # 3,000 keys of ~400 bytes, 100 to a txn
                ops = [
                    pb.RequestOp(request_put=pb.PutRequest(key=b"k/%05d" % (batch * 100 + i), value=b"v" * 400))
                    for i in range(100)
                ]
                kv.Txn(pb.TxnRequest(success=ops), timeout=10)
            kv.Put(pb.PutRequest(key=b"big", value=BIG), timeout=10)
            kv.DeleteRange(pb.DeleteRangeRequest(key=b"k/00100", range_end=b"k/00200"), timeout=10)
            lease = rpc_pb2_grpc.LeaseStub(ch).LeaseGrant(pb.LeaseGrantRequest(ID=0x77, TTL=3600), timeout=10)
            kv.Put(pb.PutRequest(key=b"leased", value=b"x", lease=lease.ID), timeout=10)
            rev = kv.Put(pb.PutRequest(key=b"k/00001", value=b"again"), timeout=10).header.revision
            kv.Compact(pb.CompactionRequest(revision=rev - 1, physical=True), timeout=10)  # frees pages
        served = json.loads(etcdctl(member.endpoint, "get", "", "--prefix", "-w", "json", check=True).stdout)
        etcdctl(member.endpoint, "snapshot", "save", str(base / "snap.db"), check=True)
    finally:
        member.stop()
    yield {"snapshot": base / "snap.db", "db": base / "ref.etcd" / "member" / "snap" / "db", "served": served}


def etcdctl_status(path: Path) -> dict:
    return json.loads(etcdctl("127.0.0.1:1", "snapshot", "status", str(path), "-w", "json", check=True).stdout)


def ours(path: Path) -> dict:
    with BoltFile.open(path) as db:
        assert db.check() == []
        st = status(db)
    return {"hash": st.hash, "revision": st.revision, "totalKey": st.total_key, "totalSize": st.total_size}


@pytest.mark.parametrize("which", ["snapshot", "db"])
def test_status_of_files_etcd_wrote_is_etcdctls(etcd_files: dict, which: str) -> None:
    assert ours(etcd_files[which]) == etcdctl_status(etcd_files[which])


@pytest.mark.parametrize("which", ["snapshot", "db"])
def test_every_key_etcd_serves_is_read(etcd_files: dict, which: str) -> None:
    with BoltFile.open(etcd_files[which]) as db:
        assert db.meta.freelist == NO_FREELIST  # etcd runs bbolt with NoFreelistSync
        key_bucket = db.root().bucket(b"key")
        assert key_bucket is not None and key_bucket.root != 0
        latest: dict[bytes, KeyValue] = {}
        for raw_key, raw in key_bucket:
            kv = KeyValue.FromString(raw)
            if raw_key.endswith(b"t"):
                latest.pop(kv.key, None)
            else:
                latest[kv.key] = kv
        levels = 1
        flags, _, page = db.page(key_bucket.root)
        while flags & 0x01:  # branch: follow the first child down
            levels += 1
            flags, _, page = db.page(int.from_bytes(page[16 + 8 : 16 + 16], "little"))
        assert levels >= 3
        assert max(db.overflow(p) for p in key_bucket.page_ids()) >= 256  # the 1 MiB value
        assert [n for n, _ in db.root().buckets()] == list(ETCD_BUCKETS)
    served = etcd_files["served"]["kvs"]
    assert len(served) == len(latest) == 3000 - 100 + 2
    for kv in served:
        got = latest[base64.b64decode(kv["key"])]
        assert got.mod_revision == int(kv["mod_revision"]) and got.version == int(kv["version"])
    assert latest[b"big"].value == BIG


def test_what_the_writer_makes_from_etcds_file_passes_etcdctl(etcd_files: dict, tmp_path: Path) -> None:
    with BoltFile.open(etcd_files["snapshot"]) as db:
        tree = [(name, Nested(list(bucket), bucket.sequence)) for name, bucket in db.root().buckets()]
        out = io.BytesIO()
        write_file(out, tree)
    copy = tmp_path / "copy.db"
    copy.write_bytes(out.getvalue())
    theirs, mine = etcdctl_status(etcd_files["snapshot"]), etcdctl_status(copy)
    for field in ("hash", "revision", "totalKey"):
        assert mine[field] == theirs[field], field
    assert mine["totalSize"] < theirs["totalSize"]  # written compactly: no free pages
