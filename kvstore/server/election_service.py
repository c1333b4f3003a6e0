"""The etcd Election service (``v3electionpb.Election``): Campaign, Proclaim, Leader, Observe, Resign.

Each runs etcd's Election recipe (``kvstore.concurrency.election``) through the member's in-process
client: an election is the keys under ``<name>/``, each under its campaigner's lease, and the
leader is the one created first. Campaign, Proclaim and Resign act for the lease they are given (0:
a fresh lease of 60 s, as etcd's session makes); Proclaim and Resign without a leader key answer
``"leader" field must be provided``. Errors reach the caller as etcd's do: their message with gRPC
code Unknown (``election: not leader``, ``election: no leader``, ``etcdserver: requested lease not
found``, ...). Observe streams the leader's key-value and each change of it, waits while nobody
leads, and ends (status OK) if a read or watch it depends on fails, as etcd's does.
"""

from __future__ import annotations

from frontend.grpc import ServerCall
from kvstore.concurrency import election
from kvstore.concurrency.election import Leadership
from kvstore.concurrency.session import session_lease
from kvstore.errors import MissingLeaderKey
from kvstore.server.local_client import LocalClient
from proto.v3electionpb import v3election_pb2 as epb


class ElectionService:
    def __init__(self, client: LocalClient) -> None:
        self.client = client

    async def _leadership(self, leader: epb.LeaderKey) -> Leadership:
        lease = await session_lease(self.client, leader.lease)
        return Leadership(leader.key, leader.rev, lease)

    async def Campaign(self, request: epb.CampaignRequest, call: ServerCall) -> epb.CampaignResponse:
        lease = await session_lease(self.client, request.lease)
        won, header = await election.campaign(self.client, request.name, lease, request.value)
        return epb.CampaignResponse(
            header=header, leader=epb.LeaderKey(name=request.name, key=won.key, rev=won.rev, lease=won.lease)
        )

    async def Proclaim(self, request: epb.ProclaimRequest, call: ServerCall) -> epb.ProclaimResponse:
        if not request.HasField("leader"):
            raise MissingLeaderKey()
        header = await election.proclaim(self.client, await self._leadership(request.leader), request.value)
        return epb.ProclaimResponse(header=header)

    async def Resign(self, request: epb.ResignRequest, call: ServerCall) -> epb.ResignResponse:
        if not request.HasField("leader"):
            raise MissingLeaderKey()
        header = await election.resign(self.client, await self._leadership(request.leader))
        return epb.ResignResponse(header=header)

    async def Leader(self, request: epb.LeaderRequest, call: ServerCall) -> epb.LeaderResponse:
        header, kv = await election.leader(self.client, request.name)
        return epb.LeaderResponse(header=header, kv=kv)

    async def Observe(self, request: epb.LeaderRequest, call: ServerCall) -> None:
        async for header, kv in election.observe(self.client, request.name):
            await call.write(epb.LeaderResponse(header=header, kv=kv))
