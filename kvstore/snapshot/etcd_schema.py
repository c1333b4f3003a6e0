"""etcd's backend schema: its bucket names and how etcd encodes what each bucket holds.

What raftkv's LMDB backend and etcd's bbolt backend share byte for byte, and what differs:

- ``key``: revision (main, ``_``, sub; ``t`` for a tombstone) -> ``mvccpb.KeyValue``; the same
  bytes in both.
- ``meta``: etcd keeps ``consistent_index`` and ``term`` as u64 big-endian and
  ``scheduledCompactRev`` / ``finishedCompactRev`` as a 17-byte revision; raftkv all four as u64.
- ``lease``: lease id (int64 big-endian) -> ``leasepb.Lease``; raftkv: the same key -> msgpack
  (id, ttl, remaining ttl).
- ``members``: member id in hex (no padding) -> JSON ``{"id", "peerURLs", "isLearner", "name",
  "clientURLs"}``; raftkv: u64 id -> msgpack. ``members_removed``: hex id -> ``removed``; the
  same bytes in both.
- ``cluster``: ``clusterVersion`` -> e.g. ``3.5.0`` (raftkv does not keep it; exports make it).
- ``alarm``: a serialized ``etcdserverpb.AlarmMember`` -> empty; the same bytes in both.
- ``auth``, ``authUsers``, ``authRoles``: ``authEnabled``, ``authRevision``; name -> ``authpb.User``
  / ``authpb.Role``; the same bytes in both.

Everything here is pure encoding: no I/O, no knowledge of either file format.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from kvstore.mvcc.revision import REV_BYTES_LEN, bytes_to_rev, rev_to_bytes
from proto.leasepb.lease_pb2 import Lease as LeasePb

KEY = b"key"
META = b"meta"
LEASE = b"lease"
MEMBERS = b"members"
MEMBERS_REMOVED = b"members_removed"
CLUSTER = b"cluster"
ALARM = b"alarm"
AUTH = b"auth"
AUTH_USERS = b"authUsers"
AUTH_ROLES = b"authRoles"

# every bucket an etcd 3.4/3.5 backend has, in bbolt's (byte) order
BUCKETS = tuple(sorted((KEY, META, LEASE, MEMBERS, MEMBERS_REMOVED, CLUSTER, ALARM, AUTH, AUTH_USERS, AUTH_ROLES)))

CONSISTENT_INDEX = b"consistent_index"
TERM = b"term"
SCHEDULED_COMPACT = b"scheduledCompactRev"
FINISHED_COMPACT = b"finishedCompactRev"
CLUSTER_VERSION = b"clusterVersion"
AUTH_ENABLED = b"authEnabled"
AUTH_REVISION = b"authRevision"
AUTH_ENABLED_VALUE = b"\x01"

# what etcd's Hash leaves out: values that differ between members for reasons no client controls
HASH_IGNORES = frozenset({(META, CONSISTENT_INDEX), (META, TERM)})

_U64 = struct.Struct(">Q")


class SchemaError(ValueError):
    """A value that does not have etcd's encoding for its bucket and key."""


def u64(value: int) -> bytes:
    return _U64.pack(value)


def from_u64(data: bytes, what: str) -> int:
    if len(data) != 8:
        raise SchemaError(f"{what} is {len(data)} bytes, not an 8-byte integer")
    return _U64.unpack(data)[0]


def compact_rev_bytes(main: int) -> bytes:
    """A compaction revision as etcd stores it in meta: a whole revision (main, sub 0)."""
    return rev_to_bytes(main, 0)


def compact_rev_from_bytes(data: bytes, what: str) -> int:
    if len(data) != REV_BYTES_LEN:
        raise SchemaError(f"{what} is {len(data)} bytes, not a {REV_BYTES_LEN}-byte revision")
    try:
        main, _, tombstone = bytes_to_rev(data)
    except ValueError as exc:
        raise SchemaError(f"{what}: {exc}") from exc
    if tombstone:
        raise SchemaError(f"{what} is marked as a tombstone")
    return main


def cluster_version(server_version: str) -> bytes:
    """The cluster version etcd records for a server version: major.minor.0."""
    major, minor = server_version.split(".")[:2]
    return f"{major}.{minor}.0".encode()


# ---- members ----


@dataclass(frozen=True, slots=True)
class EtcdMember:
    id: int
    peer_urls: tuple[str, ...]
    name: str = ""
    client_urls: tuple[str, ...] = ()
    is_learner: bool = False


def member_key(member_id: int) -> bytes:
    """etcd's types.ID.String(): lower-case hex without padding."""
    return f"{member_id:x}".encode()


def encode_member(m: EtcdMember) -> bytes:
    """The JSON Go's encoding/json writes for etcd's membership.Member (fields in struct order,
    ``isLearner``, ``name`` and ``clientURLs`` omitted when empty)."""
    fields: dict[str, object] = {"id": m.id, "peerURLs": list(m.peer_urls)}
    if m.is_learner:
        fields["isLearner"] = True
    if m.name:
        fields["name"] = m.name
    if m.client_urls:
        fields["clientURLs"] = list(m.client_urls)
    return _go_json(fields)


def decode_member(key: bytes, value: bytes) -> EtcdMember:
    try:
        raw = json.loads(value)
        member = EtcdMember(
            int(raw["id"]),
            tuple(raw.get("peerURLs") or ()),
            str(raw.get("name", "")),
            tuple(raw.get("clientURLs") or ()),
            bool(raw.get("isLearner", False)),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise SchemaError(f"member {key!r}: not etcd's member JSON: {exc}") from exc
    if member_key(member.id) != key:
        raise SchemaError(f"member {key!r} holds the record of member {member.id:x}")
    return member


def _go_json(value: object) -> bytes:
    """json.dumps as Go's encoding/json: compact, UTF-8, with <, > and & escaped."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return text.encode()


# ---- leases ----


def lease_key(lease_id: int) -> bytes:
    """etcd's int64ToBytes: the id as 8 big-endian bytes, two's complement."""
    return struct.pack(">q", lease_id)


def encode_lease(lease_id: int, ttl: int, remaining_ttl: int) -> bytes:
    return LeasePb(ID=lease_id, TTL=ttl, RemainingTTL=remaining_ttl).SerializeToString()


def decode_lease(key: bytes, value: bytes) -> tuple[int, int, int]:
    """(id, ttl, remaining ttl) of a lease record."""
    try:
        lease = LeasePb.FromString(value)
    except DecodeError as exc:
        raise SchemaError(f"lease {key.hex()}: not a leasepb.Lease: {exc}") from exc
    if lease_key(lease.ID) != key:
        raise SchemaError(f"lease {key.hex()} holds the record of lease {lease.ID:x}")
    return lease.ID, lease.TTL, lease.RemainingTTL
