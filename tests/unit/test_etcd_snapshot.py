"""Snapshots in etcd's format without processes: export of a backend the applier filled, restore into a
new data directory, refusal of truncated or corrupt snapshots (leaving nothing), the stream format,
and etcd's Hash/HashKV algorithms. Against real etcd and etcdctl: tests/integration/test_snapshot_etcd.py."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import crc32c
import msgpack
import pytest

from kvstore.apply import Applier, Op, encode_request
from kvstore.auth import AuthStore
from kvstore.bbolt import BoltFile, Nested, write_file
from kvstore.lease import Lessor
from kvstore.membership import ChangeContext, MemberInfo
from kvstore.mvcc import Backend, KVStore
from kvstore.mvcc.errors import CompactedError, FutureRevError
from kvstore.mvcc.index import TreeIndex
from kvstore.mvcc.revision import rev_to_bytes, tombstone_to_bytes
from kvstore.mvcc.shared_lock import SharedLock
from kvstore.snapshot import etcd_schema as s
from kvstore.snapshot import hashing, maintenance
from kvstore.snapshot.errors import SnapshotError
from kvstore.snapshot.restore import RestoreConfig, restore
from kvstore.snapshot.snapshot_file import SHA_SIZE, open_snapshot, status, write_snapshot
from kvstore.snapshot.stream import save_stream
from proto.etcdserverpb import rpc_pb2 as pb
from proto.leasepb.lease_pb2 import Lease as LeasePb
from proto.mvccpb.kv_pb2 import KeyValue
from raft.wal import WAL

VERSION = "3.5.17"


@dataclass
class State:
    """A member's state without the member: backend, lessor, store, applier (and the lock the
    maintenance functions take)."""

    path: Path
    backend: Backend
    lessor: Lessor
    store: KVStore
    applier: Applier
    index: int = 0
    lock: SharedLock = field(default_factory=SharedLock)

    @classmethod
    def open(cls, path: Path) -> State:
        backend = Backend(path)
        lessor = Lessor(backend, min_ttl=1)
        store = KVStore(backend, leases=lessor)
        return cls(path, backend, lessor, store, Applier(store, leases=lessor))

    @property
    def backend_lock(self) -> SharedLock:
        return self.lock

    def apply(self, op: Op, request: object) -> object:
        self.index += 1
        data = encode_request(op, self.index, request.SerializeToString())  # type: ignore[attr-defined]
        results = self.applier.apply([(self.index, 2, data)])
        for job in list(self.store.pending_compactions):
            while not self.store.compaction_step(job):
                pass
            self.store.pending_compactions.remove(job)
        return results[0][1]

    def put(self, key: bytes, value: bytes, lease: int = 0) -> None:
        self.apply(Op.PUT, pb.PutRequest(key=key, value=value, lease=lease))

    def delete(self, key: bytes, end: bytes = b"") -> None:
        self.apply(Op.DELETE_RANGE, pb.DeleteRangeRequest(key=key, range_end=end))

    def compact(self, rev: int) -> None:
        self.apply(Op.COMPACT, pb.CompactionRequest(revision=rev))

    def grant(self, lease_id: int, ttl: int) -> None:
        self.apply(Op.LEASE_GRANT, pb.LeaseGrantRequest(ID=lease_id, TTL=ttl))

    def add_member(self, member_id: int, name: str, url: str) -> None:
        self.index += 1
        self.applier.apply_conf_change(
            self.index, 2, "add", member_id, ChangeContext(), MemberInfo(member_id, name, [url])
        )

    def close(self) -> None:
        self.backend.close()

    def records(self, name: bytes) -> list[tuple[bytes, bytes]]:
        with self.backend.begin_read() as txn:
            return list(txn.cursor(db=self.backend.dbs[name]))


def history(state: State) -> None:
    """A little of everything: puts, overwrites, a deletion, a txn, leases, a compaction."""
    state.add_member(0x1234, "m1", "http://127.0.0.1:2380")
    state.grant(0x7A, 600)
    state.grant(-5, 300)  # a negative id: its key sorts after the positive ones, in both stores
    for i in range(40):
        state.put(b"key/%03d" % i, b"v%d" % i * 30)
    state.put(b"key/001", b"again", lease=0x7A)
    state.delete(b"key/002")
    state.apply(
        Op.TXN,
        pb.TxnRequest(
            success=[
                pb.RequestOp(request_put=pb.PutRequest(key=b"t/1", value=b"x")),
                pb.RequestOp(request_put=pb.PutRequest(key=b"t/2", value=b"y", lease=-5)),
            ]
        ),
    )
    state.compact(20)
    state.put(b"big", bytes(range(256)) * 64)  # 16 KiB: overflow pages


@pytest.fixture
def state(tmp_path: Path):
    st = State.open(tmp_path / "source")
    history(st)
    yield st
    st.close()


def snapshot_of(state: State, path: Path) -> Path:
    write_snapshot(state.backend, path, VERSION)
    return path


# ---- export: etcd's buckets and encodings ----


def test_a_snapshot_has_every_etcd_bucket_with_etcd_encodings(state: State, tmp_path: Path) -> None:
    path = snapshot_of(state, tmp_path / "snap.db")
    with open_snapshot(path) as snap:
        root = snap.db.root()
        assert [name for name, _ in root.buckets()] == list(s.BUCKETS)
        assert list(root.bucket(s.KEY)) == state.records(b"key")  # the same bytes
        meta = dict(root.bucket(s.META))
        assert meta[s.FINISHED_COMPACT] == rev_to_bytes(20, 0) == meta[s.SCHEDULED_COMPACT]
        assert meta[s.CONSISTENT_INDEX] == s.u64(state.applier.applied_index)
        assert meta[s.TERM] == s.u64(2)
        leases = {LeasePb.FromString(v).ID: (k, LeasePb.FromString(v)) for k, v in root.bucket(s.LEASE)}
        assert sorted(leases) == [-5, 0x7A]
        assert leases[0x7A][0] == b"\x00" * 7 + b"\x7a" and leases[0x7A][1].TTL == 600
        assert leases[-5][0] == b"\xff" * 7 + b"\xfb"
        members = dict(root.bucket(s.MEMBERS))
        assert json.loads(members[b"1234"]) == {"id": 0x1234, "peerURLs": ["http://127.0.0.1:2380"], "name": "m1"}
        assert dict(root.bucket(s.CLUSTER)) == {b"clusterVersion": b"3.5.0"}
        assert list(root.bucket(s.MEMBERS_REMOVED)) == []
    data = path.read_bytes()
    assert len(data) % 512 == SHA_SIZE
    assert hashlib.sha256(data[:-SHA_SIZE]).digest() == data[-SHA_SIZE:]


def test_member_json_is_what_go_writes() -> None:
    m = s.EtcdMember(10, ("http://a:1",), "n<&>", ("http://c:2",), True)
    expected = b'{"id":10,"peerURLs":["http://a:1"],"isLearner":true,"name":"n\\u003c\\u0026\\u003e","clientURLs":["http://c:2"]}'
    assert s.encode_member(m) == expected
    assert s.decode_member(b"a", expected) == m
    assert s.encode_member(s.EtcdMember(0xABC, ())) == b'{"id":2748,"peerURLs":[]}'
    with pytest.raises(s.SchemaError, match="holds the record of member"):
        s.decode_member(b"b", expected)


def test_status_is_etcdctls(state: State, tmp_path: Path) -> None:
    path = snapshot_of(state, tmp_path / "snap.db")
    with open_snapshot(path) as snap:
        st = status(snap.db)
        h = 0
        total = 0
        for name, bucket in snap.db.root().buckets():
            h = crc32c.crc32c(name, h)
            for k, v in bucket:
                h = crc32c.crc32c(v, crc32c.crc32c(k, h))
                total += 1
        assert (st.hash, st.total_key, st.total_size) == (h, total, len(path.read_bytes()) - SHA_SIZE)
        assert st.revision == state.store.current_rev


# ---- restore ----


def restore_cfg(snapshot: Path, target: Path, **kw: object) -> RestoreConfig:
    return RestoreConfig(
        snapshot=snapshot,
        name="n2",
        data_dir=target,
        initial_cluster="n1=http://127.0.0.1:3001,n2=http://127.0.0.1:3002,n3=http://127.0.0.1:3003",
        initial_advertise_peer_urls="http://127.0.0.1:3002",
        **kw,  # type: ignore[arg-type]
    )


def test_restore_builds_a_member_of_a_new_cluster(state: State, tmp_path: Path) -> None:
    path = snapshot_of(state, tmp_path / "snap.db")
    target = tmp_path / "restored" / "n2.etcd"
    result = restore(restore_cfg(path, target))
    assert result.data_dir == target and result.revision == state.store.current_rev
    assert sorted(p.name for p in target.parent.iterdir()) == ["n2.etcd"]  # no temporary left
    restored = State.open(target / "member" / "db")
    try:
        assert restored.records(b"key") == state.records(b"key")
        assert restored.records(b"lease") == state.records(b"lease")
        assert restored.store.current_rev == state.store.current_rev
        assert restored.store.compact_main_rev == 20
        assert restored.lessor.lookup(0x7A) is not None
        assert restored.lessor.lease_of(b"key/001") == 0x7A and restored.lessor.lease_of(b"t/2") == -5
        members = {m.name: m for m in restored.applier.membership.members.values()}
        assert sorted(members) == ["n1", "n2", "n3"]
        assert members["n2"].peer_urls == ["http://127.0.0.1:3002"] and not members["n2"].client_urls
        assert restored.backend.consistent_index() == (3, 1)  # one applied entry per member, as etcd
        assert result.member_id == members["n2"].id
    finally:
        restored.close()
    wal, ws = WAL.open(target / "member" / "wal")
    wal.close()
    assert (ws.member_id, ws.cluster_id) == (result.member_id, result.cluster_id)
    assert (ws.snapshot_index, ws.snapshot_term, ws.commit) == (3, 1, 3)
    assert sorted(ws.snapshot_voters) == sorted(members[n].id for n in ("n1", "n2", "n3"))


def test_every_member_restored_from_one_file_is_identical(state: State, tmp_path: Path) -> None:
    path = snapshot_of(state, tmp_path / "snap.db")
    dumps = []
    for n in (1, 2, 3):
        cfg = restore_cfg(path, tmp_path / f"n{n}.etcd")
        cfg.name, cfg.initial_advertise_peer_urls = f"n{n}", f"http://127.0.0.1:300{n}"
        restore(cfg)
        st = State.open(tmp_path / f"n{n}.etcd" / "member" / "db")
        dumps.append((st.records(b"key"), st.records(b"lease"), st.records(b"members"), st.backend.consistent_index()))
        st.close()
    assert dumps[0] == dumps[1] == dumps[2]


def assert_refused(cfg: RestoreConfig, match: str) -> None:
    target = cfg.data_dir
    assert target is not None
    before = sorted(p.name for p in target.parent.iterdir()) if target.parent.exists() else []
    with pytest.raises(SnapshotError, match=match):
        restore(cfg)
    assert not target.exists()
    after = sorted(p.name for p in target.parent.iterdir()) if target.parent.exists() else []
    assert after == before, "a refused restore left something behind"


def test_a_truncated_snapshot_is_refused(state: State, tmp_path: Path) -> None:
    path = snapshot_of(state, tmp_path / "snap.db")
    data = path.read_bytes()
    cut = tmp_path / "cut.db"
    cut.write_bytes(data[: len(data) - 5000])
    assert_refused(restore_cfg(cut, tmp_path / "out" / "x.etcd"), "no sha256 at its end .* truncated")
    cut.write_bytes(data[: len(data) // 2 // 512 * 512 + SHA_SIZE])  # cut where a digest could be
    assert_refused(restore_cfg(cut, tmp_path / "out" / "x.etcd"), "is corrupt: the sha256 of its")
    assert_refused(restore_cfg(cut, tmp_path / "out" / "x.etcd", skip_hash_check=True), "truncated")
    cut.write_bytes(b"")
    assert_refused(restore_cfg(cut, tmp_path / "out" / "x.etcd"), "is empty")
    assert_refused(restore_cfg(tmp_path / "missing.db", tmp_path / "out" / "x.etcd"), "cannot open snapshot")


def test_a_corrupt_snapshot_is_refused(state: State, tmp_path: Path) -> None:
    path = snapshot_of(state, tmp_path / "snap.db")
    data = bytearray(path.read_bytes())
    data[5 * 4096 + 100] ^= 0x40  # a byte in a page
    bad = tmp_path / "bad.db"
    bad.write_bytes(bytes(data))
    assert_refused(restore_cfg(bad, tmp_path / "out" / "x.etcd"), "is corrupt: the sha256")


def write_with_sha(path: Path, buckets: list[tuple[bytes, Nested]]) -> Path:
    out = io.BytesIO()
    write_file(out, buckets)
    db = out.getvalue()
    path.write_bytes(db + hashlib.sha256(db).digest())
    return path


def test_damaged_pages_with_a_matching_sha_are_refused(tmp_path: Path) -> None:
    """A file whose digest matches (a snapshot of a damaged backend, or a forged digest) still has
    to pass bbolt's check and decode."""
    out = io.BytesIO()
    write_file(out, [(b"key", Nested([(rev_to_bytes(i, 0), b"x" * 100) for i in range(2, 200)]))])
    db = bytearray(out.getvalue())
    db[4 * 4096 : 4 * 4096 + 8] = (999).to_bytes(8, "little")  # a leaf's page id
    bad = tmp_path / "bad.db"
    bad.write_bytes(bytes(db) + hashlib.sha256(db).digest())
    assert_refused(restore_cfg(bad, tmp_path / "out" / "x.etcd"), "page header says it is page 999")


