"""The store over etcd's v3 gRPC API (KV, Watch, Lease), with fail-over between endpoints.

Every KV and Watch request is one of the Kubernetes storage contract's (``controlplane.store.kube``,
KEP-4743, what kube-apiserver sends): Get, List in pages of ``LIST_PAGE`` at the first page's
revision, OptimisticPut (a create is one with expected revision 0), OptimisticDelete (an
unconditional delete reads the key first, as kube's does), a prefix Watch with prev_kv and
progress notifications under ``hasleader``, and kube's compaction step on ``compact_rev_key``.

Reads and conditional writes go to one endpoint at a time; on an error that means "ask someone
else" (connection refused, deadline, ``etcdserver: no leader``, ``leader changed``, ...) the
client moves to the next endpoint and retries with backoff for up to ``retry_for`` seconds.
Retrying a conditional write is safe: if the first attempt did apply, the retry fails its
compare and the caller sees Conflict or AlreadyExists and re-reads, as a controller does anyway.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import grpc

from controlplane.store import kube
from controlplane.store.base import (
    AlreadyExists,
    Compacted,
    Conflict,
    Event,
    KeyValue,
    NotFound,
    StoreError,
    Unavailable,
    WatchResponse,
)
from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc
from proto.mvccpb import kv_pb2

log = logging.getLogger("controlplane.store")
T = TypeVar("T")

DEFAULT_ENDPOINTS = "127.0.0.1:2379"
_RETRY_CODES = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
_RETRY_MESSAGES = ("no leader", "leader changed", "timed out", "not capable", "stopped", "too many requests")
LIST_PAGE = 500  # kube's reflectors list in pages of 500


def endpoints_from(flag: str | None) -> list[str]:
    """--endpoints, else ETCDCTL_ENDPOINTS, else 127.0.0.1:2379; accepts http:// prefixes as etcdctl does."""
    raw = flag or os.environ.get("ETCDCTL_ENDPOINTS") or DEFAULT_ENDPOINTS
    out = []
    for e in raw.split(","):
        e = e.strip()
        for scheme in ("http://", "https://"):
            if e.startswith(scheme):
                e = e[len(scheme) :]
        if e:
            out.append(e.rstrip("/"))
    return out


def _retryable(exc: grpc.RpcError) -> bool:
    code = exc.code()  # type: ignore[attr-defined]
    details = (exc.details() or "").lower()  # type: ignore[attr-defined]
    if code in _RETRY_CODES:
        return True
    return code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL) and any(m in details for m in _RETRY_MESSAGES)


def _kv(kv: kv_pb2.KeyValue) -> KeyValue:
    return KeyValue(kv.key.decode(), kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)


class _Stubs:
    def __init__(self, channel: grpc.Channel, timeout: float) -> None:
        self.channel = channel
        self.kv = rpc_pb2_grpc.KVStub(channel)
        self.kube = kube.KubernetesClient(self.kv, timeout)
        self.watch = rpc_pb2_grpc.WatchStub(channel)
        self.lease = rpc_pb2_grpc.LeaseStub(channel)


