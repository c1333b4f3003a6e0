"""The ``append`` workload: multi-key transactions appending unique values to lists, and multi-key reads.

Each key holds a list of integers (``b"3 17 42"``). A transaction is one to three
micro-operations on distinct keys, each ``["append", key, value]`` or ``["r", key, None]``
(Elle's list-append). It runs as etcd clients run optimistic transactions:

1. one Txn of Range requests reads every key involved, at one revision (linearizable);
2. if the transaction only reads, that is its result; otherwise one Txn guarded by
   ``mod_revision(key) == seen`` for every key involved puts each appended key's list plus
   its new value. A guard that fails means nothing was written: the transaction ``fail``s.

The reads of a committed transaction are what step 1 saw: the guard proves those keys were
unchanged when the writes took effect, so reads and writes happened at one point in time.

Keys take ``ops_per_key`` appends and then retire for fresh ones. After the faults are healed
every key is read through every member. Checked twice: strict serializability across keys
(``chaos.checker.listappend``, Elle's inference) and linearizability of each key's projection
(``chaos.checker.models.ListAppendModel`` with the Wing-Gong-Lowe search).
"""

from __future__ import annotations

import functools
from typing import Any

import grpc

from chaos.checker import linearizable, listappend
from chaos.checker.models import ListAppendModel
from chaos.history import Operation
from chaos.workloads.base import Channels, Client, NotApplied, Options, Workload, failed, final_reads, ok
from proto.etcdserverpb import rpc_pb2 as pb

PREFIX = "a/"
READ_BATCH = 8  # keys per read transaction in the final reads


def decode(kvs: Any) -> tuple[list[int], int]:
    if not kvs:
        return [], 0
    raw = kvs[0].value.decode()
    return [int(x) for x in raw.split()], kvs[0].mod_revision


def encode(values: list[int]) -> bytes:
    return " ".join(map(str, values)).encode()


class Append(Workload):
    name = "append"

    def __init__(self, options: Options, recorder: Any) -> None:
        super().__init__(options, recorder)
        self.active_keys = options.keys or 6
        self.ops_per_key = options.ops_per_key or 200
        self.keys = [self._key(i) for i in range(self.active_keys)]
        self.appends: dict[str, int] = dict.fromkeys(self.keys, 0)
        self.next_key = self.active_keys
        self.next_value = 0

    def _key(self, n: int) -> str:
        return f"{PREFIX}{self.options.run_id}/{n}"

    def _plan(self) -> list[list[Any]]:
        n = self.rng.randint(1, min(3, len(self.keys)))
        slots = self.rng.sample(range(len(self.keys)), n)
        mops: list[list[Any]] = []
        for slot in slots:
            key = self.keys[slot]
            if self.rng.random() < 0.5:
                self.next_value += 1
                mops.append(["append", key, self.next_value])
                self.appends[key] += 1
                if self.appends[key] >= self.ops_per_key:
                    fresh = self._key(self.next_key)
                    self.next_key += 1
                    self.keys[slot] = fresh
                    self.appends[fresh] = 0
            else:
                mops.append(["r", key, None])
        return mops

    async def operate(self, client: Client) -> None:
        await self.transact(client, self._plan())

    async def transact(self, client: Client, mops: list[list[Any]]) -> str:
        keys = [m[1] for m in mops]
        read_only = all(m[0] == "r" for m in mops)

        async def body() -> tuple[str, Any]:
            snapshot = pb.TxnRequest(
                success=[pb.RequestOp(request_range=pb.RangeRequest(key=k.encode())) for k in keys]
            )
            try:
                resp = await client.kv.Txn(snapshot, timeout=client.timeout)
            except grpc.aio.AioRpcError as err:
                raise NotApplied(err) from err  # nothing written yet
            seen = {k: decode(r.response_range.kvs) for k, r in zip(keys, resp.responses, strict=True)}
            out = [[f, k, seen[k][0] if f == "r" else v] for f, k, v in mops]
            if read_only:
                return ok({"txn": out})
            guard = [
                pb.Compare(result=pb.Compare.EQUAL, target=pb.Compare.MOD, key=k.encode(), mod_revision=seen[k][1])
                for k in keys
            ]
            puts = [
                pb.RequestOp(request_put=pb.PutRequest(key=k.encode(), value=encode([*seen[k][0], v])))
                for f, k, v in mops
                if f == "append"
            ]
            resp = await client.kv.Txn(pb.TxnRequest(compare=guard, success=puts), timeout=client.timeout)
            return ok({"txn": out}) if resp.succeeded else failed({"txn": out, "guard": "failed"})

        outcome, _ = await client.run("txn", {"txn": mops}, body, read_only=read_only)
        return outcome

    async def final(self, channels: Channels) -> None:
        keys = sorted(self.appends)
        batches = [[["r", k, None] for k in keys[i : i + READ_BATCH]] for i in range(0, len(keys), READ_BATCH)]
        reads = [functools.partial(self._read_batch, batch) for batch in batches]
        await final_reads(channels, self.recorder, self.options.op_timeout, reads)

    async def _read_batch(self, mops: list[list[Any]], client: Client) -> str:
        return await self.transact(client, mops)

    def check(self, ops: list[Operation], budget_s: float) -> dict[str, Any]:
        serial = listappend.check(ops)
        per_key = linearizable.check(ListAppendModel(), ops, budget_s=budget_s)
        verdicts = {serial.verdict, per_key.verdict}
        verdict = "invalid" if "invalid" in verdicts else "unknown" if "unknown" in verdicts else "valid"
        windows: list[list[int]] = []
        highlight: list[int] = []
        explanation = ""
        if serial.anomalies:
            a = serial.anomalies[0]
            windows.append(sorted(set(a.ops)))
            highlight = list(a.ops)
            explanation = f"{a.type}: {a.explanation}"
        windows.extend(k.window for k in per_key.invalid_keys)
        if not highlight:
            highlight = [k.fail_op for k in per_key.invalid_keys[:1] if k.fail_op is not None]
        return {
            "verdict": verdict,
            "checker": "strict serializability (Elle list-append) + per-key linearizability (list model)",
            "serializability": serial.summary(),
            "per_key": per_key.summary(),
            "windows": windows,
            "highlight": highlight,
            "explanation": explanation,
        }
