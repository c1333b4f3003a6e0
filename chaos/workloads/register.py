"""The ``register`` workload: linearizable reads, writes and compare-and-sets on a few keys at a time.

Each key is a register. Writes and compare-and-sets write unique values (a counter), so a read
names the write it saw. Operations:

- ``read``: a linearizable Range of the key;
- ``write``: a Put;
- ``cas``: a Txn comparing the key's value with the value last seen (or, for a missing key,
  its version with 0), putting a new value on success and reading the key on failure, so that a
  compare that fails says what it found.

Keys are used by ``ops_per_key`` operations, then retired for fresh ones (Jepsen's independent
keys): the checker searches each key separately, and short keys keep the search small. After
the faults are healed every key is read through every member once more.

Checked for linearizability with ``chaos.checker.models.RegisterModel``.
"""

from __future__ import annotations

import functools
from typing import Any

from chaos.checker import linearizable
from chaos.checker.models import RegisterModel
from chaos.history import Operation
from chaos.workloads.base import Channels, Client, Options, Workload, final_reads, ok
from proto.etcdserverpb import rpc_pb2 as pb

PREFIX = "r/"


def _decode(kvs: Any) -> str | None:
    return kvs[0].value.decode() if kvs else None


class Register(Workload):
    name = "register"

    def __init__(self, options: Options, recorder: Any) -> None:
        super().__init__(options, recorder)
        self.active_keys = options.keys or 5
        self.ops_per_key = options.ops_per_key or 400
        self.keys: list[str] = [self._key(i) for i in range(self.active_keys)]
        self.used: dict[str, int] = dict.fromkeys(self.keys, 0)
        self.next_key = self.active_keys
        self.next_value = 0
        self.last_seen: dict[str, str | None] = {}

    def _key(self, n: int) -> str:
        return f"{PREFIX}{self.options.run_id}/{n}"

    def _pick_key(self) -> str:
        i = self.rng.randrange(len(self.keys))
        key = self.keys[i]
        self.used[key] += 1
        if self.used[key] >= self.ops_per_key:
            new = self._key(self.next_key)
            self.next_key += 1
            self.keys[i] = new
            self.used[new] = 0
        return key

    def _value(self) -> str:
        self.next_value += 1
        return str(self.next_value)

    async def operate(self, client: Client) -> None:
        key = self._pick_key()
        roll = self.rng.random()
        if roll < 0.5:
            await self.read(client, key)
        elif roll < 0.8:
            await self.write(client, key)
        else:
            await self.cas(client, key)

    async def read(self, client: Client, key: str) -> str:
        async def body() -> tuple[str, Any]:
            resp = await client.kv.Range(pb.RangeRequest(key=key.encode()), timeout=client.timeout)
            value = _decode(resp.kvs)
            self.last_seen[key] = value
            return ok({"key": key, "value": value})

        outcome, _ = await client.run("read", {"key": key}, body, read_only=True)
        return outcome

    async def write(self, client: Client, key: str) -> str:
        value = self._value()

        async def body() -> tuple[str, Any]:
            await client.kv.Put(pb.PutRequest(key=key.encode(), value=value.encode()), timeout=client.timeout)
            self.last_seen[key] = value
            return ok(None)

        outcome, _ = await client.run("write", {"key": key, "value": value}, body)
        return outcome

    async def cas(self, client: Client, key: str) -> None:
        expect = self.last_seen.get(key)
        new = self._value()
        k = key.encode()
        if expect is None:
            compare = pb.Compare(result=pb.Compare.EQUAL, target=pb.Compare.VERSION, key=k, version=0)
        else:
            compare = pb.Compare(result=pb.Compare.EQUAL, target=pb.Compare.VALUE, key=k, value=expect.encode())
        request = pb.TxnRequest(
            compare=[compare],
            success=[pb.RequestOp(request_put=pb.PutRequest(key=k, value=new.encode()))],
            failure=[pb.RequestOp(request_range=pb.RangeRequest(key=k))],
        )
        inv = {"key": key, "expect": expect, "new": new}

        async def body() -> tuple[str, Any]:
            resp = await client.kv.Txn(request, timeout=client.timeout)
            if resp.succeeded:
                self.last_seen[key] = new
                return ok({**inv, "swapped": True})
            actual = _decode(resp.responses[0].response_range.kvs)
            self.last_seen[key] = actual
            return ok({**inv, "swapped": False, "actual": actual})

        await client.run("cas", inv, body)

    async def final(self, channels: Channels) -> None:
        """Every key ever used, read through every member, one process per member."""
        reads = [functools.partial(self._read_key, key) for key in sorted(self.used)]
        await final_reads(channels, self.recorder, self.options.op_timeout, reads)

    async def _read_key(self, key: str, client: Client) -> str:
        return await self.read(client, key)

    def check(self, ops: list[Operation], budget_s: float) -> dict[str, Any]:
        result = linearizable.check(RegisterModel(), ops, budget_s=budget_s)
        summary = result.summary()
        windows = [k.window for k in result.invalid_keys]
        highlight = [k.fail_op for k in result.invalid_keys[:1] if k.fail_op is not None]
        return {**summary, "windows": windows, "highlight": highlight, "checker": "linearizable (register, per key)"}