def test_records_that_do_not_decode_are_refused(tmp_path: Path) -> None:
    good = KeyValue(key=b"a", value=b"1", create_revision=2, mod_revision=2, version=1).SerializeToString()
    cases = [
        ([(b"key", Nested([(b"not-a-revision", good)]))], "key bucket record b'not-a-revision'"),
        ([(b"key", Nested([(rev_to_bytes(2, 0), b"\xff\xff")]))], "key bucket record"),
        (
            [(b"key", Nested([(rev_to_bytes(2, 0), good)])), (b"lease", Nested([(s.lease_key(1), b"\x08")]))],
            "not a leasepb.Lease",
        ),
        (
            [(b"key", Nested()), (b"meta", Nested([(s.FINISHED_COMPACT, b"\x00\x03")]))],
            "meta finishedCompactRev is 2 bytes",
        ),
        ([(b"meta", Nested())], "has no key bucket"),
        ([(b"authUsers", Nested([(b"u" * 600, b"x")])), (b"key", Nested())], "cannot store"),
    ]
    for n, (buckets, problem) in enumerate(cases):
        path = write_with_sha(tmp_path / f"bad{n}.db", buckets)
        assert_refused(restore_cfg(path, tmp_path / "out" / "x.etcd"), problem)


def test_authentication_travels_with_the_snapshot(tmp_path: Path) -> None:
    user = b"\n\x04root\x12\x04hash\x1a\x04root"
    for enabled in (b"\x01", b"\x00"):
        base = [(b"auth", Nested([(s.AUTH_ENABLED, enabled), (s.AUTH_REVISION, s.u64(3))]))]
        base += [(b"authRoles", Nested()), (b"authUsers", Nested([(b"root", user)])), (b"key", Nested())]
        path = write_with_sha(tmp_path / f"auth-{enabled.hex()}.db", base)
        out = tmp_path / "out" / f"{enabled.hex()}.etcd"
        restore(restore_cfg(path, out))
        st = State.open(out / "member" / "db")
        try:
            assert st.records(b"authUsers") == [(b"root", user)]
            auth = AuthStore(st.backend)
            assert (auth.enabled, auth.revision, auth.user_names()) == (enabled == b"\x01", 3, ["root"])
            assert auth.users["root"].roles == ["root"]
            # and they travel back out in the next snapshot, byte for byte
            write_snapshot(st.backend, tmp_path / f"again-{enabled.hex()}.db", VERSION)
        finally:
            st.close()
        with open_snapshot(tmp_path / f"again-{enabled.hex()}.db") as snap:
            assert list(snap.db.root().bucket(b"authUsers")) == [(b"root", user)]
            assert dict(snap.db.root().bucket(b"auth"))[s.AUTH_REVISION] == s.u64(3)


