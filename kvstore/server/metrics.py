"""``/metrics``: a member's state in Prometheus text format, under etcd's metric names and labels.

Everything is collected at scrape time from what the member already keeps (its log's leader, term
and indexes, the backend's sizes, the waiters of pending proposals) or counts with one increment per
event (``frontend.grpc.MethodStats`` for ``grpc_server_*``, ``kvstore.mvcc.stats.MvccStats`` for
``etcd_mvcc_*``, ``raft.stats.RaftStats`` for leader changes, WAL fsyncs and peer traffic): serving
requests costs nothing more. Names, help texts, label names and histogram buckets are etcd's (3.5);
``process_*`` come from prometheus-client's process collector (as Go's client gives them), and
Python's own runtime metrics replace Go's ``go_*``.

What differs from etcd, by necessity: ``etcd_disk_backend_commit_duration_seconds`` times the
periodic backend sync (LMDB commits each applied batch itself; the sync is what reaches the disk);
``etcd_network_peer_round_trip_time_seconds`` is measured by the leader from heartbeats to each
follower (etcd probes every peer from every member); ``etcd_server_health_success`` and
``_failures``, counters without a ``_total`` suffix in etcd, are written untyped, since
prometheus-client will not write a counter under such a name.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from frontend.grpc import Kind, Method
from raft.stats import Histogram

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # the text format generate_latest writes
_TYPES = {Kind.UNARY: "unary", Kind.SERVER_STREAM: "server_stream", Kind.BIDI: "bidi_stream"}
# Go's codes.Code.String(), by code
GRPC_CODES = (
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
)


def _histogram(name: str, doc: str, hist: Histogram, labels: dict[str, str] | None = None) -> Iterator[Any]:
    buckets = [("+Inf" if b == float("inf") else _go_float(b), n) for b, n in hist.cumulative()]
    if labels is None:
        yield HistogramMetricFamily(name, doc, buckets=buckets, sum_value=hist.sum)
    else:
        family = HistogramMetricFamily(name, doc, labels=list(labels))
        family.add_metric(list(labels.values()), buckets, hist.sum)
        yield family


def _go_float(value: float) -> str:
    """A bucket bound as Go's client writes it (0.001, 0.002, ..., 8.192)."""
    return repr(round(value, 10))


class HealthCounts:
    """/health outcomes (etcd_server_health_success, _failures)."""

    def __init__(self) -> None:
        self.success = 0
        self.failures = 0


