"""Auth on paths that reach the services indirectly, against raftkv and real etcd 3.4.23 side by side.

Lock and Election: etcd's v3lock and v3election servers make their requests through an in-process
client with the caller's context, so the caller's token decides: an anonymous caller gets ``user
name is empty`` and a user without permission on the keys ``permission denied`` (both with gRPC
code Unknown, as the in-process client hands errors on), a user with permission locks and
campaigns; Observe, whose reads fail, ends without a message.

The HTTP gateway: ``/v3/auth/authenticate`` hands out the token and the ``Authorization`` header
carries it (grpc-gateway passes it on as ``authorization`` metadata, which etcd's auth reads), on
KV and Lock paths alike; a request without it, or with a token nobody issued, gets etcd's error.

Each call's outcome must be the same on both servers.
"""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from proto.authpb import auth_pb2 as authpb
from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc as rpc
from proto.v3electionpb import v3election_pb2 as epb
from proto.v3electionpb import v3election_pb2_grpc as erpc
from proto.v3lockpb import v3lock_pb2 as lpb
from proto.v3lockpb import v3lock_pb2_grpc as lrpc
from tests.procs import ETCD, EtcdMember, RaftkvMember

pytestmark = pytest.mark.integration


def secure(member: RaftkvMember | EtcdMember) -> str:
    """root, and a user u whose role may read and write mine/ only; auth on; u's token."""
    with member.channel() as ch:
        auth = rpc.AuthStub(ch)
        auth.UserAdd(pb.AuthUserAddRequest(name="root", password="pw"), timeout=10)
        auth.RoleAdd(pb.AuthRoleAddRequest(name="root"), timeout=10)
        auth.UserGrantRole(pb.AuthUserGrantRoleRequest(user="root", role="root"), timeout=10)
        auth.UserAdd(pb.AuthUserAddRequest(name="u", password="pw"), timeout=10)
        auth.RoleAdd(pb.AuthRoleAddRequest(name="r"), timeout=10)
        perm = authpb.Permission(permType=authpb.Permission.READWRITE, key=b"mine/", range_end=b"mine0")
        auth.RoleGrantPermission(pb.AuthRoleGrantPermissionRequest(name="r", perm=perm), timeout=10)
        auth.UserGrantRole(pb.AuthUserGrantRoleRequest(user="u", role="r"), timeout=10)
        auth.AuthEnable(pb.AuthEnableRequest(), timeout=10)
        return auth.Authenticate(pb.AuthenticateRequest(name="u", password="pw"), timeout=10).token


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[RaftkvMember | EtcdMember, str]]]:
    if ETCD is None:
        pytest.fail("etcd-server must be installed (scripts/test installs it)")
    base: Path = tmp_path_factory.mktemp("lockauth")
    members: list[RaftkvMember | EtcdMember] = [
        RaftkvMember("m1", base / "m1.etcd"),
        EtcdMember("ref", base / "ref.etcd"),
    ]
    try:
        for m in members:
            m.start()
        yield {"raftkv": (members[0], secure(members[0])), "etcd": (members[1], secure(members[1]))}
    finally:
        for m in members:
            m.stop()


