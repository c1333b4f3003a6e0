"""raftkv's backend seen as etcd's: every etcd bucket with etcd's encodings, from one read transaction.

``etcd_buckets`` yields the buckets lazily, in bbolt's order, each as the sorted ``(key, value)``
pairs etcd would hold for the same state. The bbolt writer streams them into a file (the
snapshot); ``Hash`` streams them into a checksum. Both see one LMDB read transaction, so a
snapshot is a consistent copy however long it takes to write, while the member keeps applying.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgpack

from kvstore.bbolt import Nested
from kvstore.membership import MemberInfo
from kvstore.mvcc.backend import Backend, Txn, from_u64
from kvstore.snapshot import etcd_schema as s

Pairs = Iterator[tuple[bytes, bytes]]


def _raw(backend: Backend, txn: Txn, name: bytes) -> Pairs:
    db = backend.dbs.get(name)
    if db is None:
        return
    yield from txn.cursor(db=db).iternext()


def _meta(backend: Backend, txn: Txn) -> Pairs:
    pairs: list[tuple[bytes, bytes]] = []
    for name in (s.CONSISTENT_INDEX, s.TERM):
        if txn.get(name, db=backend.meta_db) is not None:
            pairs.append((name, s.u64(backend.get_meta(txn, name))))
    for name in (s.SCHEDULED_COMPACT, s.FINISHED_COMPACT):
        if txn.get(name, db=backend.meta_db) is not None:
            pairs.append((name, s.compact_rev_bytes(backend.get_meta(txn, name))))
    yield from sorted(pairs)


def _leases(backend: Backend, txn: Txn) -> Pairs:
    for key, raw in txn.cursor(db=backend.dbs[s.LEASE]).iternext():
        lease_id, ttl, remaining_ttl = msgpack.unpackb(raw)
        yield key, s.encode_lease(lease_id, ttl, remaining_ttl)


def _members(backend: Backend, txn: Txn) -> Pairs:
    pairs = []
    for key, raw in txn.cursor(db=backend.dbs[s.MEMBERS]).iternext():
        info = MemberInfo.decode(from_u64(key), raw)
        member = s.EtcdMember(info.id, tuple(info.peer_urls), info.name, tuple(info.client_urls), info.is_learner)
        pairs.append((s.member_key(info.id), s.encode_member(member)))
    yield from sorted(pairs)  # etcd's keys are hex strings: their order is not the ids' order


def _bucket(backend: Backend, txn: Txn, name: bytes, server_version: str) -> Pairs:
    if name == s.META:
        return _meta(backend, txn)
    if name == s.LEASE:
        return _leases(backend, txn)
    if name == s.MEMBERS:
        return _members(backend, txn)
    if name == s.CLUSTER:
        return iter([(s.CLUSTER_VERSION, s.cluster_version(server_version))])
    return _raw(backend, txn, name)  # key, members_removed, alarm, auth*: the same bytes


def etcd_buckets(backend: Backend, txn: Txn, server_version: str) -> Iterator[tuple[bytes, Pairs]]:
    """(bucket name, its pairs) for every etcd bucket, in bbolt's order; read lazily from txn."""
    for name in s.BUCKETS:
        yield name, _bucket(backend, txn, name, server_version)


def etcd_tree(backend: Backend, txn: Txn, server_version: str) -> Iterator[tuple[bytes, Nested]]:
    """The same buckets in the form the bbolt writer takes."""
    for name, pairs in etcd_buckets(backend, txn, server_version):
        yield name, Nested(pairs)
