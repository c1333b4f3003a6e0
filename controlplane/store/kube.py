"""The storage contract Kubernetes relies on: KEP-4743's interface for etcd, as kube-apiserver sends it.

These are the only requests the control plane's store makes of etcd (``controlplane.store.etcd``),
and the contract tests run them against real etcd and raftkv side by side:

- ``get``: a Range of one key, limit 1, at a revision (0: the latest); below the compacted
  revision it fails with ``etcdserver: mvcc: required revision has been compacted``.
- ``list``: a Range from the prefix (or the continue key) to the prefix's end, with a limit and a
  revision; ``count`` is the number of keys from the start key to the end, even when the limit cut
  the page, and ``more`` says whether it did. The next page starts at the last key + ``\\0``, at
  the revision of the first page (``next_key``).
- ``count``: a prefix Range with count_only.
- ``optimistic_put`` / ``optimistic_delete``: a single-key Txn comparing the key's mod_revision
  with the expected one (0: the key does not exist, which is how a create is made), with an
  optional Get of the key when the comparison fails.
- ``watch_request``: a prefix (or key) Watch from a revision with prev_kv and progress_notify;
  the stream carries the ``hasleader`` metadata (``REQUIRE_LEADER``, clientv3.WithRequireLeader),
  so a member that loses its leader ends it with ``etcdserver: no leader``. ``PROGRESS_REQUEST``
  asks the stream for a progress notification (etcd answers once its watchers are synced).
- ``health``: kube-apiserver's health check, a Range of ``/registry/health`` (which never exists).
- ``Compactor``: kube-apiserver's compaction loop: a Txn on ``compact_rev_key`` comparing its
  version with the last one this compactor saw, putting the revision to compact; only the
  apiserver whose Txn won compacts (and Kubernetes watches that key to learn of compactions).
- ``supports_request_progress``: the version check kube-apiserver makes of Maintenance.Status
  before it relies on RequestProgress (the consistent-reads-from-cache feature): etcd ≥ 3.5.13,
  or ≥ 3.4.31 on the 3.4 line (earlier releases answered progress requests too early).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proto.etcdserverpb import rpc_pb2 as pb
from proto.mvccpb import kv_pb2

REQUIRE_LEADER = (("hasleader", "true"),)  # clientv3.WithRequireLeader's metadata
PROGRESS_REQUEST = pb.WatchRequest(progress_request=pb.WatchProgressRequest())
HEALTH_KEY = b"/registry/health"
COMPACT_REV_KEY = b"compact_rev_key"


def prefix_end(prefix: bytes) -> bytes:
    """clientv3.GetPrefixRangeEnd: the prefix with its last byte below 0xff incremented; ``\\0`` if none."""
    for i in range(len(prefix) - 1, -1, -1):
        if prefix[i] < 0xFF:
            return prefix[:i] + bytes([prefix[i] + 1])
    return b"\x00"


@dataclass(frozen=True)
class GetResponse:
    kv: kv_pb2.KeyValue | None
    revision: int


@dataclass(frozen=True)
class ListResponse:
    kvs: list[kv_pb2.KeyValue]
    count: int
    revision: int
    more: bool

    def next_key(self) -> bytes:
        """Where the next page starts (kube's continue token): just after the last key of this one."""
        return self.kvs[-1].key + b"\x00"


@dataclass(frozen=True)
class WriteResponse:
    succeeded: bool
    revision: int
    kv: kv_pb2.KeyValue | None = None  # on failure with get_on_failure: the key as it is (None if absent)


# ---- requests ----


def get_request(key: bytes, revision: int = 0) -> pb.RangeRequest:
    return pb.RangeRequest(key=key, revision=revision, limit=1)


def list_request(prefix: bytes, limit: int = 0, revision: int = 0, continue_key: bytes = b"") -> pb.RangeRequest:
    return pb.RangeRequest(key=continue_key or prefix, range_end=prefix_end(prefix), limit=limit, revision=revision)


def count_request(prefix: bytes) -> pb.RangeRequest:
    return pb.RangeRequest(key=prefix, range_end=prefix_end(prefix), count_only=True)


def optimistic_put_request(
    key: bytes, value: bytes, expected_revision: int, lease: int = 0, get_on_failure: bool = False
) -> pb.TxnRequest:
    return pb.TxnRequest(
        compare=[_mod_is(key, expected_revision)],
        success=[pb.RequestOp(request_put=pb.PutRequest(key=key, value=value, lease=lease))],
        failure=[pb.RequestOp(request_range=pb.RangeRequest(key=key))] if get_on_failure else [],
    )


def optimistic_delete_request(key: bytes, expected_revision: int, get_on_failure: bool = False) -> pb.TxnRequest:
    return pb.TxnRequest(
        compare=[_mod_is(key, expected_revision)],
        success=[pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=key))],
        failure=[pb.RequestOp(request_range=pb.RangeRequest(key=key))] if get_on_failure else [],
    )


def _mod_is(key: bytes, revision: int) -> pb.Compare:
    return pb.Compare(key=key, target=pb.Compare.MOD, result=pb.Compare.EQUAL, mod_revision=revision)


def _version_is(key: bytes, version: int) -> pb.Compare:
    return pb.Compare(key=key, target=pb.Compare.VERSION, result=pb.Compare.EQUAL, version=version)


