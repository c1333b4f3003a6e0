"""The etcd Cluster service: membership as this member knows it (MemberList; changes are not served yet)."""

from __future__ import annotations

from frontend.grpc import ServerCall
from kvstore.server.member import Member
from kvstore.server.rpc import unimplemented
from proto.etcdserverpb import rpc_pb2 as pb


class ClusterService:
    def __init__(self, member: Member) -> None:
        self.member = member

    async def MemberList(self, request: pb.MemberListRequest, call: ServerCall) -> pb.MemberListResponse:
        member = self.member
        if request.linearizable:
            await member.read_barrier()
        resp = pb.MemberListResponse()
        members = member.applier.membership.members or member.known_members
        for member_id, info in sorted(members.items()):
            resp.members.add(
                ID=member_id,
                name=info.name,
                peerURLs=info.peer_urls,
                clientURLs=info.client_urls,
                isLearner=info.is_learner,
            )
        member.fill_header(resp.header, revision=False)
        return resp

    MemberAdd = unimplemented("Cluster", "MemberAdd")
    MemberRemove = unimplemented("Cluster", "MemberRemove")
    MemberUpdate = unimplemented("Cluster", "MemberUpdate")
    MemberPromote = unimplemented("Cluster", "MemberPromote")
