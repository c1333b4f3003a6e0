"""What a member serves over HTTP/1.1: etcd's gateway bindings and endpoints, on the client port and
on ``--listen-metrics-urls``.

The client port (etcd's ``serveCtx``): paths under ``/v3beta/`` are read as ``/v3/``; every answer
carries etcd's default CORS headers (``--cors`` is ``*``) and ``OPTIONS`` is answered 200 at once;
``/v3/...`` goes to the JSON gateway (``--enable-grpc-gateway``, on by default; off, such paths are
Go's 404 like any other); the rest to ``kvstore.server.endpoints``. A metrics listener serves only
``/metrics``, ``/health``, ``/livez`` and ``/readyz``, with no CORS headers, as etcd's does.

``BINDINGS`` are the HTTP annotations of etcd 3.5's rpc.proto (and its lock and election gateways,
whose services raftkv does not serve: they answer UNIMPLEMENTED, as their gRPC paths do). They name
gRPC method paths of the table in ``kvstore.server.routes``: a service added there (Auth) is served
here at once, through the same handlers. ``HIDDEN`` are fields of raftkv's protos (etcd 3.6's) that
etcd 3.5 does not have, so its gateway neither writes nor reads them.
"""

from __future__ import annotations

from collections.abc import Awaitable

from frontend.gateway import Binding, Codec, Gateway
from frontend.http1 import Exchange
from kvstore.server.endpoints import Endpoints

CORS = (
    ("Access-Control-Allow-Headers", "accept, content-type, authorization"),
    ("Access-Control-Allow-Methods", "POST, GET, OPTIONS, PUT, DELETE"),
    ("Access-Control-Allow-Origin", "*"),
)

_RPC = {
    "KV": {"range": "Range", "put": "Put", "deleterange": "DeleteRange", "txn": "Txn", "compaction": "Compact"},
    "Lease": {
        "grant": "LeaseGrant",
        "revoke": "LeaseRevoke",
        "keepalive": "LeaseKeepAlive",
        "timetolive": "LeaseTimeToLive",
        "leases": "LeaseLeases",
    },
    "Cluster": {
        "member/add": "MemberAdd",
        "member/remove": "MemberRemove",
        "member/update": "MemberUpdate",
        "member/list": "MemberList",
        "member/promote": "MemberPromote",
    },
    "Maintenance": {
        "alarm": "Alarm",
        "status": "Status",
        "defragment": "Defragment",
        "hash": "Hash",
        "hashkv": "HashKV",
        "snapshot": "Snapshot",
        "transfer-leadership": "MoveLeader",
        "downgrade": "Downgrade",
    },
    "Auth": {
        "enable": "AuthEnable",
        "disable": "AuthDisable",
        "status": "AuthStatus",
        "authenticate": "Authenticate",
        "user/add": "UserAdd",
        "user/get": "UserGet",
        "user/list": "UserList",
        "user/delete": "UserDelete",
        "user/changepw": "UserChangePassword",
        "user/grant": "UserGrantRole",
        "user/revoke": "UserRevokeRole",
        "role/add": "RoleAdd",
        "role/get": "RoleGet",
        "role/list": "RoleList",
        "role/delete": "RoleDelete",
        "role/grant": "RoleGrantPermission",
        "role/revoke": "RoleRevokePermission",
    },
}
_PREFIX = {"KV": "kv", "Lease": "lease", "Cluster": "cluster", "Maintenance": "maintenance", "Auth": "auth"}


def _bindings() -> list[Binding]:
    out = [Binding("/v3/watch", "/etcdserverpb.Watch/Watch")]
    for service, paths in _RPC.items():
        for sub, method in paths.items():
            out.append(Binding(f"/v3/{_PREFIX[service]}/{sub}", f"/etcdserverpb.{service}/{method}"))
    for sub, method in (("revoke", "LeaseRevoke"), ("timetolive", "LeaseTimeToLive"), ("leases", "LeaseLeases")):
        out.append(Binding(f"/v3/kv/lease/{sub}", f"/etcdserverpb.Lease/{method}"))  # the older paths etcd keeps
    out += [Binding(f"/v3/lock/{m.lower()}", f"/v3lockpb.Lock/{m}") for m in ("Lock", "Unlock")]
    out += [
        Binding(f"/v3/election/{m.lower()}", f"/v3electionpb.Election/{m}")
        for m in ("Campaign", "Proclaim", "Leader", "Observe", "Resign")
    ]
    return out


BINDINGS = _bindings()

HIDDEN = (
    ("etcdserverpb.StatusResponse", "storageVersion"),
    ("etcdserverpb.StatusResponse", "dbSizeQuota"),
    ("etcdserverpb.StatusResponse", "downgradeInfo"),
    ("etcdserverpb.HashKVResponse", "hash_revision"),
    ("etcdserverpb.SnapshotResponse", "version"),
)


def etcd_codec() -> Codec:
    return Codec(HIDDEN)


class ClientPortApp:
    """The client port's HTTP/1.1: etcd's access controller in front of the gateway and the endpoints."""

    def __init__(self, gateway: Gateway | None, endpoints: Endpoints) -> None:
        self.gateway = gateway
        self.endpoints = endpoints

    def __call__(self, ex: Exchange) -> Awaitable[None] | None:
        request = ex.request
        if request.path.startswith("/v3beta/"):
            request.path = "/v3/" + request.path[len("/v3beta/") :]
        if request.method == "OPTIONS":
            ex.respond(200, CORS)
            return None
        if self.gateway is not None and request.path.startswith("/v3/"):
            return self.gateway(ex)
        return self.endpoints(ex)