class MemberCollector:
    """A prometheus-client collector reading a member at scrape time."""

    def __init__(self, member: Any, methods: Mapping[bytes, Method], health: HealthCounts, version: str) -> None:
        self.member = member
        self.methods = methods
        self.health = health
        self.version = version

    def collect(self) -> Iterator[Any]:
        yield from self._server()
        yield from self._mvcc()
        yield from self._disk()
        yield from self._network()
        yield from self._grpc()

    def _server(self) -> Iterator[Any]:
        member = self.member
        log = member.log
        leader = log.leader
        stats = getattr(log, "stats", None)
        yield GaugeMetricFamily(
            "etcd_server_has_leader",
            "Whether or not a leader exists. 1 is existence, 0 is not.",
            value=int(bool(leader)),
        )
        yield GaugeMetricFamily(
            "etcd_server_is_leader",
            "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            value=int(leader == member.member_id),
        )
        yield GaugeMetricFamily(
            "etcd_server_is_learner",
            "Whether or not this member is a learner. 1 if is, 0 otherwise.",
            value=int(bool(getattr(log, "is_learner", False))),
        )
        yield CounterMetricFamily(
            "etcd_server_leader_changes_seen_total",
            "The number of leader changes seen.",
            value=stats.leader_changes if stats is not None else 0,
        )
        yield GaugeMetricFamily(
            "etcd_server_proposals_committed_total",
            "The total number of consensus proposals committed.",
            value=log.commit_index,
        )
        yield GaugeMetricFamily(
            "etcd_server_proposals_applied_total",
            "The total number of consensus proposals applied.",
            value=member.applied_index,
        )
        yield GaugeMetricFamily(
            "etcd_server_proposals_pending",
            "The current number of pending proposals to commit.",
            value=len(member._waiters),
        )
        yield CounterMetricFamily(
            "etcd_server_proposals_failed_total",
            "The total number of failed proposals seen.",
            value=member.proposals_failed,
        )
        ident = GaugeMetricFamily(
            "etcd_server_id",
            "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
            labels=["server_id"],
        )
        ident.add_metric([f"{member.member_id:x}"], 1)
        yield ident
        version = GaugeMetricFamily(
            "etcd_server_version",
            "Which version is running. 1 for 'server_version' label with current version.",
            labels=["server_version"],
        )
        version.add_metric([self.version], 1)
        yield version
        cluster = GaugeMetricFamily(
            "etcd_cluster_version",
            "Which version is running. 1 for 'cluster_version' label with current cluster version",
            labels=["cluster_version"],
        )
        cluster.add_metric([".".join(self.version.split(".")[:2])], 1)
        yield cluster
        yield GaugeMetricFamily(
            "etcd_server_quota_backend_bytes",
            "Current backend storage quota size in bytes.",
            value=member.cfg.quota_backend_bytes,
        )
        for name, doc, value in (
            ("etcd_server_health_success", "The total number of successful health checks", self.health.success),
            ("etcd_server_health_failures", "The total number of failed health checks", self.health.failures),
        ):
            metric = Metric(name, doc, "unknown")
            metric.add_sample(name, {}, value)
            yield metric

    def _mvcc(self) -> Iterator[Any]:
        member = self.member
        backend = member.backend
        store = member.store
        stats = member.mvcc_stats
        yield GaugeMetricFamily(
            "etcd_mvcc_db_total_size_in_bytes",
            "Total size of the underlying database physically allocated in bytes.",
            value=backend.size(),
        )
        yield GaugeMetricFamily(
            "etcd_mvcc_db_total_size_in_use_in_bytes",
            "Total size of the underlying database logically in use in bytes.",
            value=backend.size_in_use(),
        )
        yield GaugeMetricFamily("etcd_debugging_mvcc_keys_total", "Total number of keys.", value=stats.keys)
        yield GaugeMetricFamily(
            "etcd_debugging_mvcc_current_revision", "The current revision of store.", value=store.current_rev
        )
        yield GaugeMetricFamily(
            "etcd_debugging_mvcc_compact_revision",
            "The revision of the last compaction in store.",
            value=store.compact_main_rev,
        )
        yield CounterMetricFamily("etcd_mvcc_put_total", "Total number of puts seen by this member.", value=stats.puts)
        yield CounterMetricFamily(
            "etcd_mvcc_delete_total", "Total number of deletes seen by this member.", value=stats.deletes
        )
        yield CounterMetricFamily(
            "etcd_mvcc_range_total", "Total number of ranges seen by this member.", value=stats.ranges
        )
        hub = member.watch_hub
        streams = getattr(hub, "streams", None)
        if streams is not None:
            yield GaugeMetricFamily(
                "etcd_debugging_mvcc_watch_stream_total", "Total number of watch streams.", value=len(streams)
            )

    def _disk(self) -> Iterator[Any]:
        stats = getattr(self.member.log, "stats", None)
        if stats is not None:
            yield from _histogram(
                "etcd_disk_wal_fsync_duration_seconds",
                "The latency distributions of fsync called by WAL.",
                stats.wal_fsync,
            )
        yield from _histogram(
            "etcd_disk_backend_commit_duration_seconds",
            "The latency distributions of commit called by backend.",
            self.member.backend_commit,
        )

    def _network(self) -> Iterator[Any]:
        stats = getattr(self.member.log, "stats", None)
        if stats is None:
            return
        sent = CounterMetricFamily(
            "etcd_network_peer_sent_bytes_total", "The total number of bytes sent to peers.", labels=["To"]
        )
        for peer, n in sorted(stats.sent_bytes.items()):
            sent.add_metric([f"{peer:x}"], n)
        yield sent
        received = CounterMetricFamily(
            "etcd_network_peer_received_bytes_total", "The total number of bytes received from peers.", labels=["From"]
        )
        for peer, n in sorted(stats.received_bytes.items()):
            received.add_metric([f"{peer:x}"], n)
        yield received
        rtt = HistogramMetricFamily(
            "etcd_network_peer_round_trip_time_seconds", "Round-Trip-Time histogram between peers", labels=["To"]
        )
        for peer, hist in sorted(stats.rtt.items()):
            buckets = [("+Inf" if b == float("inf") else _go_float(b), n) for b, n in hist.cumulative()]
            rtt.add_metric([f"{peer:x}"], buckets, hist.sum)
        yield rtt

    def _grpc(self) -> Iterator[Any]:
        labels = ["grpc_method", "grpc_service", "grpc_type"]
        started = CounterMetricFamily(
            "grpc_server_started_total", "Total number of RPCs started on the server.", labels=labels
        )
        handled = CounterMetricFamily(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            labels=["grpc_code", *labels],
        )
        received = CounterMetricFamily(
            "grpc_server_msg_received_total",
            "Total number of RPC stream messages received on the server.",
            labels=labels,
        )
        sent = CounterMetricFamily(
            "grpc_server_msg_sent_total", "Total number of gRPC stream messages sent by the server.", labels=labels
        )
        for path, method in sorted(self.methods.items()):
            service, _, name = path.decode().lstrip("/").rpartition("/")
            values = [name, service, _TYPES[method.kind]]
            st = method.stats
            started.add_metric(values, st.started)
            received.add_metric(values, st.received)
            sent.add_metric(values, st.sent)
            for code, n in enumerate(st.handled):
                handled.add_metric([GRPC_CODES[code], *values], n)
        yield started
        yield handled
        yield received
        yield sent


def member_registry(collector: MemberCollector) -> CollectorRegistry:
    """A registry of its own (not prometheus-client's global one): the member, the process, Python."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)  # type: ignore[arg-type]
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry, accept_encoding: str | None) -> tuple[list[tuple[str, str]], bytes]:
    """(headers, body) of a scrape; gzip when the scraper accepts it, as Go's promhttp does."""
    body = generate_latest(registry)
    headers = [("Content-Type", CONTENT_TYPE)]
    if accept_encoding and "gzip" in accept_encoding:
        body = gzip.compress(body, 1)
        headers.append(("Content-Encoding", "gzip"))
    return headers, body
