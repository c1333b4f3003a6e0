"""LeaseService in-process over real gRPC: two fake members sharing a fake log, forwarding between them.

No processes and no Raft: a proposal made on either member is applied to both at once, in order,
and the test decides who leads. The lessors count on a fake clock; gRPC runs for real on
127.0.0.1, so forwarding from a follower to the leader's client URL is exercised end to end.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace

import grpc
import pytest

from frontend.server import FrontendServer
from kvstore.apply.codec import Op
from kvstore.auth import AuthStore
from kvstore.errors import EtcdError
from kvstore.lease import apply_lease_checkpoint, apply_lease_grant, apply_lease_revoke
from kvstore.lease.runner import LeaseRunner
from kvstore.membership import MemberInfo
from kvstore.server.lease_service import FORWARDED, IdGenerator, LeaseService, client_address
from kvstore.server.routes import serve
from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc
from tests.lease.helpers import FakeClock, Node

APPLY = {
    Op.LEASE_GRANT: apply_lease_grant,
    Op.LEASE_REVOKE: apply_lease_revoke,
    Op.LEASE_CHECKPOINT: apply_lease_checkpoint,
}


@dataclass
class FakeLog:
    leader: int = 0
    term: int = 2
    commit_index: int = 0


@dataclass
class Cluster:
    log: FakeLog = field(default_factory=FakeLog)
    members: dict[int, FakeMember] = field(default_factory=dict)
    membership: dict[int, MemberInfo] = field(default_factory=dict)

    async def propose(self, op: Op, body: bytes, origin: int) -> object:
        await asyncio.sleep(0)
        results = {}
        for mid, m in self.members.items():
            try:
                results[mid] = m.node.write(lambda w, m=m: APPLY[op](m.node.lessor, w, body))[0]
            except EtcdError as exc:
                results[mid] = exc
        result = results[origin]
        if isinstance(result, EtcdError):
            raise result
        return result


class FakeMember:
    def __init__(self, cluster: Cluster, member_id: int, node: Node, timeout: float = 3.0) -> None:
        self.cluster = cluster
        self.member_id = member_id
        self.cluster_id = 99
        self.node = node
        self.lessor = node.lessor
        self.store = node.store
        self.log = cluster.log
        self.applied_index = 0
        self.cfg = SimpleNamespace(request_timeout_s=timeout)
        self.applier = SimpleNamespace(membership=SimpleNamespace(members=cluster.membership))
        self.lease_runner = LeaseRunner(self, node.lessor, election_timeout=1.0, request_timeout=timeout)
        self.auth = AuthStore(node.store.backend)  # auth off: what the services check first
        cluster.members[member_id] = self

    async def propose(self, op: Op, body: bytes, auth: tuple[str, int] | None = None) -> object:
        return await self.cluster.propose(op, body, self.member_id)

    async def read_barrier(self) -> None:
        return None

    async def check_quota(self, request: object) -> None:
        return None  # no quota: every grant fits

    async def wait_applied(self, index: int) -> None:
        return None

    def fill_header(self, header: pb.ResponseHeader) -> None:
        header.cluster_id = self.cluster_id
        header.member_id = self.member_id
        header.raft_term = self.log.term
        if not header.revision:
            header.revision = self.store.current_rev


@dataclass
class Served:
    member: FakeMember
    service: LeaseService
    server: FrontendServer
    endpoint: str
    channel: grpc.aio.Channel

    @property
    def stub(self) -> rpc_pb2_grpc.LeaseStub:
        return rpc_pb2_grpc.LeaseStub(self.channel)


@pytest.fixture
async def pair(tmp_path):
    """Members 1 (leading, primary) and 2 (following), each serving the Lease service."""
    cluster = Cluster()
    clock = FakeClock()
    served: list[Served] = []
    for mid in (1, 2):
        node = Node.open(tmp_path / f"m{mid}", clock=clock)
        member = FakeMember(cluster, mid, node)
        service = LeaseService(member)  # type: ignore[arg-type]
        server = await serve({"Lease": service})
        port = server.ports[0]
        endpoint = f"127.0.0.1:{port}"
        cluster.membership[mid] = MemberInfo(mid, f"m{mid}", client_urls=[f"http://{endpoint}"])
        served.append(Served(member, service, server, endpoint, grpc.aio.insecure_channel(endpoint)))
    cluster.log.leader = 1
    await served[0].member.lease_runner.step()
    await served[1].member.lease_runner.step()
    yield cluster, clock, served[0], served[1]
    for s in served:
        await s.channel.close()
        await s.service.close()
        await s.server.stop(0)
        await s.member.lease_runner.stop()
        s.member.node.close()


async def keepalive(stub: rpc_pb2_grpc.LeaseStub, *ids: int) -> list[pb.LeaseKeepAliveResponse]:
    call = stub.LeaseKeepAlive()
    for i in ids:
        await call.write(pb.LeaseKeepAliveRequest(ID=i))
    out = [await call.read() for _ in ids]
    await call.done_writing()
    return out


def test_id_generator_is_etcds():
    gen = IdGenerator(0xBDAE9BBC11DD390D, now_ms=0x12_3456_789A)
    first = gen.next()
    assert first >> 48 == 0x390D
    assert first & ((1 << 48) - 1) == (0x12_3456_789A << 8) + 1
    assert gen.next() == first + 1


def test_client_address():
    assert client_address("http://127.0.0.1:2379") == "127.0.0.1:2379"
    assert client_address("http://[::1]:2379") == "[::1]:2379"
    assert client_address("http://localhost") is None


async def test_grant_picks_a_positive_id_before_proposing(pair):
    _, _, leader, follower = pair
    resp = await follower.stub.LeaseGrant(pb.LeaseGrantRequest(TTL=1))
    assert resp.ID > 0 and resp.ID >> 48 == 2  # the proposing member's prefix
    assert resp.TTL == 2
    assert resp.header.member_id == 2
    assert leader.member.lessor.exists(resp.ID) and follower.member.lessor.exists(resp.ID)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await leader.stub.LeaseGrant(pb.LeaseGrantRequest(ID=resp.ID, TTL=5))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.value.details() == "etcdserver: lease already exists"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await leader.stub.LeaseGrant(pb.LeaseGrantRequest(ID=5, TTL=9_000_000_001))
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.OUT_OF_RANGE, "etcdserver: too large lease TTL")


async def test_revoke(pair):
    _, _, leader, follower = pair
    await leader.stub.LeaseGrant(pb.LeaseGrantRequest(ID=7, TTL=10))
    leader.member.node.put(b"k", lease=7)
    follower.member.node.put(b"k", lease=7)
    resp = await follower.stub.LeaseRevoke(pb.LeaseRevokeRequest(ID=7))
    assert resp.header.revision == 3
    assert follower.member.node.keys() == {} == leader.member.node.keys()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await follower.stub.LeaseRevoke(pb.LeaseRevokeRequest(ID=7))
    assert (err.value.code(), err.value.details()) == (
        grpc.StatusCode.NOT_FOUND,
        "etcdserver: requested lease not found",
    )


async def test_keepalive_on_the_leader(pair):
    _, clock, leader, _ = pair
    await leader.stub.LeaseGrant(pb.LeaseGrantRequest(ID=7, TTL=10))
    clock.advance(4)
    resps = await keepalive(leader.stub, 7, 8, 0)
    assert [(r.ID, r.TTL) for r in resps] == [(7, 10), (8, 0), (0, 0)]
    assert resps[0].header.member_id == 1 and resps[0].header.revision == 1
    assert leader.member.lessor.lookup(7).expiry == clock.now + 10


async def test_keepalive_through_a_follower_is_forwarded(pair):
    _, clock, leader, follower = pair
    for i in range(1, 6):
        await leader.stub.LeaseGrant(pb.LeaseGrantRequest(ID=i, TTL=10 * i))
    clock.advance(3)
    resps = await keepalive(follower.stub, 1, 2, 3, 99, 4, 5)
    assert sorted((r.ID, r.TTL) for r in resps) == [(1, 10), (2, 20), (3, 30), (4, 40), (5, 50), (99, 0)]
    assert all(r.header.member_id == 2 for r in resps)
    assert leader.member.lessor.lookup(1).expiry == clock.now + 10  # renewed on the leader
    # a client that stops sending right away still gets its answer
    call = follower.stub.LeaseKeepAlive()
    await call.write(pb.LeaseKeepAliveRequest(ID=2))
    await call.done_writing()
    assert (await call.read()).TTL == 20
    # many at once over the one forwarding stream
    resps = await keepalive(follower.stub, *([1, 2, 3] * 50))
    assert len(resps) == 150 and {r.TTL for r in resps} == {10, 20, 30}


async def test_keepalive_for_an_expired_lease_answers_after_its_revoke(pair):
    _, clock, leader, follower = pair
    await leader.stub.LeaseGrant(pb.LeaseGrantRequest(ID=3, TTL=5))
    clock.advance(6)
    call = follower.stub.LeaseKeepAlive()
    await call.write(pb.LeaseKeepAliveRequest(ID=3))
    read = asyncio.ensure_future(call.read())
    runner = leader.member.lease_runner
    async with asyncio.timeout(30):  # forwarded to the leader, whose renewal found the lease expired
        while not runner.renewals_waiting(3):
            await asyncio.sleep(0.005)
    assert not read.done()  # expired, not yet revoked: the answer waits
    await leader.member.lease_runner.step()  # the expiry loop proposes the revoke
    resp = await asyncio.wait_for(read, 30)
    assert (resp.ID, resp.TTL) == (3, 0)
    await call.done_writing()


async def test_time_to_live(pair):
    _, clock, leader, follower = pair
    await leader.stub.LeaseGrant(pb.LeaseGrantRequest(ID=7, TTL=10))
    for m in (leader, follower):
        m.member.node.put(b"b", lease=7)
        m.member.node.put(b"a", lease=7)
    clock.advance(2.5)
    for s in (leader, follower):
        resp = await s.stub.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=7, keys=True))
        assert (resp.ID, resp.TTL, resp.grantedTTL, list(resp.keys)) == (7, 7, 10, [b"a", b"b"])
        assert resp.header.member_id == s.member.member_id
        resp = await s.stub.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=7))
        assert list(resp.keys) == []
        resp = await s.stub.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=8, keys=True))
        assert (resp.ID, resp.TTL, resp.grantedTTL, list(resp.keys)) == (8, -1, 0, [])
        assert resp.header.revision == 3


async def test_leases_are_listed_locally(pair):
    _, _, leader, follower = pair
    for i in (3, 1, 2):
        await leader.stub.LeaseGrant(pb.LeaseGrantRequest(ID=i, TTL=10 + i))
    resp = await leader.stub.LeaseLeases(pb.LeaseLeasesRequest())
    assert [s.ID for s in resp.leases] == [1, 2, 3]  # by expiry on the primary
    resp = await follower.stub.LeaseLeases(pb.LeaseLeasesRequest())
    assert sorted(s.ID for s in resp.leases) == [1, 2, 3]


async def test_forwarding_follows_a_leader_change(pair):
    cluster, clock, leader, follower = pair
    await leader.stub.LeaseGrant(pb.LeaseGrantRequest(ID=7, TTL=10))
    call = leader.stub.LeaseKeepAlive()  # a client of member 1, which stops leading
    await call.write(pb.LeaseKeepAliveRequest(ID=7))
    assert (await call.read()).TTL == 10
    cluster.log.leader = 2
    cluster.log.term = 3
    await leader.member.lease_runner.step()
    await follower.member.lease_runner.step()
    assert follower.member.lease_runner.is_primary()
    await call.write(pb.LeaseKeepAliveRequest(ID=7))
    resp = await call.read()
    assert (resp.ID, resp.TTL, resp.header.member_id) == (7, 10, 1)
    assert follower.member.lessor.lookup(7).expiry == clock.now + 10
    await call.done_writing()


async def test_forwarded_call_to_a_non_leader_fails_with_not_leader(pair):
    _, _, _, follower = pair
    call = follower.stub.LeaseKeepAlive(metadata=FORWARDED)
    await call.write(pb.LeaseKeepAliveRequest(ID=1))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call.read()
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: not leader")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await follower.stub.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=1), metadata=FORWARDED)
    assert err.value.details() == "etcdserver: not leader"


async def test_no_leader_ends_the_stream(pair):
    cluster, _, leader, follower = pair
    follower.member.cfg.request_timeout_s = 0.3
    follower.service._timeout = 0.3
    cluster.log.leader = 0
    await leader.member.lease_runner.step()
    call = follower.stub.LeaseKeepAlive()
    await call.write(pb.LeaseKeepAliveRequest(ID=1))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call.read()
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader")