class EtcdStore:
    def __init__(self, endpoints: Sequence[str] | str, timeout: float = 5.0, retry_for: float = 20.0) -> None:
        self.endpoints = endpoints_from(endpoints) if isinstance(endpoints, str) else list(endpoints)
        if not self.endpoints:
            raise ValueError("no endpoints")
        self.timeout = timeout
        self.retry_for = retry_for
        self._lock = threading.Lock()
        self._current = 0
        self._stubs: dict[str, _Stubs] = {}
        self._closed = False
        self._compactor = kube.Compactor()

    # ---- endpoint selection ----

    def _pick(self) -> tuple[str, _Stubs]:
        with self._lock:
            ep = self.endpoints[self._current % len(self.endpoints)]
            stubs = self._stubs.get(ep)
            if stubs is None:
                stubs = self._stubs[ep] = _Stubs(grpc.insecure_channel(ep), self.timeout)
            return ep, stubs

    def _failed(self, ep: str) -> None:
        """Moves on from ep, unless another thread already did. Its channel stays open: streams on
        it (watches) live or die on their own, and gRPC reconnects it when it is picked again."""
        with self._lock:
            if self.endpoints[self._current % len(self.endpoints)] == ep:
                self._current += 1

    def _call(self, fn: Callable[[_Stubs], T], what: str, retry_for: float | None = None) -> T:
        deadline = time.monotonic() + (self.retry_for if retry_for is None else retry_for)
        attempt = 0
        while True:
            ep, stubs = self._pick()
            try:
                return fn(stubs)
            except grpc.RpcError as exc:
                if not _retryable(exc) or self._closed:
                    raise StoreError(f"{what}: {exc.details()}") from None  # type: ignore[attr-defined]
                if time.monotonic() > deadline:
                    raise Unavailable(f"{what}: {exc.details()} (tried {', '.join(self.endpoints)})") from None  # type: ignore[attr-defined]
                log.debug("%s on %s failed (%s); trying the next endpoint", what, ep, exc.details())  # type: ignore[attr-defined]
                self._failed(ep)
                attempt += 1
                time.sleep(min(0.05 * 2 ** min(attempt, 5), 1.0) if attempt >= len(self.endpoints) else 0.01)
            except ValueError:  # a channel closed under us by another thread's fail-over
                if time.monotonic() > deadline:
                    raise Unavailable(what) from None

    # ---- KV (the Kubernetes contract) ----

    def get(self, key: str, within: float | None = None) -> KeyValue | None:
        """``within`` bounds each attempt and the whole retry loop, as for ``keepalive``."""
        per_try = min(self.timeout, within) if within else self.timeout
        resp = self._call(lambda s: s.kube.get(key.encode(), timeout=per_try), "get", retry_for=within)
        return _kv(resp.kv) if resp.kv is not None else None

    def list(self, prefix: str) -> tuple[list[KeyValue], int]:
        p = prefix.encode()
        page = self._call(lambda s: s.kube.list(p, limit=LIST_PAGE), "list")
        kvs = [_kv(kv) for kv in page.kvs]
        rev = page.revision
        while page.more:
            after = page.next_key()
            page = self._call(
                lambda s, after=after: s.kube.list(p, limit=LIST_PAGE, revision=rev, continue_key=after),
                "list",
            )
            kvs.extend(_kv(kv) for kv in page.kvs)
        return kvs, rev

    def create(self, key: str, value: bytes, lease: int = 0) -> int:
        resp = self._call(lambda s: s.kube.optimistic_put(key.encode(), value, 0, lease=lease), "create")
        if not resp.succeeded:
            raise AlreadyExists(key)
        return resp.revision

    def update(self, key: str, value: bytes, mod_revision: int, lease: int = 0) -> int:
        resp = self._call(
            lambda s: s.kube.optimistic_put(key.encode(), value, mod_revision, lease=lease, get_on_failure=True),
            "update",
        )
        if not resp.succeeded:
            if resp.kv is None:
                raise NotFound(key)
            raise Conflict(key)
        return resp.revision

    def delete(self, key: str, mod_revision: int = 0) -> bool:
        """With mod_revision, one OptimisticDelete; without, the key's current revision is read and
        deleted at it, again if it changed in between (kube's delete of the object it just read)."""
        k = key.encode()
        expected = mod_revision
        if not expected:
            cur = self.get(key)
            if cur is None:
                return False
            expected = cur.mod_revision
        while True:
            resp = self._call(lambda s, e=expected: s.kube.optimistic_delete(k, e, get_on_failure=True), "delete")
            if resp.succeeded:
                return True
            if resp.kv is None:
                return False
            if mod_revision:
                raise Conflict(key)
            expected = resp.kv.mod_revision

    def compact(self, revision: int) -> None:
        """kube-apiserver's compaction step; if another compactor moved compact_rev_key on meanwhile,
        once more with the version it learned (its next turn, taken now)."""
        for _ in range(2):
            if self._call(lambda s: self._compactor.step(s.kv, revision, self.timeout), "compact"):
                return

    def health(self) -> None:
        """kube-apiserver's health check (a Range of /registry/health); raises StoreError if it fails."""
        self._call(lambda s: s.kube.health(), "health")

    # ---- Lease ----

    def grant_lease(self, ttl: int) -> int:
        resp = self._call(lambda s: s.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=ttl), timeout=self.timeout), "grant")
        return resp.ID

    def keepalive(self, lease_id: int, within: float | None = None) -> int:
        """One renewal. ``within`` bounds each attempt and the whole retry loop (a heartbeat must
        not wait on a member whose leader just died for longer than the lease lives)."""
        per_try = min(self.timeout, within) if within else self.timeout

        def once(s: _Stubs) -> int:
            call = s.lease.LeaseKeepAlive(iter([pb.LeaseKeepAliveRequest(ID=lease_id)]), timeout=per_try)
            for resp in call:
                return resp.TTL
            return 0

        return self._call(once, "keepalive", retry_for=within)

    def revoke_lease(self, lease_id: int) -> None:
        try:
            self._call(
                lambda s: s.lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=lease_id), timeout=self.timeout), "revoke"
            )
        except StoreError as exc:
            if "not found" not in str(exc):
                raise

    # ---- Watch ----

    def watch(self, prefix: str, start_revision: int) -> _EtcdWatch:
        return _EtcdWatch(self, prefix, start_revision)

    def close(self) -> None:
        self._closed = True
        with self._lock:
            for stubs in self._stubs.values():
                stubs.channel.close()
            self._stubs.clear()


