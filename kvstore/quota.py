"""The backend quota (etcd's backendQuota): whether a write still fits under --quota-backend-bytes.

A request's cost is what etcd charges: a put costs 256 bytes plus its key and value, a txn the
larger of its two branches' puts (nested txns are not charged), a lease grant 64 bytes; anything
else costs nothing and always fits. A write fits while the backend file's size plus its cost
stays below the quota. A negative quota disables the check (etcd's rule); zero means etcd's
default, 2 GiB (``kvstore.config`` resolves it).

When a write does not fit, the member raises the NOSPACE alarm through the log and refuses the
write with ``etcdserver: mvcc: database space exceeded`` (``kvstore.server.member``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from proto.etcdserverpb import rpc_pb2 as pb

LEASE_OVERHEAD = 64  # etcd's leaseOverhead
KV_OVERHEAD = 256  # etcd's kvOverhead
SIZE_TTL = 0.05  # the backend's size is looked up at most this often (writes check it before proposing)


def put_cost(p: pb.PutRequest) -> int:
    return KV_OVERHEAD + len(p.key) + len(p.value)


def txn_cost(t: pb.TxnRequest) -> int:
    def branch(ops: object) -> int:
        return sum(put_cost(op.request_put) for op in ops if op.WhichOneof("request") == "request_put")  # type: ignore[attr-defined]

    return max(branch(t.success), branch(t.failure))


def cost(request: object) -> int:
    if isinstance(request, pb.PutRequest):
        return put_cost(request)
    if isinstance(request, pb.TxnRequest):
        return txn_cost(request)
    if isinstance(request, pb.LeaseGrantRequest):
        return LEASE_OVERHEAD
    return 0


class Quota:
    def __init__(self, quota_bytes: int, backend_size: Callable[[], int], size_ttl: float = SIZE_TTL) -> None:
        self.quota_bytes = quota_bytes
        self._backend_size = backend_size
        self._size_ttl = size_ttl
        self._size = 0
        self._size_at = float("-inf")

    @property
    def enabled(self) -> bool:
        return self.quota_bytes >= 0

    def size(self) -> int:
        now = time.monotonic()
        if now - self._size_at >= self._size_ttl:
            self._size = self._backend_size()
            self._size_at = now
        return self._size

    def invalidate(self) -> None:
        """The backend file was replaced (defragmented, a snapshot installed): look its size up again."""
        self._size_at = float("-inf")

    def available(self, request: object) -> bool:
        """Whether request fits (etcd's Available): free requests always do."""
        if self.quota_bytes < 0:
            return True
        c = cost(request)
        if c == 0:
            return True
        return self.size() + c < self.quota_bytes

    def remaining(self) -> int:
        return self.quota_bytes - self.size()
