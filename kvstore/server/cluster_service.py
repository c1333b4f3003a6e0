"""The etcd Cluster service: membership as this member knows it."""

from __future__ import annotations

import grpc

from kvstore.server.member import Member
from kvstore.server.rpc import etcd_status, unimplemented
from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc

Ctx = grpc.aio.ServicerContext


class ClusterService(rpc_pb2_grpc.ClusterServicer):
    def __init__(self, member: Member) -> None:
        self.member = member

    @etcd_status
    async def MemberList(self, request: pb.MemberListRequest, context: Ctx) -> pb.MemberListResponse:
        member = self.member
        cfg = member.cfg
        resp = pb.MemberListResponse()
        for member_id, (name, peer_urls) in sorted(cfg.members.items()):
            m = resp.members.add(ID=member_id, name=name, peerURLs=peer_urls)
            if member_id == member.member_id:
                m.clientURLs.extend(cfg.advertise_client_urls)
        member.fill_header(resp.header)
        return resp

    MemberAdd = unimplemented("Cluster", "MemberAdd")
    MemberRemove = unimplemented("Cluster", "MemberRemove")
    MemberUpdate = unimplemented("Cluster", "MemberUpdate")
    MemberPromote = unimplemented("Cluster", "MemberPromote")
