"""A new raftkv data directory from a snapshot in etcd's format (taken from raftkv or from etcd).

As ``etcdctl snapshot restore`` / ``etcdutl snapshot restore`` do, and with their flags: the
snapshot is verified (sha256, bbolt's integrity check, every record decoded), then a fresh data
directory is built for one member of a *new* cluster described by ``--initial-cluster``: the
keys with their whole stored history and revisions, the compaction revisions, the leases, the
alarms and the auth buckets come from the snapshot; the membership is the new cluster's, and the
log starts over: the backend says the first ``len(members)`` entries are applied (etcd's restore
does the same) and the WAL holds a snapshot mark there with the members as voters, so every
member restored from the same file starts from the same state.

Nothing is half-written: the directory is built under a temporary name beside the target and
renamed into place only when complete and synced; on any error it is removed and the target
never exists. A target that already exists is refused, as etcd refuses it.

Users, roles, permissions and whether authentication is enabled come with the snapshot byte for
byte (etcd's ``authpb`` records, bcrypt hashes included), so a cluster restored from a snapshot of
a cluster with authentication enabled enforces the same access control from its first request.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import lmdb
from google.protobuf.message import DecodeError

from kvstore import config
from kvstore.auth import AuthStore
from kvstore.bbolt import BboltError, Bucket
from kvstore.config import ServerConfig
from kvstore.errors import StartupError
from kvstore.lease import Lease, Lessor
from kvstore.membership import MemberInfo
from kvstore.mvcc import Backend, KVStore
from kvstore.mvcc.backend import Txn, u64
from kvstore.mvcc.revision import bytes_to_rev
from kvstore.snapshot import etcd_schema as s
from kvstore.snapshot.errors import SnapshotError
from kvstore.snapshot.snapshot_file import Snapshot, open_snapshot
from proto.mvccpb.kv_pb2 import KeyValue
from raft.wal import WAL

RESTORED_TERM = 1
# buckets of etcd's that the new cluster does not take over: it has its own members and version
NOT_CARRIED = {s.MEMBERS, s.MEMBERS_REMOVED, s.CLUSTER}
COPIED_AS_IS = (s.ALARM, s.AUTH, s.AUTH_USERS, s.AUTH_ROLES)


@dataclass
class RestoreConfig:
    """etcdctl snapshot restore's flags, with its defaults."""

    snapshot: Path
    name: str = "default"
    data_dir: Path | None = None  # default: <name>.etcd
    initial_cluster: str = "default=http://localhost:2380"
    initial_cluster_token: str = "etcd-cluster"
    initial_advertise_peer_urls: str = "http://localhost:2380"
    skip_hash_check: bool = False


@dataclass
class RestoreResult:
    data_dir: Path
    member_id: int
    cluster_id: int
    revision: int
    keys: int  # stored revisions (the key bucket's records)
    leases: int
    skipped_buckets: list[bytes] = field(default_factory=list)  # unknown to etcd 3.4/3.5, not carried


def server_config(cfg: RestoreConfig) -> ServerConfig:
    """The configuration the restored member will be started with (its ids are derived from it)."""
    data_dir = cfg.data_dir if cfg.data_dir is not None else Path(f"{cfg.name}.etcd")
    flags = argparse.Namespace(
        name=cfg.name,
        data_dir=str(data_dir),
        initial_cluster=cfg.initial_cluster,
        initial_cluster_token=cfg.initial_cluster_token,
        initial_advertise_peer_urls=cfg.initial_advertise_peer_urls,
    )
    try:
        server = config.from_args(flags, environ={})
        for _name, urls in server.initial_cluster.items():
            for url in urls:
                config.peer_address(url)
    except StartupError as exc:
        raise SnapshotError(str(exc)) from exc
    mine = sorted(server.initial_cluster[cfg.name])
    if mine != sorted(server.initial_advertise_peer_urls):
        raise SnapshotError(
            f"--initial-cluster has {cfg.name}={','.join(mine)} but --initial-advertise-peer-urls is "
            f"{','.join(sorted(server.initial_advertise_peer_urls))}: they must be the same URLs"
        )
    urls = [u for member_urls in server.initial_cluster.values() for u in member_urls]
    if len(urls) != len(set(urls)):
        raise SnapshotError(f"initial cluster {cfg.initial_cluster} has duplicate url")
    return server


