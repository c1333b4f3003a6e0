"""The corruption checks' decisions (etcd's corrupt.go) on a fake member: what raises CORRUPT, what only
warns, and what refuses a start."""

from __future__ import annotations

import asyncio

import pytest

from kvstore.corrupt import PeriodicCheck, check_once, initial_check
from kvstore.errors import Compacted, FutureRev, StartupError
from tests.virtual_time import on_virtual_time


class Host:
    def __init__(self, local: list[tuple[int, int, int]], peers: dict[int, object]) -> None:
        self.member_id = 1
        self.local = list(local)  # successive answers of the local hash
        self.peers = peers  # peer -> (hash, rev, crev) or an exception to raise
        self.alarms = 0
        self.barriers = 0
        self.leader = True

    def is_leader(self) -> bool:
        return self.leader

    def peer_ids(self) -> list[int]:
        return sorted(self.peers)

    async def local_hash_kv(self, revision: int) -> tuple[int, int, int]:
        return self.local.pop(0) if len(self.local) > 1 else self.local[0]

    async def peer_hash_kv(self, peer: int, revision: int) -> tuple[int, int, int]:
        answer = self.peers[peer]
        if isinstance(answer, BaseException):
            raise answer
        return answer  # type: ignore[return-value]

    async def read_barrier(self) -> None:
        self.barriers += 1

    async def raise_corrupt(self) -> None:
        self.alarms += 1


async def test_agreeing_members_raise_nothing() -> None:
    host = Host([(111, 10, 5)], {2: (111, 10, 5), 3: (999, 9, 4), 4: OSError("down"), 5: FutureRev()})
    assert await check_once(host) == []  # member 3 was compacted elsewhere: its hash is not comparable
    assert host.alarms == 0 and host.barriers == 1


@pytest.mark.parametrize(
    ("local", "peer", "why"),
    [
        ([(111, 10, 5)], (222, 10, 5), "hash 222"),  # same compaction, another hash
        ([(111, 10, 5)], (111, 11, 5), "revision 11"),  # a follower ahead of the leader
        ([(111, 10, 5)], (111, 10, 6), "compact revision 6"),
        ([(111, 10, 5), (333, 10, 5)], (111, 10, 5), "this member changed"),  # own hash moved, same revision
    ],
)
async def test_mismatches_raise_corrupt(local: list[tuple[int, int, int]], peer: tuple[int, ...], why: str) -> None:
    host = Host(local, {2: peer})
    found = await check_once(host)
    assert host.alarms == 1 and any(why in f for f in found), found


async def test_initial_check_refuses_a_member_whose_data_differs() -> None:
    await initial_check(Host([(1, 10, 5)], {2: (1, 10, 5), 3: Compacted(), 4: OSError("down")}))
    await initial_check(Host([(1, 10, 5)], {2: (2, 10, 7)}))  # different compaction: not comparable
    with pytest.raises(StartupError, match="found data inconsistency with peers"):
        await initial_check(Host([(1, 10, 5)], {2: (2, 10, 5)}))


@on_virtual_time
async def test_the_periodic_check_runs_only_on_the_leader() -> None:
    host = Host([(1, 10, 5)], {2: (2, 10, 5)})
    host.leader = False
    task = asyncio.create_task(PeriodicCheck(host, 0.01).run())
    await asyncio.sleep(0.105)  # ten periods of virtual time
    assert host.alarms == 0
    host.leader = True
    async with asyncio.timeout(10):
        while not host.alarms:
            await asyncio.sleep(0.01)
    task.cancel()
