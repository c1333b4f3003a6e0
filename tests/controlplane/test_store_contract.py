"""The control plane's store sends only the Kubernetes contract's requests (controlplane.store.kube).

Every request ``EtcdStore`` sends is recorded by a client interceptor on its channels while the
store does each thing the control plane asks of it (against raftkv and against etcd 3.4.23), and
each must have the shape of one of KEP-4743's operations: Get, List, Count, OptimisticPut,
OptimisticDelete, the prefix Watch with prev_kv and progress notify under ``hasleader``, the
health check and kube's compaction Txn. Leases (grant, and the renewals and revokes of leader
election and node heartbeats) are listed separately.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from controlplane.store import AlreadyExists, Compacted, Conflict, NotFound, kube
from controlplane.store import etcd as etcd_store
from controlplane.store.etcd import EtcdStore
from proto.etcdserverpb import rpc_pb2 as pb

pytestmark = pytest.mark.integration
LEASE_METHODS = {"LeaseGrant", "LeaseKeepAlive", "LeaseRevoke"}


class Recorder(grpc.UnaryUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, tuple[tuple[str, str], ...]]] = []

    def _note(self, details: Any, request: Any) -> None:
        self.calls.append((details.method.rsplit("/", 1)[1], request, tuple(details.metadata or ())))

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self._note(details, request)
        return continuation(details, request)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Iterator[Any]) -> Any:
        def recorded() -> Iterator[Any]:
            for r in requests:
                self._note(details, r)
                yield r

        return continuation(details, recorded())


def fields(msg: Any) -> set[str]:
    return {f.name for f, _ in msg.ListFields()}


def contract_operation(method: str, req: Any, metadata: tuple[tuple[str, str], ...]) -> str | None:
    """The contract's name for a request, None if it is none of them."""
    if method == "Range":
        if req.key == kube.HEALTH_KEY and fields(req) == {"key"}:
            return "health"
        if fields(req) <= {"key", "revision", "limit"} and req.limit == 1:
            return "get"
        if fields(req) <= {"key", "range_end", "limit", "revision"} and req.range_end:
            return "list"
        if fields(req) == {"key", "range_end", "count_only"}:
            return "count"
    if method == "Txn" and len(req.compare) == 1 and len(req.success) == 1 and len(req.failure) <= 1:
        c, op = req.compare[0], req.success[0]
        failure_ok = not req.failure or req.failure[0] == pb.RequestOp(request_range=pb.RangeRequest(key=c.key))
        if c.target == pb.Compare.MOD and c.result == pb.Compare.EQUAL and failure_ok:
            if (
                op.HasField("request_put")
                and op.request_put.key == c.key
                and fields(op.request_put) <= {"key", "value", "lease"}
            ):
                return "optimistic-put"
            if op == pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=c.key)):
                return "optimistic-delete"
        if c.key == kube.COMPACT_REV_KEY and c.target == pb.Compare.VERSION and op.request_put.key == c.key:
            return "compaction-txn"
    if method == "Compact":
        return "compact"
    if method == "Watch" and req.HasField("create_request"):
        cr = req.create_request
        if (
            cr.prev_kv
            and cr.progress_notify
            and fields(cr) <= {"key", "range_end", "start_revision", "prev_kv", "progress_notify"}
        ):
            return "watch" if ("hasleader", "true") in metadata else None
    return None


@pytest.fixture
def recorded(server, monkeypatch) -> Iterator[tuple[EtcdStore, Recorder]]:
    rec = Recorder()
    plain = grpc.insecure_channel
    monkeypatch.setattr(etcd_store.grpc, "insecure_channel", lambda target: grpc.intercept_channel(plain(target), rec))
    monkeypatch.setattr(etcd_store, "LIST_PAGE", 3)  # several pages from a few keys
    store = EtcdStore(server.endpoint, retry_for=10.0)
    yield store, rec
    store.close()
    monkeypatch.setattr(etcd_store.grpc, "insecure_channel", plain)


def test_the_store_speaks_only_the_contract(recorded) -> None:
    store, rec = recorded
    prefix = "/registry/pods/default/"
    revs = [store.create(prefix + f"p{i}", b"v") for i in range(8)]
    with pytest.raises(AlreadyExists):
        store.create(prefix + "p0", b"again")
    kvs, rev = store.list(prefix)
    assert [kv.key for kv in kvs] == [prefix + f"p{i}" for i in range(8)] and rev == revs[-1]
    new = store.update(prefix + "p0", b"v2", revs[0])
    with pytest.raises(Conflict):
        store.update(prefix + "p0", b"v3", revs[0])
    with pytest.raises(NotFound):
        store.update(prefix + "nope", b"v", 5)
    assert store.get(prefix + "p0").value == b"v2"  # type: ignore[union-attr]
    assert store.get(prefix + "nope") is None
    with pytest.raises(Conflict):
        store.delete(prefix + "p0", revs[0])
    assert store.delete(prefix + "p0", new) and not store.delete(prefix + "p0", new)
    assert store.delete(prefix + "p1") and not store.delete(prefix + "p1")  # read, then deleted at its revision
    stream = store.watch(prefix, revs[-1])
    events = iter(stream)
    first = next(events)
    assert [e.kv.key for e in first.events][:2] == [prefix + "p7", prefix + "p0"]
    stream.cancel()
    store.health()
    store.compact(revs[-1])
    other = EtcdStore(store.endpoints, retry_for=10.0)  # a second apiserver's compactor
    try:
        latest = store.create(prefix + "late", b"v")
        other.compact(latest)  # it first learns the key's version, then compacts
    finally:
        other.close()
    with pytest.raises(Compacted):
        list(store.watch(prefix, revs[0]))
    lease = store.grant_lease(10)
    assert store.keepalive(lease) > 0
    store.revoke_lease(lease)

    kinds: dict[str, int] = {}
    for method, req, metadata in rec.calls:
        if method in LEASE_METHODS:
            kinds[method] = kinds.get(method, 0) + 1
            continue
        if method == "Watch" and not req.HasField("create_request"):
            continue  # a cancel of the store's own watch
        op = contract_operation(method, req, metadata)
        assert op is not None, f"not a contract request: {method} {req}"
        kinds[op] = kinds.get(op, 0) + 1
    for op in ("get", "list", "optimistic-put", "optimistic-delete", "watch", "health", "compaction-txn", "compact"):
        assert kinds.get(op), (op, kinds)
    assert kinds["list"] >= 3  # eight keys in pages of three
