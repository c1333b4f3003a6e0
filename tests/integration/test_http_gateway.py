"""etcd's HTTP on the client port, side by side with real etcd 3.4.23: the same curl requests to both.

One raftkv member and one etcd member for the module, each fresh, are sent the same sequence of
``curl`` requests (every gateway path of rpc.proto, the plain endpoints, and bad input); the answers
must be identical apart from ids, sizes, times and versions. Where etcd 3.5 (raftkv's spec) differs
from Debian's 3.4.23 the 3.5 answer is expected, each case named in ``known_3_4_difference``.
Watches and keep-alives over HTTP are streamed with http.client from the same script against both.
(The gateway with auth enabled, the ``Authorization`` header carrying the token, is compared with
etcd in ``tests/auth/test_auth_side_by_side.py``.)
"""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from kvstore.server.routes import TABLE
from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc
from tests.procs import ETCD, EtcdMember, Process, RaftkvMember

pytestmark = [pytest.mark.integration, pytest.mark.etcd]

CURL = shutil.which("curl")


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Process, Process]]:
    if ETCD is None or CURL is None:
        pytest.fail("etcd-server and curl must be installed (scripts/test installs them)")
    base = tmp_path_factory.mktemp("gateway")
    ours = RaftkvMember("gw", base / "raftkv" / "gw.etcd")
    ref = EtcdMember("gw", base / "etcd" / "gw.etcd")
    for member in (ours, ref):
        member.data_dir.parent.mkdir(parents=True)
    ours.start(wait=False)
    ref.start(wait=False)
    try:
        ours.wait_ready(60)
        ref.wait_ready(60)
        yield ours, ref
    finally:
        ours.stop()
        ref.stop()


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.headers.get('content-type')!r}, {self.body[:300]!r})"


