"""raftkv's HTTP endpoints on real sockets: /metrics counters moving under etcd's names, the
--listen-metrics-urls listener, --enable-grpc-gateway=false, and bad input that must not stop the
member serving (partial headers held open, bodies past the limit, a watch client that stops
reading: its events wait, none is lost or sent twice)."""

from __future__ import annotations

import base64
import json
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc
from tests.procs import RaftkvMember, free_port

pytestmark = pytest.mark.integration


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


@pytest.fixture(scope="module")
def member(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RaftkvMember]:
    base = tmp_path_factory.mktemp("endpoints")
    metrics_port = free_port()
    m = RaftkvMember("m1", base / "m1.etcd", extra=[f"--listen-metrics-urls=http://127.0.0.1:{metrics_port}"])
    m.metrics_port = metrics_port  # type: ignore[attr-defined]
    m.start(wait=True)
    yield m
    m.stop()


def http(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def scrape(port: int) -> dict[str, float]:
    status, headers, body = http(port, "GET", "/metrics")
    assert status == 200
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_metrics_move_as_requests_are_served(member: RaftkvMember) -> None:
    before = scrape(member.port)
    for name in (
        "etcd_server_has_leader",
        "etcd_server_is_leader",
        "etcd_server_leader_changes_seen_total",
        "etcd_server_proposals_committed_total",
        "etcd_server_proposals_applied_total",
        "etcd_server_proposals_pending",
        "etcd_server_proposals_failed_total",
        "etcd_mvcc_db_total_size_in_bytes",
        "etcd_mvcc_db_total_size_in_use_in_bytes",
        "etcd_debugging_mvcc_keys_total",
        "etcd_mvcc_put_total",
        "etcd_mvcc_range_total",
        "etcd_disk_wal_fsync_duration_seconds_count",
        "etcd_disk_backend_commit_duration_seconds_count",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        'etcd_server_version{server_version="3.5.17"}',
    ):
        assert name in before, name
    assert before["etcd_server_has_leader"] == 1 and before["etcd_server_is_leader"] == 1
    assert before["etcd_server_leader_changes_seen_total"] >= 1
    with grpc.insecure_channel(member.endpoint) as channel:
        kv = rpc_pb2_grpc.KVStub(channel)
        for i in range(5):
            kv.Put(pb.PutRequest(key=f"metrics/{i}".encode(), value=b"v"), timeout=10)
        kv.Range(pb.RangeRequest(key=b"metrics/0"), timeout=10)
        with pytest.raises(grpc.RpcError):
            kv.Range(pb.RangeRequest(key=b""), timeout=10)
    for i in range(3):
        status, _, _ = http(
            member.port, "POST", "/v3/kv/put", json.dumps({"key": b64(f"h/{i}"), "value": "dg=="}).encode()
        )
        assert status == 200
    after = scrape(member.port)
    put_ok = (
        'grpc_server_handled_total{grpc_code="OK",grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"}'
    )
    range_bad = (
        'grpc_server_handled_total{grpc_code="InvalidArgument",grpc_method="Range",'
        'grpc_service="etcdserverpb.KV",grpc_type="unary"}'
    )
    started = 'grpc_server_started_total{grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"}'
    assert after[put_ok] - before[put_ok] == 8  # gRPC and gateway calls alike
    assert after[started] - before[started] == 8
    assert after[range_bad] - before[range_bad] == 1
    assert after["etcd_mvcc_put_total"] - before["etcd_mvcc_put_total"] == 8
    assert after["etcd_debugging_mvcc_keys_total"] - before["etcd_debugging_mvcc_keys_total"] == 8
    assert after["etcd_mvcc_range_total"] > before["etcd_mvcc_range_total"]
    assert after["etcd_server_proposals_applied_total"] >= before["etcd_server_proposals_applied_total"] + 8
    assert after["etcd_disk_wal_fsync_duration_seconds_count"] > before["etcd_disk_wal_fsync_duration_seconds_count"]
    buckets = [v for k, v in after.items() if k.startswith("etcd_disk_wal_fsync_duration_seconds_bucket")]
    assert buckets == sorted(buckets) and buckets[-1] == after["etcd_disk_wal_fsync_duration_seconds_count"]
    # every method and code is there from the start, as go-grpc-prometheus registers them
    assert 'grpc_server_handled_total{grpc_code="Unauthenticated",grpc_method="Watch",' in "".join(after)


def test_metrics_are_gzipped_for_a_scraper_that_asks(member: RaftkvMember) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{member.port}/metrics", headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.headers["Content-Encoding"] == "gzip"
        import gzip

        assert b"etcd_server_has_leader" in gzip.decompress(resp.read())


def test_the_metrics_listener_serves_metrics_and_health_only(member: RaftkvMember) -> None:
    port = member.metrics_port  # type: ignore[attr-defined]
    assert "etcd_server_has_leader" in scrape(port)
    assert http(port, "GET", "/health") == (200, http(port, "GET", "/health")[1], b'{"health":"true","reason":""}')
    assert http(port, "GET", "/livez")[2] == b"ok\n"
    assert http(port, "GET", "/readyz")[2] == b"ok\n"
    status, headers, body = http(port, "GET", "/version")
    assert (status, body) == (404, b"404 page not found\n")
    assert "access-control-allow-origin" not in headers  # no CORS there, as etcd's has none
    assert http(port, "POST", "/v3/kv/range", b"{}")[0] == 404
    assert http(member.port, "GET", "/version")[0] == 200


def test_the_gateway_can_be_turned_off(tmp_path: Path) -> None:
    m = RaftkvMember("m1", tmp_path / "m1.etcd", extra=["--enable-grpc-gateway=false"]).start()
    try:
        assert http(m.port, "POST", "/v3/kv/range", b'{"key":"YQ=="}') == (
            404,
            http(m.port, "POST", "/v3/kv/range", b"{}")[1],
            b"404 page not found\n",
        )
        assert http(m.port, "GET", "/version")[0] == 200
        with grpc.insecure_channel(m.endpoint) as channel:
            rpc_pb2_grpc.KVStub(channel).Range(pb.RangeRequest(key=b"a"), timeout=10)  # gRPC is unaffected
    finally:
        m.stop()
    bad = RaftkvMember("m2", tmp_path / "m2.etcd", extra=["--enable-grpc-gateway=maybe"])
    bad.start(wait=False)
    assert bad.proc is not None and bad.proc.wait(60) != 0
    assert "enable-grpc-gateway" in bad.log()
    bad.stop()


def test_partial_headers_held_open_and_oversized_bodies_do_not_stop_the_member(member: RaftkvMember) -> None:
    holders = []
    try:
        for _ in range(50):  # slowloris: request heads that never end
            s = socket.create_connection(("127.0.0.1", member.port))
            s.sendall(b"POST /v3/kv/put HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            holders.append(s)
        status, _, body = http(member.port, "POST", "/v3/kv/range", json.dumps({"key": b64("nope")}).encode())
        assert status == 200 and b'"header"' in body
        # a body past the limit is refused unread; the member goes on
        s = socket.create_connection(("127.0.0.1", member.port))
        s.sendall(b"POST /v3/kv/put HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n")
        s.settimeout(30)
        answer = s.recv(4096)
        s.close()
        assert answer.startswith(b"HTTP/1.1 413 ")
        before = http(member.port, "POST", "/v3/kv/range", json.dumps({"key": b64("big")}).encode())[2]
        s = socket.create_connection(("127.0.0.1", member.port))
        s.sendall(b"POST /v3/kv/put HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        value = json.dumps({"key": b64("big"), "value": b64(b"x" * 100)}).encode()
        part = value[:-1]  # not the end of the JSON yet
        s.sendall(b"%x\r\n%b\r\n" % (len(part), part))
        chunk = b" " * 65536
        try:
            for _ in range(200):  # whitespace forever: the body passes the limit and is refused
                s.sendall(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        except OSError:
            pass
        s.settimeout(30)
        assert s.recv(4096).startswith(b"HTTP/1.1 413 ")
        s.close()
        after = http(member.port, "POST", "/v3/kv/range", json.dumps({"key": b64("big")}).encode())[2]
        assert json.loads(after).get("kvs") == json.loads(before).get("kvs")  # nothing was applied
    finally:
        for s in holders:
            s.close()


def test_a_watch_client_that_stops_reading_loses_nothing(member: RaftkvMember) -> None:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", member.port))
    body = json.dumps({"create_request": {"key": b64("slow")}}).encode()
    s.sendall(b"POST /v3/watch HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
    value = b"v" * (256 << 10)
    with grpc.insecure_channel(member.endpoint) as channel:
        kv = rpc_pb2_grpc.KVStub(channel)
        first = None
        for _ in range(24):  # 6 MiB of events the client does not read
            rev = kv.Put(pb.PutRequest(key=b"slow", value=value), timeout=30).header.revision
            first = first or rev
        last = rev
        # the member serves others meanwhile
        assert kv.Range(pb.RangeRequest(key=b"slow", count_only=True), timeout=10).count == 1
    s.settimeout(60)
    data = bytearray()
    revisions: list[int] = []
    deadline = time.monotonic() + 60
    while (not revisions or revisions[-1] < last) and time.monotonic() < deadline:
        data += s.recv(1 << 20)
        revisions = [int(r) for r in re.findall(rb'"mod_revision":"(\d+)"', bytes(data))]
    s.close()
    assert revisions == list(range(first, last + 1))  # every event, in order, once


def test_the_grafana_dashboard_uses_only_metrics_raftkv_serves(member: RaftkvMember) -> None:
    dashboard = json.loads((Path(__file__).resolve().parents[2] / "grafana" / "raftkv-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 20
    names = {re.sub(r"_bucket$", "", n) for e in exprs for n in re.findall(r"\b((?:etcd|grpc|process)_[a-z_]+)\{", e)}
    _, _, body = http(member.port, "GET", "/metrics")
    served = set(re.findall(r"^# HELP (\S+) ", body.decode(), re.M))
    assert names <= served, names - served