def test_auth_records_that_do_not_decode_are_refused(tmp_path: Path) -> None:
    base = [(b"authUsers", Nested([(b"root", b"\xff\xff")])), (b"key", Nested())]
    path = write_with_sha(tmp_path / "bad-user.db", base)
    assert_refused(restore_cfg(path, tmp_path / "out" / "x.etcd"), "does not hold a consistent store")


def test_restore_flags_are_checked_as_etcd_checks_them(state: State, tmp_path: Path) -> None:
    path = snapshot_of(state, tmp_path / "snap.db")
    cfg = restore_cfg(path, tmp_path / "out" / "x.etcd")
    cfg.name = "other"
    assert_refused(cfg, "no member named 'other'")
    cfg = restore_cfg(path, tmp_path / "out" / "x.etcd")
    cfg.initial_advertise_peer_urls = "http://127.0.0.1:9999"
    assert_refused(cfg, "must be the same URLs")
    cfg = restore_cfg(path, tmp_path / "out" / "x.etcd")
    cfg.initial_cluster = "n1=http://127.0.0.1:3002,n2=http://127.0.0.1:3002"
    assert_refused(cfg, "duplicate url")
    (tmp_path / "out" / "x.etcd").mkdir(parents=True)
    with pytest.raises(SnapshotError, match=r'data-dir ".*x.etcd" exists'):
        restore(restore_cfg(path, tmp_path / "out" / "x.etcd"))