class _EtcdWatch:
    """One watch stream on one endpoint. Iterating yields responses; errors end the stream."""

    def __init__(self, store: EtcdStore, prefix: str, start_revision: int) -> None:
        self._store = store
        self._requests: queue.Queue[pb.WatchRequest | None] = queue.Queue()
        self._requests.put(kube.watch_request(prefix.encode(), start_revision))
        self._ep, stubs = store._pick()
        self._cancelled = False
        # "hasleader": the member ends the stream when it loses its leader, so we move to one that has one.
        self._call = stubs.watch.Watch(self._request_iter(), metadata=kube.REQUIRE_LEADER)

    def _request_iter(self) -> Iterator[pb.WatchRequest]:
        while True:
            r = self._requests.get()
            if r is None:
                return
            yield r

    def __iter__(self) -> Iterator[WatchResponse]:
        try:
            for resp in self._call:
                if resp.compact_revision:
                    raise Compacted(resp.compact_revision)
                if resp.canceled:
                    if "compacted" in resp.cancel_reason:
                        raise Compacted(resp.compact_revision)
                    raise Unavailable(f"watch canceled: {resp.cancel_reason or 'no reason'}")
                if resp.created and not resp.events:
                    continue
                events = []
                for ev in resp.events:
                    kind = "PUT" if ev.type == kv_pb2.Event.PUT else "DELETE"
                    prev = _kv(ev.prev_kv) if ev.HasField("prev_kv") else None
                    events.append(Event(kind, _kv(ev.kv), prev))
                yield WatchResponse(resp.header.revision, events)
        except grpc.RpcError as exc:
            if self._cancelled:
                return
            if "compacted" in (exc.details() or ""):  # type: ignore[attr-defined]
                raise Compacted(0) from None
            if _retryable(exc):
                self._store._failed(self._ep)
            raise Unavailable(f"watch on {self._ep}: {exc.details()}") from None  # type: ignore[attr-defined]
        if not self._cancelled:
            self._store._failed(self._ep)
            raise Unavailable(f"watch on {self._ep} ended")

    def cancel(self) -> None:
        self._cancelled = True
        self._requests.put(None)
        self._call.cancel()