def outcomes(member: RaftkvMember | EtcdMember, token: str) -> list[tuple[str, str, str]]:
    md = (("token", token),)
    out: list[tuple[str, str, str]] = []
    with member.channel() as ch:
        lock, election = lrpc.LockStub(ch), erpc.ElectionStub(ch)

        def call(what: str, f: Callable[[], object]) -> None:
            try:
                out.append((what, "OK", repr(f())))
            except grpc.RpcError as exc:
                out.append((what, exc.code().name, exc.details() or ""))

        led = epb.LeaderKey(name=b"mine/e", key=b"mine/e/1", rev=1, lease=1)
        call("Lock, anonymous", lambda: lock.Lock(lpb.LockRequest(name=b"mine/l"), timeout=10).key)
        call("Lock, u on its keys", lambda: lock.Lock(lpb.LockRequest(name=b"mine/l"), timeout=10, metadata=md).key[:7])
        call("Lock, u elsewhere", lambda: lock.Lock(lpb.LockRequest(name=b"other/l"), timeout=10, metadata=md).key)
        call("Unlock, anonymous", lambda: lock.Unlock(lpb.UnlockRequest(key=b"mine/l/1"), timeout=10).header.revision)
        call("Campaign, anonymous", lambda: election.Campaign(epb.CampaignRequest(name=b"mine/e"), timeout=10).leader)
        call(
            "Campaign, u",
            lambda: election.Campaign(
                epb.CampaignRequest(name=b"mine/e", value=b"v"), timeout=10, metadata=md
            ).leader.key[:7],
        )
        call("Leader, anonymous", lambda: election.Leader(epb.LeaderRequest(name=b"mine/e"), timeout=10).kv)
        call("Leader, u", lambda: election.Leader(epb.LeaderRequest(name=b"mine/e"), timeout=10, metadata=md).kv.value)
        call(
            "Leader, u elsewhere",
            lambda: election.Leader(epb.LeaderRequest(name=b"other/e"), timeout=10, metadata=md).kv,
        )
        call("Observe, anonymous", lambda: list(election.Observe(epb.LeaderRequest(name=b"mine/e"), timeout=10)))
        call("Proclaim, anonymous", lambda: election.Proclaim(epb.ProclaimRequest(leader=led, value=b"x"), timeout=10))
        call("Resign, anonymous", lambda: election.Resign(epb.ResignRequest(leader=led), timeout=10))
    return out


def test_lock_and_election_run_with_the_callers_identity(pair: dict) -> None:
    ours, ref = (outcomes(*pair[name]) for name in ("raftkv", "etcd"))
    assert ours == ref
    answers = dict((what, (code, text)) for what, code, text in ours)
    assert answers["Lock, anonymous"] == ("UNKNOWN", "etcdserver: user name is empty")
    assert answers["Lock, u on its keys"] == ("OK", repr(b"mine/l/"))
    assert answers["Lock, u elsewhere"] == ("UNKNOWN", "etcdserver: permission denied")
    assert answers["Leader, u"] == ("OK", repr(b"v"))


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def http_outcomes(member: RaftkvMember | EtcdMember) -> list[tuple[str, int, object]]:
    out: list[tuple[str, int, object]] = []

    def post(what: str, path: str, body: dict, token: str | None = None) -> dict:
        conn = http.client.HTTPConnection("127.0.0.1", member.port, timeout=10)
        try:
            conn.request("POST", path, body=json.dumps(body), headers={"Authorization": token} if token else {})
            resp = conn.getresponse()
            data = json.loads(resp.read())
        finally:
            conn.close()
        shown = data.get("message") if "message" in data else sorted(data)  # errors in full, successes' fields
        out.append((what, resp.status, shown))
        return data

    token = post("authenticate", "/v3/auth/authenticate", {"name": "u", "password": "pw"})["token"]
    put = {"key": b64("mine/h"), "value": b64("v")}
    post("put, no token", "/v3/kv/put", put)
    post("put, a token nobody issued", "/v3/kv/put", put, "forged.1")
    post("put, u", "/v3/kv/put", put, token)
    got = post("range, u", "/v3/kv/range", {"key": b64("mine/h")}, token)
    out.append(("range, u: values", 0, [kv["value"] for kv in got.get("kvs", [])]))
    post("range elsewhere, u", "/v3/kv/range", {"key": b64("other/h")}, token)
    post("lock, no token", "/v3/lock/lock", {"name": b64("mine/hl")})
    locked = post("lock, u", "/v3/lock/lock", {"name": b64("mine/hl")}, token)
    out.append(("lock, u: key", 0, base64.b64decode(locked.get("key", "")).startswith(b"mine/hl/")))
    return out


def test_the_gateway_takes_the_token_from_the_authorization_header(pair: dict) -> None:
    ours, ref = (http_outcomes(pair[name][0]) for name in ("raftkv", "etcd"))
    assert ours == ref
    answers = {what: (status, shown) for what, status, shown in ours}
    assert answers["put, no token"] == (400, "etcdserver: user name is empty")
    assert answers["put, u"][0] == 200 and answers["range, u: values"] == (0, [b64("v")])
    assert answers["lock, u: key"] == (0, True)
