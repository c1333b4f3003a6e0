"""The etcd Cluster service: membership as this member knows it (MemberList; changes are not served yet).

With auth enabled, membership changes are for admins only (etcd's checkMembershipOperationPermission):
``require_admin`` is called first by each of them."""

from __future__ import annotations

from frontend.grpc import ServerCall
from kvstore.server.credentials import needs_auth
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

    async def require_admin(self, call: ServerCall) -> None:
        member = self.member
        if needs_auth(member, call):
            member.auth.check_admin(await member.credentials.resolve(call))

    _member_add = unimplemented("Cluster", "MemberAdd")
    _member_remove = unimplemented("Cluster", "MemberRemove")
    _member_update = unimplemented("Cluster", "MemberUpdate")
    _member_promote = unimplemented("Cluster", "MemberPromote")

    async def MemberAdd(self, request: pb.MemberAddRequest, call: ServerCall) -> pb.MemberAddResponse:
        await self.require_admin(call)
        return self._member_add(request, call)

    async def MemberRemove(self, request: pb.MemberRemoveRequest, call: ServerCall) -> pb.MemberRemoveResponse:
        await self.require_admin(call)
        return self._member_remove(request, call)

    async def MemberUpdate(self, request: pb.MemberUpdateRequest, call: ServerCall) -> pb.MemberUpdateResponse:
        await self.require_admin(call)
        return self._member_update(request, call)

    async def MemberPromote(self, request: pb.MemberPromoteRequest, call: ServerCall) -> pb.MemberPromoteResponse:
        await self.require_admin(call)
        return self._member_promote(request, call)
