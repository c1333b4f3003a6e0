"""The etcd Maintenance service: Status and alarm queries (what etcdctl endpoint status/health use)."""

from __future__ import annotations

from frontend.grpc import GrpcError, ServerCall, StatusCode
from kvstore.server.member import VERSION, Member
from kvstore.server.rpc import unimplemented
from proto.etcdserverpb import rpc_pb2 as pb


class MaintenanceService:
    def __init__(self, member: Member) -> None:
        self.member = member

    def Status(self, request: pb.StatusRequest, call: ServerCall) -> pb.StatusResponse:
        member = self.member
        backend = member.backend
        resp = pb.StatusResponse(
            version=VERSION,
            dbSize=backend.size(),
            dbSizeInUse=backend.size_in_use(),
            leader=member.log.leader,
            raftIndex=member.log.commit_index,
            raftTerm=member.log.term,
            raftAppliedIndex=member.applied_index,
            dbSizeQuota=member.cfg.quota_backend_bytes,
            isLearner=getattr(member.log, "is_learner", False),
        )
        member.fill_header(resp.header)
        return resp

    def Alarm(self, request: pb.AlarmRequest, call: ServerCall) -> pb.AlarmResponse:
        if request.action != pb.AlarmRequest.GET:
            raise GrpcError(StatusCode.UNIMPLEMENTED, "raftkv: raising or clearing alarms is not implemented")
        return pb.AlarmResponse()  # no alarm is ever raised yet; etcd's answer to GET has no header

    Defragment = unimplemented("Maintenance", "Defragment")
    Hash = unimplemented("Maintenance", "Hash")
    HashKV = unimplemented("Maintenance", "HashKV")

    async def MoveLeader(self, request: pb.MoveLeaderRequest, call: ServerCall) -> pb.MoveLeaderResponse:
        member = self.member
        transfer = getattr(member.log, "transfer_leader", None)
        if transfer is None:
            raise GrpcError(StatusCode.UNIMPLEMENTED, "raftkv: this member's log cannot move leadership")
        await transfer(request.targetID)
        resp = pb.MoveLeaderResponse()
        member.fill_header(resp.header)
        return resp

    Downgrade = unimplemented("Maintenance", "Downgrade")

    async def Snapshot(self, request: pb.SnapshotRequest, call: ServerCall) -> None:
        raise GrpcError(StatusCode.UNIMPLEMENTED, "raftkv: Maintenance.Snapshot is not implemented")