def watch_request(prefix: bytes, start_revision: int, *, exact: bool = False) -> pb.WatchRequest:
    """kube's watch of a prefix (or, exact, of one key) from start_revision with prev_kv and progress notify."""
    return pb.WatchRequest(
        create_request=pb.WatchCreateRequest(
            key=prefix,
            range_end=b"" if exact else prefix_end(prefix),
            start_revision=start_revision,
            prev_kv=True,
            progress_notify=True,
        )
    )


def health_request() -> pb.RangeRequest:
    return pb.RangeRequest(key=HEALTH_KEY)


# ---- answers ----


def get_response(resp: pb.RangeResponse) -> GetResponse:
    return GetResponse(resp.kvs[0] if resp.kvs else None, resp.header.revision)


def list_response(resp: pb.RangeResponse) -> ListResponse:
    return ListResponse(list(resp.kvs), resp.count, resp.header.revision, resp.more)


def write_response(resp: pb.TxnResponse, get_on_failure: bool) -> WriteResponse:
    kv = None
    if get_on_failure and not resp.succeeded:
        if not resp.responses:
            raise ValueError(f"invalid optimistic write response: {resp}")
        kvs = resp.responses[0].response_range.kvs
        kv = kvs[0] if kvs else None
    return WriteResponse(resp.succeeded, resp.header.revision, kv)


# ---- a client over etcd's stubs ----


class KubernetesClient:
    """KEP-4743's Get, List, Count, OptimisticPut and OptimisticDelete over KV stubs (sync gRPC)."""

    def __init__(self, kv: Any, timeout: float = 5.0) -> None:
        self.kv = kv
        self.timeout = timeout

    def get(self, key: bytes, revision: int = 0, timeout: float | None = None) -> GetResponse:
        return get_response(self.kv.Range(get_request(key, revision), timeout=timeout or self.timeout))

    def list(self, prefix: bytes, limit: int = 0, revision: int = 0, continue_key: bytes = b"") -> ListResponse:
        return list_response(self.kv.Range(list_request(prefix, limit, revision, continue_key), timeout=self.timeout))

    def count(self, prefix: bytes) -> int:
        return self.kv.Range(count_request(prefix), timeout=self.timeout).count

    def optimistic_put(
        self, key: bytes, value: bytes, expected_revision: int, lease: int = 0, get_on_failure: bool = False
    ) -> WriteResponse:
        req = optimistic_put_request(key, value, expected_revision, lease, get_on_failure)
        return write_response(self.kv.Txn(req, timeout=self.timeout), get_on_failure)

    def optimistic_delete(self, key: bytes, expected_revision: int, get_on_failure: bool = False) -> WriteResponse:
        req = optimistic_delete_request(key, expected_revision, get_on_failure)
        return write_response(self.kv.Txn(req, timeout=self.timeout), get_on_failure)

    def health(self) -> None:
        """Raises what the store answers, like kube-apiserver's etcd health check."""
        self.kv.Range(health_request(), timeout=self.timeout)


@dataclass
class Compactor:
    """kube-apiserver's compaction step (storage/etcd3/compact.go), one per apiserver.

    ``step(kv, rev)`` puts rev on ``compact_rev_key`` if the key's version is still the one this
    compactor last saw (``version``), then compacts at rev (not at rev 0, the bootstrap). If another
    compactor got there first, it only learns the key's version and compacts nothing. Returns
    whether it compacted.
    """

    version: int = 0
    revision: int = 0  # the store revision of the last step
    compacted: list[int] = field(default_factory=list)

    def txn(self, rev: int) -> pb.TxnRequest:
        return pb.TxnRequest(
            compare=[
                pb.Compare(
                    key=COMPACT_REV_KEY, target=pb.Compare.VERSION, result=pb.Compare.EQUAL, version=self.version
                )
            ],
            success=[pb.RequestOp(request_put=pb.PutRequest(key=COMPACT_REV_KEY, value=str(rev).encode()))],
            failure=[pb.RequestOp(request_range=pb.RangeRequest(key=COMPACT_REV_KEY))],
        )

    def step(self, kv: Any, rev: int, timeout: float = 5.0) -> bool:
        resp = kv.Txn(self.txn(rev), timeout=timeout)
        self.revision = resp.header.revision
        if not resp.succeeded:
            self.version = resp.responses[0].response_range.kvs[0].version
            return False
        self.version += 1
        if rev == 0:
            return False  # kube does not compact on bootstrap
        kv.Compact(pb.CompactionRequest(revision=rev), timeout=timeout)
        self.compacted.append(rev)
        return True


def parse_version(text: str) -> tuple[int, int, int]:
    core = text.split("-", 1)[0].split("+", 1)[0]
    parts = core.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"not a semantic version: {text!r}")
    return int(parts[0]), int(parts[1]), int(parts[2])


def supports_request_progress(version: str) -> bool:
    """kube-apiserver's check (feature_support_checker.go): progress requests are answered correctly
    from etcd 3.4.31 on the 3.4 line, 3.5.13 on the 3.5 line, and every later minor release."""
    major, minor, patch = parse_version(version)
    if (major, minor) == (3, 4):
        return patch >= 31
    if (major, minor) == (3, 5):
        return patch >= 13
    return (major, minor) > (3, 5)
