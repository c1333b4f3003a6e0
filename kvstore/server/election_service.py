"""The etcd Election service (``v3electionpb.Election``): Campaign, Proclaim, Leader, Observe, Resign.

Each runs etcd's Election recipe (``kvstore.concurrency.election``) through the member's in-process
client: an election is the keys under ``<name>/``, each under its campaigner's lease, and the
leader is the one created first. Campaign, Proclaim and Resign act for the lease they are given (0:
a fresh lease of 60 s, as etcd's session makes); Proclaim and Resign without a leader key answer
``"leader" field must be provided``. Errors reach the caller as etcd's do: their message with gRPC
code Unknown (``election: not leader``, ``election: no leader``, ``etcdserver: requested lease not
found``, ...). Observe streams the leader's key-value and each change of it, waits while nobody
leads, and ends (status OK) if a read or watch it depends on fails, as etcd's does. Every request
runs with the caller's credentials (``LocalClient.for_call``), as etcd's runs with the caller's context.
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

    async def _leadership(self, client: LocalClient, leader: epb.LeaderKey) -> Leadership:
        lease = await session_lease(client, leader.lease)
        return Leadership(leader.key, leader.rev, lease)

    async def Campaign(self, request: epb.CampaignRequest, call: ServerCall) -> epb.CampaignResponse:
        client = self.client.for_call(call)  # the caller's identity, as etcd's v3election passes its context
        lease = await session_lease(client, request.lease)
        won, header = await election.campaign(client, request.name, lease, request.value)
        return epb.CampaignResponse(
            header=header, leader=epb.LeaderKey(name=request.name, key=won.key, rev=won.rev, lease=won.lease)
        )

    async def Proclaim(self, request: epb.ProclaimRequest, call: ServerCall) -> epb.ProclaimResponse:
        if not request.HasField("leader"):
            raise MissingLeaderKey()
        client = self.client.for_call(call)
        header = await election.proclaim(client, await self._leadership(client, request.leader), request.value)
        return epb.ProclaimResponse(header=header)

    async def Resign(self, request: epb.ResignRequest, call: ServerCall) -> epb.ResignResponse:
        if not request.HasField("leader"):
            raise MissingLeaderKey()
        client = self.client.for_call(call)
        header = await election.resign(client, await self._leadership(client, request.leader))
        return epb.ResignResponse(header=header)

    async def Leader(self, request: epb.LeaderRequest, call: ServerCall) -> epb.LeaderResponse:
        header, kv = await election.leader(self.client.for_call(call), request.name)
        return epb.LeaderResponse(header=header, kv=kv)

    async def Observe(self, request: epb.LeaderRequest, call: ServerCall) -> None:
        async for header, kv in election.observe(self.client.for_call(call), request.name):
            await call.write(epb.LeaderResponse(header=header, kv=kv))
