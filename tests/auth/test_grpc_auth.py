"""Auth over gRPC where etcdctl cannot go, against etcd 3.4.23 and raftkv side by side.

Tokens kept across changes (a token from before a role change, after a password change, after
the user is deleted, after auth is disabled), forged tokens, watches refused with etcd's cancel
reasons, admin-only maintenance, lease revoke and time-to-live over keys one may not touch, and
every service called without credentials. Outcomes are compared as (code, message) or the
response's essential fields; then the places where raftkv is deliberately stricter than etcd 3.4
(nested transactions: etcd 3.4 checks none of their operations, a CVE in 2026) are shown on both.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from proto.authpb import auth_pb2 as authpb
from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc as rpc
from tests.auth.certs import rsa_keys
from tests.procs import ETCD, EtcdMember, RaftkvMember

pytestmark = [pytest.mark.integration, pytest.mark.etcd]

Outcome = tuple[str, str]


class Client:
    def __init__(self, channel: grpc.Channel) -> None:
        self.kv = rpc.KVStub(channel)
        self.auth = rpc.AuthStub(channel)
        self.lease = rpc.LeaseStub(channel)
        self.watch = rpc.WatchStub(channel)
        self.maint = rpc.MaintenanceStub(channel)
        self.cluster = rpc.ClusterStub(channel)

    def token(self, name: str, password: str) -> tuple[tuple[str, str], ...]:
        return (("token", self.auth.Authenticate(pb.AuthenticateRequest(name=name, password=password)).token),)


def call(fn: Callable[..., Any], request: Any, md: Any = None, describe: Callable[[Any], str] = str) -> Outcome:
    try:
        resp = fn(request, metadata=md, timeout=10)
    except grpc.RpcError as exc:
        return (exc.code().name, exc.details() or "")
    return ("OK", describe(resp))


def kvs(resp: Any) -> str:
    return ",".join(f"{kv.key.decode()}={kv.value.decode()}" for kv in resp.kvs)


def first_watch_response(client: Client, md: Any, create: pb.WatchCreateRequest) -> Outcome:
    stream = client.watch.Watch(iter([pb.WatchRequest(create_request=create)]), metadata=md, timeout=10)
    try:
        resp = next(stream)
    except grpc.RpcError as exc:
        return (exc.code().name, exc.details() or "")
    finally:
        stream.cancel()
    return ("OK", f"created={resp.created} canceled={resp.canceled} id={resp.watch_id} reason={resp.cancel_reason!r}")


def setup(c: Client) -> None:
    a = c.auth
    a.UserAdd(pb.AuthUserAddRequest(name="root", password="rootpw"))
    a.RoleAdd(pb.AuthRoleAddRequest(name="root"))
    a.UserGrantRole(pb.AuthUserGrantRoleRequest(user="root", role="root"))
    a.UserAdd(pb.AuthUserAddRequest(name="u1", password="u1pw"))
    a.RoleAdd(pb.AuthRoleAddRequest(name="r1"))
    perm = authpb.Permission(permType=authpb.Permission.READWRITE, key=b"k", range_end=b"l")
    a.RoleGrantPermission(pb.AuthRoleGrantPermissionRequest(name="r1", perm=perm))
    a.UserGrantRole(pb.AuthUserGrantRoleRequest(user="u1", role="r1"))
    c.kv.Put(pb.PutRequest(key=b"k1", value=b"v"))
    c.kv.Put(pb.PutRequest(key=b"secret", value=b"s"))
    a.AuthEnable(pb.AuthEnableRequest())


def scenario(c: Client) -> list[Outcome]:
    setup(c)
    out: list[Outcome] = []
    root = c.token("root", "rootpw")
    u1 = c.token("u1", "u1pw")
    forged = (("token", "AAAAAAAAAAAAAAAA.3"),)
    garbage = (("token", "not a token"),)
    # a token is needed everywhere but Status, MemberList and the lease keep-alives
    out.append(call(c.kv.Range, pb.RangeRequest(key=b"k1"), None, kvs))
    out.append(call(c.kv.Range, pb.RangeRequest(key=b"k1", serializable=True), None, kvs))
    out.append(call(c.kv.Put, pb.PutRequest(key=b"k1", value=b"x")))
    out.append(call(c.kv.DeleteRange, pb.DeleteRangeRequest(key=b"k1")))
    out.append(call(c.kv.Txn, pb.TxnRequest(success=[pb.RequestOp(request_range=pb.RangeRequest(key=b"k1"))])))
    out.append(call(c.maint.Hash, pb.HashRequest()))
    out.append(call(c.maint.HashKV, pb.HashKVRequest()))
    out.append(call(c.auth.UserList, pb.AuthUserListRequest()))
    out.append(call(c.auth.RoleGet, pb.AuthRoleGetRequest(role="r1")))
    out.append(call(c.lease.LeaseRevoke, pb.LeaseRevokeRequest(ID=12345)))
    out.append(first_watch_response(c, None, pb.WatchCreateRequest(key=b"k1")))
    out.append(call(c.maint.Status, pb.StatusRequest(), None, lambda r: "status"))
    out.append(call(c.cluster.MemberList, pb.MemberListRequest(), None, lambda r: f"{len(r.members)} members"))
    # bad tokens
    for md in (forged, garbage):
        out.append(call(c.kv.Range, pb.RangeRequest(key=b"k1"), md, kvs))
        out.append(call(c.kv.Put, pb.PutRequest(key=b"k1", value=b"x"), md))
        out.append(call(c.lease.LeaseGrant, pb.LeaseGrantRequest(TTL=60), md, lambda r: "granted"))
        out.append(first_watch_response(c, md, pb.WatchCreateRequest(key=b"k1")))
    # within and outside u1's permissions, watches included
    out.append(call(c.kv.Range, pb.RangeRequest(key=b"k1"), u1, kvs))
    out.append(call(c.kv.Range, pb.RangeRequest(key=b"secret"), u1, kvs))
    out.append(call(c.kv.Range, pb.RangeRequest(key=b"k", range_end=b"l", serializable=True), u1, kvs))
    out.append(first_watch_response(c, u1, pb.WatchCreateRequest(key=b"k1")))
    out.append(first_watch_response(c, u1, pb.WatchCreateRequest(key=b"secret")))
    out.append(first_watch_response(c, u1, pb.WatchCreateRequest(key=b"k", range_end=b"m")))
    out.append(call(c.maint.Hash, pb.HashRequest(), u1))
    out.append(call(c.maint.HashKV, pb.HashKVRequest(), u1))
    out.append(call(c.maint.Hash, pb.HashRequest(), root, lambda r: "hashed"))
    snap = c.maint.Snapshot(pb.SnapshotRequest(), metadata=u1, timeout=10)
    try:
        next(snap)
        out.append(("OK", "snapshot"))
    except grpc.RpcError as exc:
        out.append((exc.code().name, exc.details() or ""))
    # leases: a revoke deletes its keys, so it needs write permission on all of them
    lease = c.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=600), metadata=root).ID
    c.kv.Put(pb.PutRequest(key=b"secret2", value=b"s", lease=lease), metadata=root)
    out.append(call(c.kv.Put, pb.PutRequest(key=b"k2", value=b"x", lease=lease), u1))  # attaching to it, too
    out.append(call(c.lease.LeaseRevoke, pb.LeaseRevokeRequest(ID=lease), u1))
    out.append(call(c.lease.LeaseRevoke, pb.LeaseRevokeRequest(ID=lease), root, lambda r: "revoked"))
    # a role change takes effect at once for a token issued before it
    c.auth.RoleRevokePermission(pb.AuthRoleRevokePermissionRequest(role="r1", key=b"k", range_end=b"l"), metadata=root)
    out.append(call(c.kv.Range, pb.RangeRequest(key=b"k1"), u1, kvs))
    out.append(call(c.kv.Put, pb.PutRequest(key=b"k1", value=b"x"), u1))
    perm = authpb.Permission(permType=authpb.Permission.READ, key=b"k1")
    c.auth.RoleGrantPermission(pb.AuthRoleGrantPermissionRequest(name="r1", perm=perm), metadata=root)
    out.append(call(c.kv.Range, pb.RangeRequest(key=b"k1"), u1, kvs))
    u1 = c.token("u1", "u1pw")
    out.append(call(c.kv.Range, pb.RangeRequest(key=b"k1"), u1, kvs))
    # a changed password ends the user's tokens; so does deleting the user
    c.auth.UserChangePassword(pb.AuthUserChangePasswordRequest(name="u1", password="new"), metadata=root)
    out.append(call(c.kv.Range, pb.RangeRequest(key=b"k1"), u1, kvs))
    out.append(call(c.auth.Authenticate, pb.AuthenticateRequest(name="u1", password="u1pw"), None, lambda r: "token"))
    u1 = c.token("u1", "new")
    c.auth.UserDelete(pb.AuthUserDeleteRequest(name="u1"), metadata=root)
    out.append(call(c.kv.Range, pb.RangeRequest(key=b"k1"), u1, kvs))
    # auth status; disable; tokens afterwards
    out.append(call(c.auth.AuthStatus, pb.AuthStatusRequest(), None, lambda r: f"{r.enabled} {r.authRevision}"))
    out.append(call(c.auth.AuthDisable, pb.AuthDisableRequest(), root, lambda r: "disabled"))
    out.append(call(c.kv.Range, pb.RangeRequest(key=b"k1"), None, kvs))
    out.append(call(c.kv.Range, pb.RangeRequest(key=b"k1"), root, kvs))
    out.append(call(c.auth.AuthStatus, pb.AuthStatusRequest(), None, lambda r: f"{r.enabled} {r.authRevision}"))
    return out


# Where etcd 3.4 answers what 3.5 (the spec) fixed: its Maintenance service returns the auth
# package's error unconverted (code Unknown, "auth: ..."), and it has no AuthStatus (3.5's).
ETCD_34_UNCONVERTED = {
    ("UNKNOWN", "auth: permission denied"): ("PERMISSION_DENIED", "etcdserver: permission denied"),
    ("UNKNOWN", "auth: user name is empty"): ("INVALID_ARGUMENT", "etcdserver: user name is empty"),
}
NO_AUTH_STATUS = ("UNIMPLEMENTED", "unknown method AuthStatus for service etcdserverpb.Auth")


def as_etcd_35(want: Outcome, got: Outcome) -> Outcome:
    """etcd 3.4's outcome as etcd 3.5 answers it (raftkv's AuthStatus answer is checked on its own)."""
    if want == NO_AUTH_STATUS:
        return got
    return ETCD_34_UNCONVERTED.get(want, want)


def run_both(
    tmp_path: Path, fn: Callable[[Client], list[Outcome]], extra: list[str] | None = None
) -> tuple[list[Outcome], list[Outcome]]:
    if ETCD is None:
        pytest.fail("etcd-server must be installed (scripts/test installs it)")
    results = []
    for member in (
        EtcdMember("ref", tmp_path / "ref.etcd", extra=extra),
        RaftkvMember("m1", tmp_path / "m1.etcd", extra=extra),
    ):
        member.start()
        try:
            with member.channel() as channel:
                results.append(fn(Client(channel)))
        finally:
            member.stop()
    want, got = results
    diffs = [
        f"  step {i}: etcd {w} / raftkv {g}"
        for i, (w, g) in enumerate(zip(want, got, strict=True))
        if as_etcd_35(w, g) != g
    ]
    assert not diffs, "raftkv differs from etcd 3.4.23:\n" + "\n".join(diffs)
    return want, got


def test_grpc_auth_simple_tokens_match_etcd(tmp_path: Path) -> None:
    want, got = run_both(tmp_path, scenario)
    statuses = [g for w, g in zip(want, got, strict=True) if w == NO_AUTH_STATUS]
    assert [s[1].split()[0] for s in statuses] == ["True", "False"]  # and the revision moved on by one:
    assert int(statuses[1][1].split()[1]) == int(statuses[0][1].split()[1]) + 1
    assert sum(o == ("PERMISSION_DENIED", "etcdserver: permission denied") for o in got) >= 8
    assert sum(o == ("UNAUTHENTICATED", "etcdserver: invalid auth token") for o in got) >= 4


def test_grpc_auth_jwt_tokens_match_etcd(tmp_path: Path) -> None:
    priv, pub = rsa_keys(tmp_path)
    want, _ = run_both(tmp_path, scenario, [f"--auth-token=jwt,pub-key={pub},priv-key={priv},sign-method=RS256"])
    assert ("INVALID_ARGUMENT", "etcdserver: revision of auth store is old") in want


def stricter(c: Client) -> list[Outcome]:
    setup(c)
    u1 = c.token("u1", "u1pw")
    nested = pb.TxnRequest(
        success=[
            pb.RequestOp(
                request_txn=pb.TxnRequest(
                    success=[pb.RequestOp(request_put=pb.PutRequest(key=b"secret", value=b"overwritten"))]
                )
            )
        ]
    )
    nested_read = pb.TxnRequest(
        success=[
            pb.RequestOp(
                request_txn=pb.TxnRequest(success=[pb.RequestOp(request_range=pb.RangeRequest(key=b"secret"))])
            )
        ]
    )
    return [
        call(c.kv.Txn, nested, u1, lambda r: "nested put applied"),
        call(c.kv.Txn, nested_read, u1, lambda r: "nested read answered"),
        first_watch_response(c, u1, pb.WatchCreateRequest(key=b"k1", range_end=b"\x00")),
        call(c.kv.Range, pb.RangeRequest(key=b"secret"), c.token("root", "rootpw"), kvs),
    ]


def test_nested_transactions_and_from_key_watches_are_checked_unlike_etcd_34(tmp_path: Path) -> None:
    """etcd 3.4 checks no operation inside a nested txn (u1 overwrites a key it may not even read) and
    only the start key of a from-key watch; raftkv checks every one, and the key stays untouched."""
    results = []
    for member in (EtcdMember("ref", tmp_path / "ref.etcd"), RaftkvMember("m1", tmp_path / "m1.etcd")):
        member.start()
        try:
            with member.channel() as channel:
                results.append(stricter(Client(channel)))
        finally:
            member.stop()
    etcd, raftkv = results
    assert etcd[:2] == [("OK", "nested put applied"), ("OK", "nested read answered")]
    assert etcd[2] == ("OK", "created=True canceled=False id=0 reason=''")
    assert etcd[3] == ("OK", "secret=overwritten")
    denied = ("PERMISSION_DENIED", "etcdserver: permission denied")
    assert raftkv[:2] == [denied, denied]
    assert "canceled=True" in raftkv[2][1] and "permission denied" in raftkv[2][1]
    assert raftkv[3] == ("OK", "secret=s")
