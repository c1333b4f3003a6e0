"""With auth enabled, an anonymous client is refused on every method and every HTTP path.

Every method of the dispatch table (``kvstore.server.routes.TABLE``) is called with a valid request
and no credentials. Only what etcd serves to anyone answers: Status, MemberList, MoveLeader and
Alarm (what ``etcdctl endpoint status|health`` and clients' discovery need, none of which reads or
changes a key), Authenticate and AuthStatus, and the lease calls etcd leaves open (granting,
keep-alives, listing, time-to-live: a lease names no key; time-to-live of a lease with keys is
checked). Everything else is refused with etcd's error, Compact and LeaseRevoke included (etcd 3.4
lets anyone compact, and revoke a lease that holds no key; raftkv asks for a user), and nothing
changes. Lock and Election run their requests with the caller's identity (as etcd's do), so they
are refused with the same error, handed on with gRPC code Unknown; Observe, whose reads fail, ends
without a message (etcd's does too). Over HTTP, /metrics is served to anyone, as etcd serves it,
and shows no key.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from kvstore.server.routes import TABLE, Kind, path
from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc as rpc
from proto.v3electionpb import v3election_pb2 as epb
from proto.v3lockpb import v3lock_pb2 as lockpb
from tests.procs import RaftkvMember

pytestmark = pytest.mark.integration

OPEN = {
    "Maintenance/Status",
    "Maintenance/MoveLeader",
    "Maintenance/Alarm",
    "Cluster/MemberList",
    "Auth/Authenticate",
    "Auth/AuthStatus",
    "Lease/LeaseGrant",
    "Lease/LeaseKeepAlive",
    "Lease/LeaseLeases",
    "Lease/LeaseTimeToLive",
    "Election/Observe",
}
REFUSALS = {
    ("INVALID_ARGUMENT", "etcdserver: user name is empty"),
    ("PERMISSION_DENIED", "etcdserver: permission denied"),
}
# what the Lock and Election services' in-process client hands on (etcd's, gRPC code Unknown)
RELAYED_REFUSALS = {("UNKNOWN", message) for _, message in REFUSALS}
RELAYING = {"Lock", "Election"}


SAMPLES = {
    "Range": pb.RangeRequest(key=b"k"),
    "Put": pb.PutRequest(key=b"k", value=b"anonymous"),
    "DeleteRange": pb.DeleteRangeRequest(key=b"k"),
    "Txn": pb.TxnRequest(success=[pb.RequestOp(request_put=pb.PutRequest(key=b"k", value=b"anonymous"))]),
    "Compact": pb.CompactionRequest(revision=1),
    "Watch": pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"k")),
    "LeaseGrant": pb.LeaseGrantRequest(TTL=60),
    "LeaseRevoke": pb.LeaseRevokeRequest(ID=777),
    "LeaseTimeToLive": pb.LeaseTimeToLiveRequest(ID=1, keys=True),
    "LeaseKeepAlive": pb.LeaseKeepAliveRequest(ID=1),
    "UserAdd": pb.AuthUserAddRequest(name="intruder", password="x"),
    "UserGet": pb.AuthUserGetRequest(name="root"),
    "UserDelete": pb.AuthUserDeleteRequest(name="root"),
    "UserChangePassword": pb.AuthUserChangePasswordRequest(name="root", password="x"),
    "UserGrantRole": pb.AuthUserGrantRoleRequest(user="root", role="root"),
    "UserRevokeRole": pb.AuthUserRevokeRoleRequest(name="root", role="root"),
    "RoleAdd": pb.AuthRoleAddRequest(name="r"),
    "RoleGet": pb.AuthRoleGetRequest(role="root"),
    "RoleDelete": pb.AuthRoleDeleteRequest(role="root"),
    "RoleGrantPermission": pb.AuthRoleGrantPermissionRequest(name="root"),
    "RoleRevokePermission": pb.AuthRoleRevokePermissionRequest(role="root", key=b"k"),
    "MemberAdd": pb.MemberAddRequest(peerURLs=["http://127.0.0.1:1"]),
    "MemberRemove": pb.MemberRemoveRequest(ID=1),
    "MemberUpdate": pb.MemberUpdateRequest(ID=1, peerURLs=["http://127.0.0.1:1"]),
    "MemberPromote": pb.MemberPromoteRequest(ID=1),
    "Authenticate": pb.AuthenticateRequest(name="root", password="guess"),
    "Lock": lockpb.LockRequest(name=b"k"),
    "Unlock": lockpb.UnlockRequest(key=b"k"),
    "Campaign": epb.CampaignRequest(name=b"k", value=b"anonymous"),
    "Proclaim": epb.ProclaimRequest(leader=epb.LeaderKey(name=b"k", key=b"k", rev=1, lease=777), value=b"x"),
    "Resign": epb.ResignRequest(leader=epb.LeaderKey(name=b"k", key=b"k", rev=1, lease=777)),
    "Leader": epb.LeaderRequest(name=b"k"),
    "Observe": epb.LeaderRequest(name=b"k"),
}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RaftkvMember]:
    member = RaftkvMember("m1", tmp_path_factory.mktemp("refusals") / "m1.etcd").start()
    with member.channel() as ch:
        kv, auth = rpc.KVStub(ch), rpc.AuthStub(ch)
        kv.Put(pb.PutRequest(key=b"k", value=b"before"))
        rpc.LeaseStub(ch).LeaseGrant(pb.LeaseGrantRequest(ID=777, TTL=600))
        auth.UserAdd(pb.AuthUserAddRequest(name="root", password="pw"))
        auth.RoleAdd(pb.AuthRoleAddRequest(name="root"))
        auth.UserGrantRole(pb.AuthUserGrantRoleRequest(user="root", role="root"))
        auth.AuthEnable(pb.AuthEnableRequest())
    yield member
    member.stop()


def outcome(channel: grpc.Channel, service: str, name: str, kind: Kind, request_type: type) -> tuple[str, str]:
    method = path(service, name)
    ser, de = request_type.SerializeToString, lambda b: b
    request = SAMPLES.get(name, request_type())
    try:
        if kind == Kind.UNARY:
            channel.unary_unary(method, ser, de)(request, timeout=10)
        elif kind == Kind.SERVER_STREAM:
            list(channel.unary_stream(method, ser, de)(request, timeout=10))
        else:
            responses = channel.stream_stream(method, ser, de)(iter([request]), timeout=3)
            first = next(responses, None)
            responses.cancel()
            if service == "Watch" and first is not None:
                resp = pb.WatchResponse.FromString(first)
                return ("WATCH", resp.cancel_reason if resp.canceled else "created")
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.CANCELLED:
            return ("OK", "")
        return (exc.code().name, exc.details() or "")
    return ("OK", "")


def test_every_method_refuses_an_anonymous_client(secured: RaftkvMember) -> None:
    answered, refused = [], []
    with secured.channel() as ch:
        for service, entries in TABLE.items():
            for name, kind, request_type in entries:
                got = outcome(ch, service, name, kind, request_type)
                key = f"{service}/{name}"
                if key in OPEN:
                    answered.append((key, got))
                    continue
                refused.append(key)
                if key == "Watch/Watch":
                    assert got == ("WATCH", "rpc error: code = InvalidArgument desc = etcdserver: user name is empty")
                else:
                    expected = RELAYED_REFUSALS if service in RELAYING else REFUSALS
                    assert got in expected, f"{key} answered {got} to an anonymous client"
        assert len(refused) >= 25
        # what is open answers without revealing a key
        assert dict(answered)["Auth/Authenticate"] == (
            "INVALID_ARGUMENT",
            "etcdserver: authentication failed, invalid user ID or password",
        )
        token = rpc.AuthStub(ch).Authenticate(pb.AuthenticateRequest(name="root", password="pw")).token
        resp = rpc.KVStub(ch).Range(pb.RangeRequest(key=b"k"), metadata=(("token", token),))
        assert [kv.value for kv in resp.kvs] == [b"before"]  # no anonymous write went through


def test_http_paths_serve_nothing_to_an_anonymous_client(secured: RaftkvMember) -> None:
    import http.client

    for method, target, body in (
        ("POST", "/v3/kv/range", b'{"key": "aw=="}'),
        ("POST", "/v3/kv/put", b'{"key": "aw==", "value": "eA=="}'),
        ("POST", "/v3/auth/user/list", b"{}"),
        ("POST", "/v3/lock/lock", b'{"name": "aw=="}'),
        ("POST", "/v3/election/leader", b'{"name": "aw=="}'),
        ("GET", "/metrics", b""),
        ("GET", "/v3/maintenance/snapshot", b""),
    ):
        conn = http.client.HTTPConnection("127.0.0.1", secured.port, timeout=10)
        try:
            conn.request(method, target, body=body)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        if target == "/metrics":  # etcd serves its metrics to anyone, auth or not
            assert resp.status == 200 and b"etcd_server_has_leader" in data, (target, data)
        else:
            assert resp.status != 200, (target, data)
        assert b"before" not in data and b"YmVmb3Jl" not in data