def test_skip_hash_check_takes_a_data_directorys_db(state: State, tmp_path: Path) -> None:
    path = snapshot_of(state, tmp_path / "snap.db")
    bare = tmp_path / "bare.db"
    bare.write_bytes(path.read_bytes()[:-SHA_SIZE])
    assert_refused(restore_cfg(bare, tmp_path / "out" / "x.etcd"), "no sha256 at its end")
    result = restore(restore_cfg(bare, tmp_path / "out" / "x.etcd", skip_hash_check=True))
    assert result.revision == state.store.current_rev


# ---- the stream ----


def test_chunks_are_what_etcd_sends(state: State, tmp_path: Path) -> None:
    path = snapshot_of(state, tmp_path / "snap.db")
    data = path.read_bytes()
    chunks = list(maintenance.snapshot_chunks(path, chunk_size=4096))
    db_size = len(data) - SHA_SIZE
    assert all(len(blob) == 4096 for blob, _ in chunks[:-1])
    assert [remaining for _, remaining in chunks[:-1]] == list(range(db_size - 4096, -1, -4096))
    assert chunks[-1] == (data[-SHA_SIZE:], 0)
    assert b"".join(blob for blob, _ in chunks) == data


def test_save_stream_verifies_before_renaming(state: State, tmp_path: Path) -> None:
    path = snapshot_of(state, tmp_path / "snap.db")
    blobs = [blob for blob, _ in maintenance.snapshot_chunks(path)]
    out = tmp_path / "saved.db"
    assert save_stream(iter(blobs), out) == len(path.read_bytes())
    assert out.read_bytes() == path.read_bytes()
    with pytest.raises(SnapshotError, match="sha256 checksum not found"):
        save_stream(iter(blobs[:-1]), tmp_path / "short.db")
    assert not (tmp_path / "short.db").exists() and not (tmp_path / "short.db.part").exists()

    def broken():
        yield blobs[0]
        raise OSError("stream broke")

    with pytest.raises(OSError, match="stream broke"):
        save_stream(broken(), tmp_path / "broken.db")
    assert not list(tmp_path.glob("broken.db*"))


