"""The dispatch table: every etcd method path raftkv answers, its kind, handler and request type.

Paths and request types are etcd's (``etcdserverpb``, and ``v3lockpb`` and ``v3electionpb`` for the
Lock and Election services: ``PACKAGES``); requests are decoded with the nesting guard of
``proto.wire``. A path not in the table answers UNIMPLEMENTED (``frontend.grpc``). A member's
table refuses what a learner may not serve while it is one (``kvstore.server.learner``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from frontend.grpc import Kind, Method
from frontend.protocol import FrontendConfig
from frontend.server import FrontendServer
from kvstore.server.auth_service import AuthService
from kvstore.server.cluster_service import ClusterService
from kvstore.server.election_service import ElectionService
from kvstore.server.kv_service import KVService
from kvstore.server.learner import learner_guard
from kvstore.server.lease_service import LeaseService
from kvstore.server.local_client import LocalClient
from kvstore.server.lock_service import LockService
from kvstore.server.maintenance_service import MaintenanceService
from kvstore.server.require_leader import leader_guard
from kvstore.server.rpc import error_status
from kvstore.server.watch_service import WatchService
from proto.etcdserverpb import rpc_pb2 as pb
from proto.v3electionpb import v3election_pb2 as epb
from proto.v3lockpb import v3lock_pb2 as lockpb
from proto.wire import parser

U, S, B = Kind.UNARY, Kind.SERVER_STREAM, Kind.BIDI

TABLE: dict[str, list[tuple[str, Kind, Any]]] = {
    "KV": [
        ("Range", U, pb.RangeRequest),
        ("Put", U, pb.PutRequest),
        ("DeleteRange", U, pb.DeleteRangeRequest),
        ("Txn", U, pb.TxnRequest),
        ("Compact", U, pb.CompactionRequest),
    ],
    "Watch": [("Watch", B, pb.WatchRequest)],
    "Auth": [
        ("AuthEnable", U, pb.AuthEnableRequest),
        ("AuthDisable", U, pb.AuthDisableRequest),
        ("AuthStatus", U, pb.AuthStatusRequest),
        ("Authenticate", U, pb.AuthenticateRequest),
        ("UserAdd", U, pb.AuthUserAddRequest),
        ("UserGet", U, pb.AuthUserGetRequest),
        ("UserList", U, pb.AuthUserListRequest),
        ("UserDelete", U, pb.AuthUserDeleteRequest),
        ("UserChangePassword", U, pb.AuthUserChangePasswordRequest),
        ("UserGrantRole", U, pb.AuthUserGrantRoleRequest),
        ("UserRevokeRole", U, pb.AuthUserRevokeRoleRequest),
        ("RoleAdd", U, pb.AuthRoleAddRequest),
        ("RoleGet", U, pb.AuthRoleGetRequest),
        ("RoleList", U, pb.AuthRoleListRequest),
        ("RoleDelete", U, pb.AuthRoleDeleteRequest),
        ("RoleGrantPermission", U, pb.AuthRoleGrantPermissionRequest),
        ("RoleRevokePermission", U, pb.AuthRoleRevokePermissionRequest),
    ],
    "Lease": [
        ("LeaseGrant", U, pb.LeaseGrantRequest),
        ("LeaseRevoke", U, pb.LeaseRevokeRequest),
        ("LeaseKeepAlive", B, pb.LeaseKeepAliveRequest),
        ("LeaseTimeToLive", U, pb.LeaseTimeToLiveRequest),
        ("LeaseLeases", U, pb.LeaseLeasesRequest),
    ],
    "Cluster": [
        ("MemberAdd", U, pb.MemberAddRequest),
        ("MemberRemove", U, pb.MemberRemoveRequest),
        ("MemberUpdate", U, pb.MemberUpdateRequest),
        ("MemberList", U, pb.MemberListRequest),
        ("MemberPromote", U, pb.MemberPromoteRequest),
    ],
    "Maintenance": [
        ("Alarm", U, pb.AlarmRequest),
        ("Status", U, pb.StatusRequest),
        ("Defragment", U, pb.DefragmentRequest),
        ("Hash", U, pb.HashRequest),
        ("HashKV", U, pb.HashKVRequest),
        ("Snapshot", S, pb.SnapshotRequest),
        ("MoveLeader", U, pb.MoveLeaderRequest),
        ("Downgrade", U, pb.DowngradeRequest),
    ],
    "Lock": [
        ("Lock", U, lockpb.LockRequest),
        ("Unlock", U, lockpb.UnlockRequest),
    ],
    "Election": [
        ("Campaign", U, epb.CampaignRequest),
        ("Proclaim", U, epb.ProclaimRequest),
        ("Leader", U, epb.LeaderRequest),
        ("Observe", S, epb.LeaderRequest),
        ("Resign", U, epb.ResignRequest),
    ],
}
# the proto package of each service (its gRPC path is /<package>.<service>/<method>)
PACKAGES: dict[str, str] = {"Lock": "v3lockpb", "Election": "v3electionpb"}
DEFAULT_PACKAGE = "etcdserverpb"


def path(service: str, name: str) -> str:
    return f"/{PACKAGES.get(service, DEFAULT_PACKAGE)}.{service}/{name}"


def methods(
    services: dict[str, object],
    is_learner: Callable[[], bool] | None = None,
    has_leader: Callable[[], bool] | None = None,
) -> dict[str, Method]:
    """The table for services by name ("KV", "Watch", ...): their methods bound to the instances.

    With is_learner, every method is refused while it answers True (``kvstore.server.learner``);
    with has_leader, a ``hasleader`` call is refused while it answers False
    (``kvstore.server.require_leader``).
    """
    table: dict[str, Method] = {}
    for service, entries in TABLE.items():
        instance = services.get(service)
        if instance is None:
            continue
        for name, kind, request_type in entries:
            handler = getattr(instance, name)
            if is_learner is not None:
                handler = learner_guard(name, kind, handler, is_learner)
            if has_leader is not None:
                handler = leader_guard(name, kind, handler, has_leader)
            table[path(service, name)] = Method(kind, handler, parser(request_type))
    return table


def member_services(member: Any) -> tuple[dict[str, object], LeaseService, LocalClient]:
    """Every service of a member, its Lease service and the in-process client of Lock and Election
    (both have background work to close when the member stops)."""
    lease = LeaseService(member)
    kv = KVService(member)
    local = LocalClient(member, kv, lease)
    services: dict[str, object] = {
        "KV": kv,
        "Watch": WatchService(member),
        "Lease": lease,
        "Cluster": ClusterService(member),
        "Maintenance": MaintenanceService(member),
        "Auth": AuthService(member),
        "Lock": LockService(local),
        "Election": ElectionService(local),
    }
    return services, lease, local


async def serve(services: dict[str, object], host: str = "127.0.0.1", port: int = 0, **config: Any) -> FrontendServer:
    """A started front end serving the given services (tests and benchmarks; a member uses app.py)."""
    server = FrontendServer(methods(services), FrontendConfig(**config), error_status=error_status)
    await server.listen(host, port)
    return server