def restore(cfg: RestoreConfig) -> RestoreResult:
    """Builds the data directory; raises SnapshotError naming the problem (and leaves nothing)."""
    server = server_config(cfg)
    target = server.data_dir
    if target.exists():
        raise SnapshotError(f'data-dir "{target}" exists')
    with open_snapshot(cfg.snapshot, cfg.skip_hash_check) as snap:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.restore-", dir=target.parent))
        try:
            result = _build(snap, server, tmp)
            _sync_tree(tmp)
            if target.exists():
                raise SnapshotError(f'data-dir "{target}" exists')
            os.rename(tmp, target)
            _fsync_dir(target.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    result.data_dir = target
    return result


def _bucket(snap: Snapshot, name: bytes) -> Bucket | None:
    try:
        return snap.db.root().bucket(name)
    except BboltError as exc:
        raise SnapshotError(f"snapshot {snap.path} is damaged: {exc}") from exc


def _records(snap: Snapshot, name: bytes) -> Iterator[tuple[bytes, bytes]]:
    bucket = _bucket(snap, name)
    if bucket is None:
        return
    try:
        yield from bucket
    except BboltError as exc:
        raise SnapshotError(f"snapshot {snap.path} is damaged: {exc}") from exc


def _build(snap: Snapshot, server: ServerConfig, tmp: Path) -> RestoreResult:
    member_dir = tmp / "member"
    members = server.members
    applied = len(members)
    skipped = []
    try:
        for name, _ in snap.db.root().buckets():
            if name not in s.BUCKETS:
                skipped.append(name)
    except BboltError as exc:
        raise SnapshotError(f"snapshot {snap.path} is damaged: {exc}") from exc
    if _bucket(snap, s.KEY) is None:
        raise SnapshotError(f"snapshot {snap.path} has no key bucket: it is not a snapshot of etcd's backend")
    backend = Backend(member_dir / "db")
    try:
        keys = leases = 0
        with _lmdb_errors(snap), backend.begin_write() as txn:
            keys = _import_keys(snap, backend, txn)
            leases = _import_leases(snap, backend, txn)
            _import_meta(snap, backend, txn)
            for name in COPIED_AS_IS:
                for key, value in _records(snap, name):
                    txn.put(key, value, db=backend.dbs[name])
            for member_id, (name, peer_urls) in sorted(members.items()):
                info = MemberInfo(member_id, name, list(peer_urls))
                txn.put(u64(member_id), info.encode(), db=backend.dbs[s.MEMBERS])
            backend.put_meta(txn, s.CONSISTENT_INDEX, applied)
            backend.put_meta(txn, s.TERM, RESTORED_TERM)
        revision = _verify_opens(backend, snap)
    finally:
        backend.close()
    with contextlib.suppress(FileNotFoundError):
        (member_dir / "db" / "lock.mdb").unlink()
    wal = WAL.create(member_dir / "wal", server.member_id, server.cluster_id)
    try:
        wal.save_snapshot_mark(applied, RESTORED_TERM, sorted(members), ())
        wal.save((), (RESTORED_TERM, 0, applied), True)
    finally:
        wal.close()
    return RestoreResult(tmp, server.member_id, server.cluster_id, revision, keys, leases, skipped)


@contextlib.contextmanager
def _lmdb_errors(snap: Snapshot) -> Iterator[None]:
    try:
        yield
    except lmdb.Error as exc:  # e.g. a user or role name longer than LMDB's 511-byte keys
        raise SnapshotError(f"snapshot {snap.path} holds a record raftkv's backend cannot store: {exc}") from exc


def _import_keys(snap: Snapshot, backend: Backend, txn: Txn) -> int:
    n = 0
    for key, value in _records(snap, s.KEY):
        try:
            bytes_to_rev(key)
            kv = KeyValue.FromString(value)
        except (ValueError, DecodeError) as exc:
            raise SnapshotError(f"snapshot {snap.path} is corrupt: key bucket record {key!r}: {exc}") from exc
        if not kv.key:
            raise SnapshotError(f"snapshot {snap.path} is corrupt: key bucket record {key!r} has no key")
        txn.put(key, value, db=backend.key_db, append=True)
        n += 1
    return n


def _import_leases(snap: Snapshot, backend: Backend, txn: Txn) -> int:
    n = 0
    for key, value in _records(snap, s.LEASE):
        try:
            lease_id, ttl, remaining_ttl = s.decode_lease(key, value)
        except s.SchemaError as exc:
            raise SnapshotError(f"snapshot {snap.path} is corrupt: {exc}") from exc
        txn.put(key, Lease(lease_id, ttl, remaining_ttl).encode(), db=backend.dbs[s.LEASE])
        n += 1
    return n


def _import_meta(snap: Snapshot, backend: Backend, txn: Txn) -> None:
    for key, value in _records(snap, s.META):
        if key in (s.SCHEDULED_COMPACT, s.FINISHED_COMPACT):
            try:
                backend.put_meta(txn, key, s.compact_rev_from_bytes(value, f"meta {key.decode()}"))
            except s.SchemaError as exc:
                raise SnapshotError(f"snapshot {snap.path} is corrupt: {exc}") from exc


def _verify_opens(backend: Backend, snap: Snapshot) -> int:
    """Opens the restored state as a member will (every record decoded, the index rebuilt)."""
    try:
        lessor = Lessor(backend)
        store = KVStore(backend, leases=lessor)
        AuthStore(backend)  # every user and role decodes
    except (StartupError, AssertionError, DecodeError, UnicodeDecodeError) as exc:
        raise SnapshotError(f"snapshot {snap.path} does not hold a consistent store: {exc}") from exc
    return store.current_rev


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(Path(dirpath) / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))