# ---- Hash and HashKV ----


def test_hash_leaves_out_consistent_index_and_term(tmp_path: Path) -> None:
    a, b = State.open(tmp_path / "a"), State.open(tmp_path / "b")
    try:
        for st in (a, b):
            st.put(b"k", b"v")
        b.index += 10  # the same state at other log positions
        b.put(b"k2", b"v2")
        a.index += 3
        a.put(b"k2", b"v2")
        assert a.backend.consistent_index() != b.backend.consistent_index()
        ha = asyncio.run(maintenance.hash_backend(a, VERSION))
        hb = asyncio.run(maintenance.hash_backend(b, VERSION))
        assert ha == hb and ha[1] == 3
        a.put(b"k3", b"v3")
        assert asyncio.run(maintenance.hash_backend(a, VERSION))[0] != hb[0]
    finally:
        a.close()
        b.close()


def test_hash_is_the_crc_of_the_snapshots_buckets(state: State, tmp_path: Path) -> None:
    path = snapshot_of(state, tmp_path / "snap.db")
    h = 0
    with open_snapshot(path) as snap:
        for name, bucket in snap.db.root().buckets():
            h = crc32c.crc32c(name, h)
            for k, v in bucket:
                if (name, k) not in s.HASH_IGNORES:
                    h = crc32c.crc32c(v, crc32c.crc32c(k, h))
    assert asyncio.run(maintenance.hash_backend(state, VERSION)) == (h, state.store.current_rev)