def curl(member: Process, method: str, path: str, body: str | bytes | None = None, *extra: str) -> Reply:
    """One request with the curl binary: status, headers (lower-cased names; trailers too) and body."""
    tmp = member.data_dir.parent
    head, out = tmp / "curl-head", tmp / "curl-body"
    argv = [CURL, "-s", "-S", "-X", method, "-D", str(head), "-o", str(out), *extra]
    data = None
    if body is not None:
        argv += ["--data-binary", "@-"]
        data = body.encode() if isinstance(body, str) else body
    argv.append(f"http://127.0.0.1:{member.port}{path}")
    proc = subprocess.run(argv, input=data, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    lines = head.read_text("latin-1").splitlines()
    blocks = [i for i, line in enumerate(lines) if line.startswith("HTTP/")]
    lines = lines[blocks[-1] :]  # after a 100 Continue, the final answer
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return Reply(status, headers, out.read_bytes())


# ---- what may differ: ids, sizes, times and versions ----

IDS = {"cluster_id", "member_id", "ID", "leader"}
SIZES = {"dbSize", "dbSizeInUse", "remaining_bytes"}
TIMES = {"TTL"}  # seconds left on a lease: a second may pass between the two
RAFT = {"raft_term", "raftIndex", "raftTerm", "raftAppliedIndex"}  # the logs hold different entries
OPAQUE = {"blob", "hash"}  # the databases are different files


def normalize(value: Any, key: str = "") -> Any:
    if isinstance(value, list):
        return [normalize(v, key) for v in value]
    if isinstance(value, dict):
        return [(k, normalize(v, k)) for k, v in value.items()]
    if key in IDS | SIZES | TIMES | RAFT | OPAQUE:
        return f"<{key}>"
    if key in ("peerURLs", "clientURLs"):
        return "<url>"
    if key == "version" and isinstance(value, str) and value.startswith("3."):
        return "<version>"
    return value


ERROR_ORDER = ("error", "code", "message")


def canonical(reply: Reply, path: str) -> tuple[int, str, Any]:
    """(status, content type, body) with what may differ replaced; JSON key order is kept (it is compared)."""
    ctype = reply.headers.get("content-type", "")
    body: Any = reply.body
    if ctype == "application/json" or reply.body[:1] in (b"{", b"["):
        text = reply.body.decode()
        if "\n" in text.strip():  # a stream: one JSON value a line
            body = [normalize(json.loads(line)) for line in text.splitlines() if line]
        else:
            parsed = json.loads(text)
            if isinstance(parsed, dict) and set(parsed) <= set(ERROR_ORDER) and "code" in parsed:
                parsed = {
                    k: parsed[k] for k in ERROR_ORDER if k in parsed
                }  # 3.5's order (3.4.23: error, message, code)
            body = normalize(parsed)
    if path == "/version" and reply.status == 200:
        body = sorted(json.loads(reply.body))
    return reply.status, ctype, body


def known_3_4_difference(path: str, ours: Reply, ref: Reply) -> bool:
    """The cases where etcd 3.5 (raftkv's spec) answers differently from Debian's 3.4.23."""
    if ref.status == 412 and ours.status == 400 and ours.json().get("code") == 9:
        return True  # FailedPrecondition: grpc-gateway 1.16 (3.5) gives 400, Debian's 1.6 gave 412
    if path == "/health" and ref.body == b'{"health":"true"}':
        return ours.body == b'{"health":"true","reason":""}'  # 3.5 adds the reason
    return False


def assert_same(ours: Reply, ref: Reply, path: str) -> None:
    if known_3_4_difference(path, ours, ref):
        return
    assert canonical(ours, path) == canonical(ref, path), f"{path}\nraftkv: {ours}\netcd:   {ref}"
    if 200 <= ours.status < 300 and ours.headers.get("content-type") == "application/json":
        assert ours.headers.get("grpc-metadata-content-type") == ref.headers.get("grpc-metadata-content-type")
    for name in ("access-control-allow-origin", "access-control-allow-methods", "access-control-allow-headers"):
        assert ours.headers.get(name) == ref.headers.get(name), name


# the sequence: (method, path, body); every request goes to both members in turn
BIG = json.dumps({"key": b64("big"), "value": b64(b"x" * (3700 * 1024))})
SEQUENCE: list[tuple[str, str, str | None]] = [
    ("GET", "/version", None),
    ("GET", "/health", None),
    ("POST", "/v3/kv/put", json.dumps({"key": b64("foo"), "value": b64("bar")})),
    ("POST", "/v3/kv/range", json.dumps({"key": b64("foo")})),
    ("POST", "/v3/kv/put", json.dumps({"key": b64("foo"), "value": b64("baz"), "prev_kv": True})),
    ("POST", "/v3/kv/put", json.dumps({"key": b64("fop"), "value": b64("<&>\u00e9")})),
    ("POST", "/v3/kv/range", json.dumps({"key": b64("fo"), "range_end": b64("fp"), "sort_order": "DESCEND"})),
    ("POST", "/v3/kv/range", json.dumps({"key": b64("fo"), "range_end": b64("fp"), "keys_only": True, "limit": 1})),
    ("POST", "/v3/kv/range", json.dumps({"key": b64("fo"), "rangeEnd": b64("fp"), "countOnly": True})),
    ("POST", "/v3/kv/range", json.dumps({"key": b64("foo"), "serializable": True, "revision": "2"})),
    ("POST", "/v3/kv/range", json.dumps({"key": b64("nothing")})),
    (
        "POST",
        "/v3/kv/txn",
        json.dumps(
            {
                "compare": [{"key": b64("foo"), "target": "VALUE", "result": "EQUAL", "value": b64("baz")}],
                "success": [
                    {"request_put": {"key": b64("foo"), "value": b64("qux")}},
                    {"request_range": {"key": b64("foo")}},
                ],
                "failure": [{"request_delete_range": {"key": b64("foo")}}],
            }
        ),
    ),
    (
        "POST",
        "/v3/kv/txn",
        json.dumps(
            {
                "compare": [{"key": b64("foo"), "target": "VERSION", "result": "GREATER", "version": "10"}],
                "failure": [{"request_range": {"key": b64("fo"), "range_end": b64("fp"), "count_only": True}}],
            }
        ),
    ),
    ("POST", "/v3/kv/deleterange", json.dumps({"key": b64("fop"), "prev_kv": True})),
    ("POST", "/v3/kv/deleterange", json.dumps({"key": b64("nothing")})),
    ("POST", "/v3/kv/compaction", json.dumps({"revision": "3"})),
    ("POST", "/v3/kv/range", json.dumps({"key": b64("foo"), "revision": "2"})),
    ("POST", "/v3/kv/range", json.dumps({"key": b64("foo"), "revision": "99"})),
    ("POST", "/v3/kv/compaction", json.dumps({"revision": "2"})),
    ("POST", "/v3/lease/grant", json.dumps({"TTL": "600", "ID": "4242"})),
    ("POST", "/v3/lease/grant", json.dumps({"TTL": "600", "ID": "4242"})),
    ("POST", "/v3/kv/put", json.dumps({"key": b64("leased"), "value": b64("v"), "lease": "4242"})),
    ("POST", "/v3/lease/timetolive", json.dumps({"ID": "4242", "keys": True})),
    ("POST", "/v3/kv/lease/timetolive", json.dumps({"ID": "4242"})),
    ("POST", "/v3/lease/timetolive", json.dumps({"ID": "1"})),
    ("POST", "/v3/lease/leases", "{}"),
    ("POST", "/v3/kv/lease/leases", "{}"),
    ("POST", "/v3/kv/lease/revoke", json.dumps({"ID": "4242"})),
    ("POST", "/v3/lease/revoke", json.dumps({"ID": "4242"})),
    ("POST", "/v3/lease/grant", json.dumps({"TTL": "600", "ID": "77"})),
    ("POST", "/v3/lease/revoke", json.dumps({"ID": "77"})),
    ("POST", "/v3/cluster/member/list", "{}"),
    ("POST", "/v3/maintenance/status", "{}"),
    ("POST", "/v3/maintenance/alarm", json.dumps({"action": "GET"})),
    ("POST", "/v3/maintenance/snapshot", "{}"),
    ("POST", "/v3/kv/range", ""),
    # bad input
    ("POST", "/v3/kv/range", json.dumps({"key": ""})),
    ("POST", "/v3/kv/range", '{"key":"Zm9v"'),
    ("POST", "/v3/kv/range", '{"key":"Zm9v",}'),
    ("POST", "/v3/kv/range", '{"key" "Zm9v"}'),
    ("POST", "/v3/kv/range", "[]"),
    ("POST", "/v3/kv/range", '"key"'),
    ("POST", "/v3/kv/range", "{x}"),
    ("POST", "/v3/kv/range", '{"key":"Zm9"}'),
    ("POST", "/v3/kv/range", '{"key":"Zm9v!"}'),
    ("POST", "/v3/kv/range", '{"key":1}'),
    ("POST", "/v3/kv/range", '{"key":"Zm9v","limit":"x"}'),
    ("POST", "/v3/kv/range", '{"key":"Zm9v","limit":1.5}'),
    ("POST", "/v3/kv/range", '{"key":"Zm9v","limit":true}'),
    ("POST", "/v3/kv/range", '{"key":"Zm9v","limit":99999999999999999999}'),
    ("POST", "/v3/kv/range", '{"key":"Zm9v","sort_order":"SIDEWAYS"}'),
    ("POST", "/v3/kv/range", '{"key":"Zm9v","serializable":"yes"}'),
    ("POST", "/v3/kv/range", '{"key":"Zm9v","no_such_field":1}'),
    ("POST", "/v3/kv/range", '{"key":"Zm9v"} and then some'),
    ("POST", "/v3/kv/txn", '{"success":[{"request_put":"x"}]}'),
    ("POST", "/v3/kv/txn", '{"compare":{"key":"Zm9v"}}'),
    ("POST", "/v3/kv/put", json.dumps({"key": b64("k"), "value": b64("v"), "lease": "12345"})),
    ("POST", "/v3/kv/put", BIG),
    ("POST", "/v3/nothing/here", "{}"),
    ("GET", "/v3/kv/range", None),
    ("PUT", "/v3/kv/put", "{}"),
    ("POST", "/version", "{}"),
    ("GET", "/no/such/path", None),
    ("OPTIONS", "/v3/kv/range", None),
    ("POST", "/v3beta/kv/range", json.dumps({"key": b64("foo")})),
    ("GET", "/health", None),
]


def test_the_same_curl_requests_get_the_same_answers_as_from_etcd(pair: tuple[Process, Process]) -> None:
    ours, ref = pair
    for method, path, body in SEQUENCE:
        a = curl(ours, method, path, body)
        b = curl(ref, method, path, body)
        assert_same(a, b, path)


# paths raftkv routes to methods it does not serve yet: they must answer what their gRPC paths answer
# membership and defragment, with requests both servers refuse for the same reason (a single-member
# reference cluster must not be reconfigured), and a defragment both do
MEMBERSHIP = [
    ("/v3/cluster/member/add", json.dumps({"peerURLs": ["not a url"]})),
    ("/v3/cluster/member/remove", json.dumps({"ID": "1"})),
    ("/v3/cluster/member/update", json.dumps({"ID": "1", "peerURLs": ["http://127.0.0.1:1"]})),
    ("/v3/cluster/member/promote", json.dumps({"ID": "1"})),
    ("/v3/maintenance/defragment", "{}"),
]
AUTH = [
    ("/v3/auth/status", "AuthStatus", "{}"),
    ("/v3/auth/enable", "AuthEnable", "{}"),
    ("/v3/auth/user/add", "UserAdd", json.dumps({"name": "root", "password": "pw"})),
    ("/v3/auth/user/get", "UserGet", json.dumps({"name": "root"})),
    ("/v3/auth/user/list", "UserList", "{}"),
    ("/v3/auth/role/add", "RoleAdd", json.dumps({"name": "root"})),
    ("/v3/auth/role/get", "RoleGet", json.dumps({"role": "root"})),
    ("/v3/auth/role/list", "RoleList", "{}"),
    (
        "/v3/auth/role/grant",
        "RoleGrantPermission",
        json.dumps({"name": "root", "perm": {"permType": "READWRITE", "key": b64("a")}}),
    ),
    ("/v3/auth/role/revoke", "RoleRevokePermission", json.dumps({"role": "root", "key": b64("a")})),
    ("/v3/auth/user/grant", "UserGrantRole", json.dumps({"user": "root", "role": "root"})),
    ("/v3/auth/user/revoke", "UserRevokeRole", json.dumps({"name": "root", "role": "root"})),
    ("/v3/auth/user/changepw", "UserChangePassword", json.dumps({"name": "root", "password": "pw2"})),
    ("/v3/auth/authenticate", "Authenticate", json.dumps({"name": "root", "password": "pw2"})),
    ("/v3/auth/disable", "AuthDisable", "{}"),
    ("/v3/auth/user/delete", "UserDelete", json.dumps({"name": "root"})),
    ("/v3/auth/role/delete", "RoleDelete", json.dumps({"role": "root"})),
]


def test_membership_and_defragment_over_http_answer_as_etcd(pair: tuple[Process, Process]) -> None:
    ours, ref = pair
    for path, body in MEMBERSHIP:
        assert_same(curl(ours, "POST", path, body), curl(ref, "POST", path, body), path)


def test_auth_paths_go_through_the_same_table(pair: tuple[Process, Process]) -> None:
    """The Auth service is in the table: every /v3/auth/ path answers what etcd answers (enabling
    without a root user is refused, then users and roles are made, changed and deleted)."""
    ours, ref = pair
    served = {name for name, _, _ in TABLE["Auth"]}
    for path, name, body in AUTH:
        assert name in served, name
        a = curl(ours, "POST", path, body)
        b = curl(ref, "POST", path, body)
        if path == "/v3/auth/status" and b.status == 404:
            continue  # AuthStatus is new in 3.5
        assert_same(a, b, path)


def test_endpoints_3_4_does_not_have(pair: tuple[Process, Process]) -> None:
    """3.5's /livez and /readyz, /health?serializable and /v3/maintenance/hashkv (3.4.23 routes
    /v3/maintenance/hash to HashKV and has no hashkv path)."""
    ours, ref = pair
    assert curl(ref, "GET", "/livez", None).status == 404
    reply = curl(ours, "GET", "/livez", None)
    assert (reply.status, reply.body) == (200, b"ok\n")
    reply = curl(ours, "GET", "/readyz?verbose", None)
    assert reply.status == 200
    assert reply.body == b"[+]data_corruption ok\n[+]serializable_read ok\n[+]linearizable_read ok\nok\n"
    reply = curl(ours, "GET", "/readyz?verbose&exclude=linearizable_read", None)
    assert reply.body == b"[+]data_corruption ok\n[+]serializable_read ok\nok\n"
    reply = curl(ours, "GET", "/livez/serializable_read", None)
    assert (reply.status, reply.body) == (200, b"ok\n")
    assert curl(ours, "POST", "/readyz", "").status == 405
    reply = curl(ours, "GET", "/health?serializable=true", None)
    assert (reply.status, reply.body) == (200, b'{"health":"true","reason":""}')
    hashed = curl(ours, "POST", "/v3/maintenance/hash", "{}").json()
    assert set(hashed) == {"header", "hash"}
    hashkv = curl(ours, "POST", "/v3/maintenance/hashkv", "{}").json()
    assert set(hashkv) >= {"header", "hash", "compact_revision"}
    with grpc.insecure_channel(ours.endpoint) as channel:
        kv = rpc_pb2_grpc.MaintenanceStub(channel).HashKV(pb.HashKVRequest(), timeout=10)
    assert hashkv["hash"] == kv.hash


# ---- streams over HTTP: watch and keep-alive, side by side ----


class Stream:
    """A streaming POST read line by line. With ``values`` the body is complete at once (what etcd
    3.4.23 needs: it answers a streaming call only once the request body has ended); without, the
    body is chunked and sent as we go (``send``), which raftkv serves full duplex."""

    def __init__(self, member: Process, path: str, values: list[dict[str, Any]] | None = None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", member.port, timeout=30)
        self.conn.putrequest("POST", path)
        self.conn.putheader("Content-Type", "application/json")
        if values is None:
            self.conn.putheader("Transfer-Encoding", "chunked")
            self.conn.endheaders()
        else:
            body = b"".join(json.dumps(v).encode() for v in values)
            self.conn.putheader("Content-Length", str(len(body)))
            self.conn.endheaders(body)
        self.response: http.client.HTTPResponse | None = None

    def send(self, value: dict[str, Any]) -> None:
        data = json.dumps(value).encode()
        self.conn.send(b"%x\r\n%b\r\n" % (len(data), data))

    def close_body(self) -> None:
        self.conn.send(b"0\r\n\r\n")

    def next(self) -> Any:
        if self.response is None:
            self.response = self.conn.getresponse()
            assert self.response.status == 200
            assert self.response.getheader("Content-Type") == "application/json"
        line = self.response.readline()
        assert line, "the stream ended"
        return json.loads(line)

    def rest(self) -> bytes:
        """What is left of the answer, to its end."""
        assert self.response is not None
        return self.response.read()

    def close(self) -> None:
        self.conn.close()


def put(member: Process, key: str, value: str) -> None:
    assert curl(member, "POST", "/v3/kv/put", json.dumps({"key": b64(key), "value": b64(value)})).status == 200


def watch_script(member: Process) -> list[Any]:
    """Live events on a range, progress and cancel, and a watch from below the compacted revision."""
    seen = []
    live = Stream(
        member, "/v3/watch", [{"create_request": {"key": b64("w/"), "range_end": b64("w0"), "prev_kv": True}}]
    )
    others: list[Stream] = []
    try:
        created = live.next()
        seen.append(created)
        start = int(created["result"]["header"]["revision"])
        put(member, "w/a", "1")
        put(member, "w/b", "2")
        put(member, "w/a", "3")
        assert curl(member, "POST", "/v3/kv/deleterange", json.dumps({"key": b64("w/b")})).status == 200
        for _ in range(4):
            seen.append(live.next())
        ops = Stream(
            member,
            "/v3/watch",
            [
                {"create_request": {"key": b64("w/a"), "watch_id": "5"}},
                {"progress_request": {}},
                {"cancel_request": {"watch_id": "5"}},
            ],
        )
        others.append(ops)
        for _ in range(3):
            seen.append(ops.next())
        compact = curl(member, "POST", "/v3/kv/compaction", json.dumps({"revision": str(start + 3)}))
        assert compact.status == 200, compact
        old = Stream(member, "/v3/watch", [{"create_request": {"key": b64("w/a"), "start_revision": str(start + 1)}}])
        others.append(old)
        seen.append(old.next())
        seen.append(old.next())
        put(member, "w/a", "live")  # the first stream is still live
        seen.append(live.next())
    finally:
        live.close()
        for stream in others:
            stream.close()
    return seen


def normalize_revisions(lines: list[Any]) -> Any:
    """Revisions relative to the first one seen (the two stores did not start at the same revision)."""
    base = int(lines[0]["result"]["header"]["revision"])
    revs = {"revision", "create_revision", "mod_revision", "compact_revision"}

    def walk(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: walk(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, key) for v in value]
        if key in revs and isinstance(value, str):
            return int(value) - base
        return value

    return normalize(walk(lines))


def test_watch_over_http_live_events_progress_cancel_and_compaction_as_etcd(pair: tuple[Process, Process]) -> None:
    ours, ref = pair
    a = watch_script(ours)
    b = watch_script(ref)
    assert normalize_revisions(a) == normalize_revisions(b), f"\nraftkv: {a}\netcd:   {b}"
    start = int(a[0]["result"]["header"]["revision"])
    assert [e["kv"]["value"] for e in a[1]["result"]["events"]] == [b64("1")]
    assert a[4]["result"]["events"][0]["type"] == "DELETE"
    assert a[7]["result"]["canceled"] is True
    canceled = a[9]["result"]
    assert canceled["canceled"] is True and canceled["compact_revision"] == str(start + 3)
    assert a[10]["result"]["events"][0]["kv"]["value"] == b64("live")


def keepalive_script(member: Process) -> list[Any]:
    lease = curl(member, "POST", "/v3/lease/grant", json.dumps({"TTL": "30"})).json()["ID"]
    stream = Stream(member, "/v3/lease/keepalive", [{"ID": lease}, {"ID": lease}, {"ID": "999999"}, {"ID": lease}])
    try:
        seen = [stream.next() for _ in range(4)]
        assert stream.rest() == b""  # the body ended: the call ends once every renewal is answered
    finally:
        stream.close()
    assert curl(member, "POST", "/v3/lease/revoke", json.dumps({"ID": lease})).status == 200
    stream = Stream(member, "/v3/lease/keepalive", [{"ID": lease}])
    try:
        seen.append(stream.next())
    finally:
        stream.close()
    for line in seen:
        assert line["result"]["ID"] in (lease, "999999")
    return seen


def test_keepalive_over_http_as_etcd(pair: tuple[Process, Process]) -> None:
    ours, ref = pair
    a = keepalive_script(ours)
    b = keepalive_script(ref)
    assert [normalize(x) for x in a] == [normalize(x) for x in b]
    assert [x["result"].get("TTL") for x in a] == ["30", "30", None, "30", None]


def test_watch_and_keepalive_are_full_duplex_on_raftkv(pair: tuple[Process, Process]) -> None:
    """A chunked request body sent as we go: each request is answered as it arrives (etcd 3.4.23
    holds its answers until the body ends), and a half-closed body leaves the watch streaming."""
    ours, _ = pair
    watch = Stream(ours, "/v3/watch")
    try:
        watch.send({"create_request": {"key": b64("fd"), "watch_id": "3"}})
        assert watch.next()["result"]["created"] is True
        put(ours, "fd", "1")
        assert watch.next()["result"]["events"][0]["kv"]["value"] == b64("1")
        watch.send({"progress_request": {}})
        assert watch.next()["result"]["watch_id"] == "-1"
        watch.send({"create_request": {"key": b64("fd2"), "watch_id": "4"}})
        assert watch.next()["result"]["watch_id"] == "4"
        watch.send({"cancel_request": {"watch_id": "3"}})
        assert watch.next()["result"]["canceled"] is True
        watch.close_body()
        put(ours, "fd2", "2")
        assert watch.next()["result"]["events"][0]["kv"]["value"] == b64("2")
    finally:
        watch.close()
    lease = curl(ours, "POST", "/v3/lease/grant", json.dumps({"TTL": "30"})).json()["ID"]
    keepalive = Stream(ours, "/v3/lease/keepalive")
    try:
        for _ in range(3):
            keepalive.send({"ID": lease})
            assert keepalive.next()["result"]["TTL"] == "30"
        keepalive.close_body()
        assert keepalive.rest() == b""
    finally:
        keepalive.close()


def test_a_first_watch_request_that_does_not_decode_is_a_plain_error(pair: tuple[Process, Process]) -> None:
    """grpc-gateway returns the decoder's bare error for a stream's first request: Unknown, 500."""
    ours, ref = pair
    for body in ('{"create_request":{"key":7}}', "{", "[]"):
        a = curl(ours, "POST", "/v3/watch", body)
        b = curl(ref, "POST", "/v3/watch", body)
        assert_same(a, b, "/v3/watch")
        assert a.status == 500 and a.json()["code"] == 2


def wait_for(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def snapshot_lines(member: Process) -> list[Any]:
    reply = curl(member, "POST", "/v3/maintenance/snapshot", "{}")
    assert reply.status == 200
    return [json.loads(line) for line in reply.body.splitlines()]


def test_snapshot_over_http_is_the_same_file_as_over_grpc(pair: tuple[Process, Process], tmp_path: Path) -> None:
    ours, _ = pair
    lines = snapshot_lines(ours)
    data = b"".join(base64.b64decode(line["result"]["blob"]) for line in lines)
    assert "remaining_bytes" not in lines[-1]["result"]
    with grpc.insecure_channel(ours.endpoint) as channel:
        chunks = rpc_pb2_grpc.MaintenanceStub(channel).Snapshot(pb.SnapshotRequest(), timeout=30)
        over_grpc = b"".join(c.blob for c in chunks)
    assert len(data) == len(over_grpc)
    (tmp_path / "http.db").write_bytes(data)
    status = subprocess.run(
        ["etcdctl", "snapshot", "status", str(tmp_path / "http.db"), "-w", "json"],
        capture_output=True,
        text=True,
        env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
