"""A flood of wrong passwords does not stall a member: other clients are served all along.

Hundreds of Authenticate calls with wrong passwords at once (bcrypt at etcd's cost 10, tens of
milliseconds of CPU each) while another client reads: every read is answered, each guess is
either refused as a wrong password or turned away at once with ``too many requests`` (the member
checks a bounded number of passwords at a time), and the right password still works.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc as rpc
from tests.procs import RaftkvMember

pytestmark = pytest.mark.integration


async def flood(endpoint: str) -> tuple[dict[str, int], int, str]:
    async with grpc.aio.insecure_channel(endpoint) as ch:
        auth, kv = rpc.AuthStub(ch), rpc.KVStub(ch)
        token = (await auth.Authenticate(pb.AuthenticateRequest(name="root", password="rootpw"))).token
        md = (("token", token),)

        async def guess(i: int) -> str:
            try:
                await auth.Authenticate(pb.AuthenticateRequest(name="root", password=f"guess-{i}"), timeout=60)
            except grpc.aio.AioRpcError as exc:
                return exc.details() or ""
            return "accepted"

        async def reads() -> int:
            served = 0
            for _ in range(100):
                resp = await kv.Range(pb.RangeRequest(key=b"k"), metadata=md, timeout=10)
                served += resp.kvs[0].value == b"v"
            return served

        guesses = [asyncio.ensure_future(guess(i)) for i in range(300)]
        served = await reads()
        outcomes: dict[str, int] = {}
        for result in await asyncio.gather(*guesses):
            outcomes[result] = outcomes.get(result, 0) + 1
        ok = (await auth.Authenticate(pb.AuthenticateRequest(name="root", password="rootpw"), timeout=30)).token
        return outcomes, served, ok


def test_wrong_passwords_at_a_high_rate(tmp_path: Path) -> None:
    member = RaftkvMember("m1", tmp_path / "m1.etcd").start()
    try:
        with member.channel() as ch:
            a = rpc.AuthStub(ch)
            rpc.KVStub(ch).Put(pb.PutRequest(key=b"k", value=b"v"))
            a.UserAdd(pb.AuthUserAddRequest(name="root", password="rootpw"))
            a.RoleAdd(pb.AuthRoleAddRequest(name="root"))
            a.UserGrantRole(pb.AuthUserGrantRoleRequest(user="root", role="root"))
            a.AuthEnable(pb.AuthEnableRequest())
        outcomes, served, token = asyncio.run(flood(member.endpoint))
    finally:
        member.stop()
    assert served == 100
    assert set(outcomes) <= {
        "etcdserver: authentication failed, invalid user ID or password",
        "etcdserver: too many requests",
    }, outcomes
    assert outcomes.get("etcdserver: too many requests", 0) > 0  # the bound is what kept it responsive
    assert token