def ref_hash_kv(records: list[tuple[bytes, bytes]], rev: int, compact: int, keep: set) -> int:
    h = crc32c.crc32c(b"key")
    for k, v in records:
        main, sub = int.from_bytes(k[:8], "big"), int.from_bytes(k[9:17], "big")
        if main > rev:
            continue
        if keep and main <= compact and (main, sub) not in keep:
            continue
        h = crc32c.crc32c(v, crc32c.crc32c(k, h))
    return h


def test_hash_kv_filters_compacted_history_as_etcd_does(state: State) -> None:
    records = state.records(b"key")
    current = state.store.current_rev
    for rev in (0, 21, 30, current):
        keep = hashing.etcd_keep(state.store.index, rev or current)
        got = asyncio.run(maintenance.hash_kv(state, rev))
        assert got == (ref_hash_kv(records, rev or current, 20, keep), current, 20)
    with pytest.raises(CompactedError):
        asyncio.run(maintenance.hash_kv(state, 20))
    with pytest.raises(CompactedError):
        asyncio.run(maintenance.hash_kv(state, 3))
    with pytest.raises(FutureRevError):
        asyncio.run(maintenance.hash_kv(state, current + 1))
    assert not state.lock.held


def test_hash_kv_of_a_store_never_compacted(tmp_path: Path) -> None:
    st = State.open(tmp_path / "db")
    try:
        assert asyncio.run(maintenance.hash_kv(st, 0)) == (crc32c.crc32c(b"key"), 1, -1)
        st.put(b"a", b"1")
        st.delete(b"a")
        h = crc32c.crc32c(b"key")
        for k, v in st.records(b"key"):
            h = crc32c.crc32c(v, crc32c.crc32c(k, h))
        assert asyncio.run(maintenance.hash_kv(st, 0)) == (h, 3, -1)
    finally:
        st.close()


