"""The etcd Cluster service: MemberList, MemberAdd, MemberRemove, MemberUpdate and MemberPromote.

Changes go through the log (``kvstore.server.reconfig``); responses list every member as etcd does,
by id: learners flagged, members that have not started yet without a name or client URLs.
Headers carry no revision, as etcd's Cluster service's do not.

With auth enabled, membership changes are for admins only (etcd's checkMembershipOperationPermission):
``require_admin`` is called first by each of them (MemberAdd checks its peer URLs before, as etcd's
v3rpc does); MemberList needs no user.
"""

from __future__ import annotations

from collections.abc import Iterable

from frontend.grpc import ServerCall
from kvstore.membership import MemberInfo
from kvstore.server import reconfig
from kvstore.server.credentials import needs_auth
from kvstore.server.member import Member
from proto.etcdserverpb import rpc_pb2 as pb


def fill_members(out: object, members: Iterable[MemberInfo]) -> None:
    for info in sorted(members, key=lambda m: m.id):
        out.add(  # type: ignore[attr-defined]
            ID=info.id, name=info.name, peerURLs=info.peer_urls, clientURLs=info.client_urls, isLearner=info.is_learner
        )


class ClusterService:
    def __init__(self, member: Member) -> None:
        self.member = member

    async def MemberList(self, request: pb.MemberListRequest, call: ServerCall) -> pb.MemberListResponse:
        member = self.member
        if request.linearizable:
            await member.read_barrier()
        resp = pb.MemberListResponse()
        fill_members(resp.members, (member.applier.membership.members or member.known_members).values())
        member.fill_header(resp.header, revision=False)
        return resp

    async def require_admin(self, call: ServerCall) -> None:
        member = self.member
        if needs_auth(member, call):
            member.auth.check_admin(await member.credentials.resolve(call))

    async def MemberAdd(self, request: pb.MemberAddRequest, call: ServerCall) -> pb.MemberAddResponse:
        reconfig.parse_urls(list(request.peerURLs))  # etcd: bad URLs are refused before permissions
        await self.require_admin(call)
        new, members = await reconfig.add_member(self.member, list(request.peerURLs), request.isLearner)
        resp = pb.MemberAddResponse()
        resp.member.ID = new.id
        resp.member.peerURLs.extend(new.peer_urls)
        resp.member.isLearner = new.is_learner
        fill_members(resp.members, members)
        self.member.fill_header(resp.header, revision=False)
        return resp

    async def MemberRemove(self, request: pb.MemberRemoveRequest, call: ServerCall) -> pb.MemberRemoveResponse:
        await self.require_admin(call)
        members = await reconfig.remove_member(self.member, request.ID)
        resp = pb.MemberRemoveResponse()
        fill_members(resp.members, members)
        self.member.fill_header(resp.header, revision=False)
        return resp

    async def MemberUpdate(self, request: pb.MemberUpdateRequest, call: ServerCall) -> pb.MemberUpdateResponse:
        await self.require_admin(call)
        members = await reconfig.update_member(self.member, request.ID, list(request.peerURLs))
        resp = pb.MemberUpdateResponse()
        fill_members(resp.members, members)
        self.member.fill_header(resp.header, revision=False)
        return resp

    async def MemberPromote(self, request: pb.MemberPromoteRequest, call: ServerCall) -> pb.MemberPromoteResponse:
        await self.require_admin(call)
        members = await reconfig.promote_member(self.member, request.ID)
        resp = pb.MemberPromoteResponse()
        fill_members(resp.members, members)
        self.member.fill_header(resp.header, revision=False)
        return resp
