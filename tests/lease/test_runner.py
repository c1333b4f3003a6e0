"""LeaseRunner driven step by step: a fake member (log view, proposals applied at once) and a fake clock."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from kvstore.apply.codec import Op
from kvstore.errors import EtcdError, LeaseNotFound, NoLeader
from kvstore.lease import NotPrimary, apply_lease_checkpoint, apply_lease_grant, apply_lease_revoke
from kvstore.lease.runner import LeaseRunner
from proto.etcdserverpb import rpc_pb2 as pb
from tests.lease.helpers import Node

ME = 1
OTHER = 2


@dataclass
class FakeLog:
    leader: int = 0
    term: int = 1
    commit_index: int = 0


class FakeHost:
    """A member whose proposals commit and apply at once (unless told to fail)."""

    member_id = ME

    def __init__(self, node: Node) -> None:
        self.node = node
        self.log = FakeLog()
        self.applied_index = 0
        self.proposed: list[tuple[Op, object]] = []
        self.fail_with: EtcdError | None = None
        self.barriers = 0
        self.barrier_error: EtcdError | None = None

    async def propose(self, op: Op, body: bytes) -> object:
        req = {
            Op.LEASE_REVOKE: pb.LeaseRevokeRequest,
            Op.LEASE_CHECKPOINT: pb.LeaseCheckpointRequest,
            Op.LEASE_GRANT: pb.LeaseGrantRequest,
        }[op].FromString(body)
        self.proposed.append((op, req))
        await asyncio.sleep(0)  # the log takes a moment
        if self.fail_with is not None:
            raise self.fail_with
        fn = {Op.LEASE_REVOKE: apply_lease_revoke, Op.LEASE_CHECKPOINT: apply_lease_checkpoint}.get(
            op, apply_lease_grant
        )
        return self.node.write(lambda w: fn(self.node.lessor, w, body))[0]

    async def read_barrier(self) -> None:
        self.barriers += 1
        if self.barrier_error is not None:
            raise self.barrier_error
        self.applied_index = self.log.commit_index

    async def wait_applied(self, index: int) -> None:
        await asyncio.sleep(0)
        self.applied_index = max(self.applied_index, index)

    def revokes(self) -> list[int]:
        return [req.ID for op, req in self.proposed if op == Op.LEASE_REVOKE]

    def checkpoints(self) -> list[tuple[int, int]]:
        return [
            (c.ID, c.remaining_TTL) for op, req in self.proposed if op == Op.LEASE_CHECKPOINT for c in req.checkpoints
        ]


@pytest.fixture
def node(tmp_path):
    n = Node.open(tmp_path / "db", checkpoint_interval=60.0)
    yield n
    n.close()


@pytest.fixture
def host(node):
    return FakeHost(node)


@pytest.fixture
async def runner(host, node):
    r = LeaseRunner(host, node.lessor, election_timeout=1.0, request_timeout=7.0, tick=0.1, revoke_rate=100)
    yield r
    await r.stop()


async def settle(runner: LeaseRunner) -> None:
    """Lets every task the runner started finish."""
    for _ in range(20):
        tasks = list(runner._tasks)
        if not tasks:
            await asyncio.sleep(0)
            continue
        await asyncio.gather(*tasks, return_exceptions=True)


async def lead(host: FakeHost, runner: LeaseRunner, term: int = 2) -> None:
    host.log.leader = ME
    host.log.term = term
    await runner.step()


# ---- leadership ----


async def test_follower_does_nothing(host, runner, node):
    node.grant(1, 5)
    host.log.leader = OTHER
    node.clock.advance(100)
    await runner.step()
    assert not node.lessor.primary
    assert not runner.is_primary()
    assert host.proposed == []
    assert host.barriers == 0


async def test_promote_after_read_barrier_with_extension(host, runner, node):
    node.grant(1, 5)
    await lead(host, runner)
    assert host.barriers == 1
    assert runner.is_primary()
    assert node.lessor.lookup(1).expiry == node.clock.now + 5 + 1.0


async def test_promotion_postponed_when_barrier_fails(host, runner, node):
    host.barrier_error = NoLeader()
    await lead(host, runner)
    assert not runner.is_primary()
    host.barrier_error = None
    await runner.step()
    assert runner.is_primary()


async def test_no_promotion_if_leadership_lost_during_barrier(host, runner, node):
    async def barrier_then_lose() -> None:
        host.log.leader = OTHER

    host.read_barrier = barrier_then_lose  # type: ignore[method-assign]
    await lead(host, runner)
    assert not node.lessor.primary


async def test_demote_when_leadership_moves(host, runner, node):
    node.grant(1, 5)
    await lead(host, runner)
    host.log.leader = OTHER
    host.log.term = 3
    assert not runner.is_primary()  # at once, before the next step
    await runner.step()
    assert not node.lessor.primary
    node.clock.advance(100)
    await runner.step()
    assert host.revokes() == []


async def test_new_term_while_leading_repromotes(host, runner, node):
    node.grant(1, 5)
    await lead(host, runner, term=2)
    node.clock.advance(3)
    await lead(host, runner, term=4)
    assert runner.is_primary()
    assert host.barriers == 2
    assert node.lessor.lookup(1).expiry == node.clock.now + 6  # counted again from the new promotion


async def test_wait_primary(host, runner, node):
    waiter = asyncio.ensure_future(runner.wait_primary(5))
    await asyncio.sleep(0)
    assert not waiter.done()
    await lead(host, runner)
    assert await waiter is True
    assert await runner.wait_primary(0.01) is True


async def test_wait_primary_times_out(runner):
    assert await runner.wait_primary(0.001) is False


# ---- expiry ----


async def test_expired_lease_is_revoked_through_the_log(host, runner, node):
    await lead(host, runner)
    node.grant(1, 5)
    node.put(b"k1", lease=1)
    node.put(b"k2", lease=1)
    node.clock.advance(4.9)
    await runner.step()
    assert host.revokes() == []
    node.clock.advance(0.1)
    await runner.step()
    await settle(runner)
    assert host.revokes() == [1]
    assert node.keys() == {}
    assert not node.lessor.exists(1)
    await runner.step()
    await settle(runner)
    assert host.revokes() == [1]


async def test_revoke_not_proposed_by_a_deposed_leader(host, runner, node):
    await lead(host, runner)
    node.grant(1, 5)
    node.clock.advance(10)
    await runner.step()  # found: the revoke task is spawned
    host.log.leader = OTHER  # ... and leadership moves before it runs
    await settle(runner)
    assert host.revokes() == []


async def test_failed_revoke_is_retried_after_the_request_timeout(host, runner, node):
    await lead(host, runner)
    node.grant(1, 5)
    node.clock.advance(5)
    host.fail_with = NoLeader()
    await runner.step()
    await settle(runner)
    assert host.revokes() == [1]
    host.fail_with = None
    node.clock.advance(6.9)
    await runner.step()
    await settle(runner)
    assert host.revokes() == [1]
    node.clock.advance(0.1)
    await runner.step()
    await settle(runner)
    assert host.revokes() == [1, 1]
    assert not node.lessor.exists(1)


async def test_revoke_of_an_already_revoked_lease_is_quiet(host, runner, node):
    await lead(host, runner)
    node.grant(1, 5)
    node.clock.advance(5)
    host.fail_with = LeaseNotFound()
    await runner.step()
    await settle(runner)
    assert host.revokes() == [1]


async def test_revokes_are_rate_limited(host, runner, node):
    await lead(host, runner)
    for i in range(1, 31):
        node.grant(i, 5)
    node.clock.advance(5)
    await runner.step()  # revoke_rate 100/s * tick 0.1 s = 10 per step
    await settle(runner)
    assert host.revokes() == list(range(1, 11))
    await runner.step()
    await settle(runner)
    assert host.revokes() == list(range(1, 21))


async def test_pending_revokes_are_bounded(host, node):
    runner = LeaseRunner(host, node.lessor, election_timeout=1.0, request_timeout=7.0, max_pending_revokes=3)
    try:
        await lead(host, runner)
        for i in range(1, 11):
            node.grant(i, 5)
        node.clock.advance(5)
        gate = asyncio.Event()
        original = host.propose

        async def slow(op: Op, body: bytes) -> object:
            await gate.wait()
            return await original(op, body)

        host.propose = slow  # type: ignore[method-assign]
        await runner.step()
        await runner.step()
        assert len(runner._revoking) == 3
        gate.set()
        await settle(runner)
        await runner.step()
        await settle(runner)
        assert len(node.lessor) == 4
    finally:
        await runner.stop()


# ---- checkpoints ----


async def test_checkpoints_are_proposed(host, runner, node):
    await lead(host, runner)
    node.grant(1, 600)
    node.grant(2, 10)
    node.clock.advance(60)
    await runner.step()
    await settle(runner)
    assert host.checkpoints() == [(1, 540)]
    assert node.lessor.lookup(1).remaining_ttl == 540


async def test_checkpointed_lease_keeps_its_time_across_leaders(host, runner, node):
    node.grant(1, 600)
    await lead(host, runner, term=2)
    node.clock.advance(60)
    await runner.step()
    await settle(runner)
    host.log.leader = OTHER
    await runner.step()
    node.clock.advance(100)  # an election later
    await lead(host, runner, term=3)
    assert node.lessor.lookup(1).expiry == node.clock.now + 541 + 1.0  # 600 + 1 - 60 left, not 600 again


# ---- renewals ----


async def test_renew_now(host, runner, node):
    node.grant(1, 5)
    assert runner.renew_now(1) is None  # not primary
    await lead(host, runner)
    assert runner.renew_now(1) == 5
    assert runner.renew_now(9) == 0
    host.log.commit_index = 10  # something committed is not applied yet: the slow path must wait
    assert runner.renew_now(1) is None
    assert await runner.renew(1) == 5
    assert host.applied_index == 10


async def test_renew_unknown_after_waiting_for_apply(host, runner, node):
    await lead(host, runner)
    host.log.commit_index = 3
    assert await runner.renew(77) == 0


async def test_renew_not_primary(host, runner, node):
    with pytest.raises(NotPrimary):
        await runner.renew(1)
    with pytest.raises(NotPrimary):
        await runner.lookup(1)


async def test_renew_of_expired_lease_waits_for_its_revoke(host, runner, node):
    await lead(host, runner)
    node.grant(1, 5)
    node.clock.advance(5)
    assert runner.renew_now(1) is None
    renewal = asyncio.ensure_future(runner.renew(1))
    await asyncio.sleep(0)
    assert not renewal.done()
    await runner.step()
    await settle(runner)
    assert await renewal == 0


async def test_renew_waiting_on_a_revoke_fails_over_on_demote(host, runner, node):
    await lead(host, runner)
    node.grant(1, 5)
    node.clock.advance(5)
    renewal = asyncio.ensure_future(runner.renew(1))
    await asyncio.sleep(0)
    host.log.leader = OTHER
    await runner.step()
    with pytest.raises(NotPrimary):
        await renewal


async def test_renew_clears_a_checkpoint(host, runner, node):
    node.grant(1, 600)
    node.write(lambda w: node.lessor.checkpoint(w.txn, 1, 100))
    await lead(host, runner)
    assert runner.renew_now(1) == 600
    await settle(runner)
    assert host.checkpoints() == [(1, 0)]
    assert node.lessor.lookup(1).remaining_ttl == 0
    assert runner.renew_now(1) == 600
    await settle(runner)
    assert host.checkpoints() == [(1, 0)]


async def test_lookup_waits_for_apply(host, runner, node):
    await lead(host, runner)
    node.grant(1, 5)
    host.log.commit_index = 4
    lease = await runner.lookup(1)
    assert lease is not None and lease.id == 1
    assert host.applied_index == 4
    assert await runner.lookup(2) is None


async def test_run_loop_and_stop(host, node):
    runner = LeaseRunner(host, node.lessor, election_timeout=1.0, request_timeout=7.0, tick=0.001)
    host.log.leader = ME
    task = asyncio.ensure_future(runner.run())
    async with asyncio.timeout(30):  # a bound on a hang: a busy loop only takes longer
        while not runner.is_primary():
            await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not node.lessor.primary