def index_of(ops: list[tuple[str, bytes, int]]) -> TreeIndex:
    index = TreeIndex()
    for op, key, main in ops:
        (index.put if op == "put" else index.tombstone)(key, (main, 0))
    return index


def test_etcd_keep_is_etcd_34s_key_index_keep() -> None:
    """The example of etcd's key_index.go: put(1) put(2) delete(3) put(4) delete(5) on foo; bar alive."""
    index = index_of(
        [
            ("put", b"foo", 1),
            ("put", b"foo", 2),
            ("del", b"foo", 3),
            ("put", b"foo", 4),
            ("del", b"foo", 5),
            ("put", b"bar", 6),
            ("put", b"bar", 8),
        ]
    )
    expected = {
        1: {(1, 0)},
        2: {(2, 0)},
        3: set(),  # deleted at 3: a tombstone is never kept
        4: {(4, 0)},
        5: set(),
        6: {(6, 0)},
        7: {(6, 0)},
        8: {(8, 0)},
        100: {(8, 0)},
    }
    for at, keep in expected.items():
        assert hashing.etcd_keep(index, at) == keep, at


def test_a_tombstone_kept_at_the_compaction_revision_is_left_out_of_hash_kv(tmp_path: Path) -> None:
    """raftkv keeps a deletion made at the compaction revision (etcd-io/etcd#18089); etcd 3.4.23
    removes it. HashKV's keep filter leaves it out, so the hashes agree, unless nothing is kept."""
    st = State.open(tmp_path / "db")
    try:
        st.put(b"a", b"1")  # 2
        st.put(b"b", b"2")  # 3
        st.delete(b"a")  # 4: the tombstone
        st.compact(4)
        stored = [k for k, _ in st.records(b"key")]
        assert tombstone_to_bytes(4, 0) in stored  # raftkv kept it
        # what etcd 3.4.23 stores after the same compaction: b's put only
        etcd_records = [(k, v) for k, v in st.records(b"key") if k == rev_to_bytes(3, 0)]
        h = asyncio.run(maintenance.hash_kv(st, 0))[0]
        assert h == ref_hash_kv(etcd_records, 4, 4, {(3, 0)})
        st.delete(b"b")  # 5: nothing alive: etcd skips the filter, and the stored tombstone counts
        h = asyncio.run(maintenance.hash_kv(st, 0))[0]
        etcd_records = [(k, v) for k, v in st.records(b"key") if k != tombstone_to_bytes(4, 0)]
        assert h == ref_hash_kv(st.records(b"key"), 5, 4, set())
        assert h != ref_hash_kv(etcd_records, 5, 4, set())
    finally:
        st.close()


def test_lease_records_round_trip_the_encodings() -> None:
    for lease_id, ttl, rem in ((1, 10, 0), (-1, 5, 3), (2**62, 9_000_000_000, 1)):
        raw = s.encode_lease(lease_id, ttl, rem)
        assert s.decode_lease(s.lease_key(lease_id), raw) == (lease_id, ttl, rem)
    assert msgpack.unpackb(msgpack.packb((1, 2, 3))) == [1, 2, 3]
    with pytest.raises(s.SchemaError, match="holds the record of lease"):
        s.decode_lease(s.lease_key(2), s.encode_lease(1, 1, 0))


def test_a_bolt_file_view_is_closed_with_its_map(state: State, tmp_path: Path) -> None:
    path = snapshot_of(state, tmp_path / "snap.db")
    snap = open_snapshot(path)
    mapped = snap.db._map
    assert mapped is not None
    list(snap.db.root().bucket(b"key"))
    snap.close()
    assert mapped.closed
    with BoltFile.open(path) as db:
        assert db.size() == len(path.read_bytes()) - SHA_SIZE
