"""The simulated clients: what they do to the cluster, recorded as a Jepsen history for the checkers.

Histories are recorded as ``chaos`` records them (``chaos.history``: invoke, then ok / fail / info,
on virtual time), in the formats its workloads use, so the chaos toolkit's checkers read them as
they are:

- **register** keys ``r/N`` (``chaos.workloads.register``): linearizable reads (Range), writes (Put)
  and compare-and-sets (Txn) of unique values; a key retires after ``ops_per_key`` operations;
- **watch** keys ``w/kN`` (``chaos.workloads.watch``): puts, two-key puts in one Txn, deletes, each
  with the revision it got; watchers open streams on random members (from now, from the start, or
  resuming after the last revision they saw), ask for progress, close, resume; a compactor
  compacts behind the head, and now and then exactly at the revision of a recent deletion;
  serializable reads (``sread``) of the same keys, each with the revision it was served at;
- **leases** (``chaos.checker.lease``): grants with the ids the clients choose, keys put under them,
  keep-alives (a follower's renewal is forwarded to the leader, as ``LeaseService`` forwards it),
  revokes, leases left to expire, and linearizable reads of their keys.

After the faults are healed: every register key is read through every member; every member's
watch keys are read and watched from the compaction point to the head; once every abandoned
lease has had time to expire, the lease keys are read through the leader.

Outcomes follow ``chaos.workloads.base``: ``fail`` when the request certainly did nothing (the member
was down, a read failed, etcd's INVALID_ARGUMENT, FAILED_PRECONDITION or OUT_OF_RANGE), ``info``
when it may have happened (a timeout, any other error), and the worker goes on as a new process.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

from chaos.checker.lease import FINAL_PROCESS as LEASE_FINAL
from chaos.history import FAIL, INFO, OK, Recorder
from chaos.workloads.base import FINAL_PROCESS
from chaos.workloads.watch import event_json, prefix_end
from kvstore.errors import EtcdError, NotLeader
from kvstore.lease.lessor import NotPrimary
from proto.etcdserverpb import rpc_pb2 as pb
from tests.sim.clients import ClientNet, NotSent, SimCall

if TYPE_CHECKING:
    from tests.sim.member import SimMember
    from tests.sim.run import Simulation

DEFINITE = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OUT_OF_RANGE)
WATCH_PREFIX = "w/"
COMPACTOR = 2_000_000
LEASE_PROCESS = 3_000_000


@dataclass
class WorkloadOptions:
    writers: int = 4
    op_gap: float = 0.1  # mean seconds between two operations of a worker
    op_timeout: float = 3.0
    register_keys: int = 3
    ops_per_key: int = 30
    watch_keys: int = 4
    watchers: int = 3
    lease_workers: int = 2
    compact_every: float = 1.5


@dataclass
class Worker:
    id: int
    process: int
    stride: int
    member: int
    rng: random.Random


class Workload:
    def __init__(self, sim: Simulation, opts: WorkloadOptions) -> None:
        self.sim = sim
        self.opts = opts
        loop = sim.loop
        self.loop = loop
        self.rec = Recorder(clock=lambda: round(loop.time() * 1e9))
        self.net = ClientNet(loop, sim.rng_for("clients/net"))
        self.rng = sim.rng_for("clients")
        n = opts.register_keys
        self.reg_keys = [f"r/{i}" for i in range(n)]
        self.reg_used = dict.fromkeys(self.reg_keys, 0)
        self.next_reg = n
        self.last_seen: dict[str, str | None] = {}
        self.values = 0
        self.watch_keys = [f"{WATCH_PREFIX}k{i}" for i in range(opts.watch_keys)]
        self.head = 1  # the highest revision a write was acknowledged at
        self.compacted = 0
        self.deletes: list[int] = []  # revisions of acknowledged deletions
        self.lease_keys: list[str] = []
        self.lease_ids = 0
        self.max_ttl = 0
        self.last_keepalive = 0.0  # when the last keep-alive of any lease was sent
        self.errors: list[str] = []

    @property
    def members(self) -> list[SimMember]:
        return self.sim.members

    def _value(self) -> str:
        self.values += 1
        return str(self.values)

    # ---- one operation ----

    async def run(
        self,
        w: Worker,
        f: str,
        value: Any,
        invoke: Callable[[SimMember], Any],
        done: Callable[[Any], tuple[str, Any]],
        *,
        read_only: bool = False,
        member: SimMember | None = None,
    ) -> tuple[str, Any]:
        m = member or self.members[w.member]
        inv = self.rec.invoke(w.process, f, value, node=m.name)
        try:
            resp = await self.net.call(m, lambda: invoke(m), self.opts.op_timeout)
        except NotSent:
            self.rec.fail(inv, error="connection refused")
            return FAIL, None
        except (EtcdError, TimeoutError) as exc:
            sure = isinstance(exc, EtcdError) and exc.code in DEFINITE
            error = exc.message if isinstance(exc, EtcdError) else "timeout"
            if read_only or sure:
                self.rec.fail(inv, error=error)
                return FAIL, None
            self.rec.info(inv, error=error)
            w.process += w.stride
            return INFO, None
        type_, out = done(resp)
        self.rec.complete(inv, type_, out)
        return type_, out

    def _pick_member(self, w: Worker) -> None:
        if w.rng.random() < 0.2:
            w.member = w.rng.randrange(len(self.members))

    # ---- the workers ----

    async def worker(self, w: Worker, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(w.rng.expovariate(1 / self.opts.op_gap))
            if stop.is_set():
                return
            self._pick_member(w)
            roll = w.rng.random()
            if roll < 0.25:
                await self.reg_read(w, self._reg_key(w))
            elif roll < 0.4:
                await self.reg_write(w, self._reg_key(w))
            elif roll < 0.5:
                await self.reg_cas(w, self._reg_key(w))
            elif roll < 0.68:
                await self.watch_put(w, [w.rng.choice(self.watch_keys)])
            elif roll < 0.76:
                await self.watch_put(w, w.rng.sample(self.watch_keys, 2))
            elif roll < 0.86:
                await self.watch_delete(w, w.rng.choice(self.watch_keys))
            else:
                await self.sread(w, w.rng.choice(self.watch_keys))

    def _reg_key(self, w: Worker) -> str:
        i = w.rng.randrange(len(self.reg_keys))
        key = self.reg_keys[i]
        self.reg_used[key] += 1
        if self.reg_used[key] >= self.opts.ops_per_key:
            new = f"r/{self.next_reg}"
            self.next_reg += 1
            self.reg_keys[i] = new
            self.reg_used[new] = 0
        return key

    # ---- register ----

    async def reg_read(self, w: Worker, key: str, member: SimMember | None = None) -> str:
        def done(resp: pb.RangeResponse) -> tuple[str, Any]:
            value = resp.kvs[0].value.decode() if resp.kvs else None
            self.last_seen[key] = value
            return OK, {"key": key, "value": value}

        outcome, _ = await self.run(
            w,
            "read",
            {"key": key},
            lambda m: m.kv.Range(pb.RangeRequest(key=key.encode()), SimCall()),
            done,
            read_only=True,
            member=member,
        )
        return outcome

    async def reg_write(self, w: Worker, key: str) -> None:
        value = self._value()

        def done(resp: pb.PutResponse) -> tuple[str, Any]:
            self.last_seen[key] = value
            return OK, None

        req = pb.PutRequest(key=key.encode(), value=value.encode())
        await self.run(w, "write", {"key": key, "value": value}, lambda m: m.kv.Put(req, SimCall()), done)

    async def reg_cas(self, w: Worker, key: str) -> None:
        expect = self.last_seen.get(key)
        new = self._value()
        k = key.encode()
        if expect is None:
            compare = pb.Compare(result=pb.Compare.EQUAL, target=pb.Compare.VERSION, key=k, version=0)
        else:
            compare = pb.Compare(result=pb.Compare.EQUAL, target=pb.Compare.VALUE, key=k, value=expect.encode())
        req = pb.TxnRequest(
            compare=[compare],
            success=[pb.RequestOp(request_put=pb.PutRequest(key=k, value=new.encode()))],
            failure=[pb.RequestOp(request_range=pb.RangeRequest(key=k))],
        )
        inv = {"key": key, "expect": expect, "new": new}

        def done(resp: pb.TxnResponse) -> tuple[str, Any]:
            if resp.succeeded:
                self.last_seen[key] = new
                return OK, {**inv, "swapped": True}
            kvs = resp.responses[0].response_range.kvs
            actual = kvs[0].value.decode() if kvs else None
            self.last_seen[key] = actual
            return OK, {**inv, "swapped": False, "actual": actual}

        await self.run(w, "cas", inv, lambda m: m.kv.Txn(req, SimCall()), done)

    # ---- watch keys ----

    def _saw(self, revision: int) -> None:
        self.head = max(self.head, revision)

    async def watch_put(self, w: Worker, keys: list[str]) -> None:
        puts = [[k, self._value()] for k in keys]
        if len(puts) == 1:
            k, v = puts[0]
            req: Any = pb.PutRequest(key=k.encode(), value=v.encode())

            def invoke(m: SimMember) -> Any:
                return m.kv.Put(req, SimCall())
        else:
            req = pb.TxnRequest(
                success=[pb.RequestOp(request_put=pb.PutRequest(key=k.encode(), value=v.encode())) for k, v in puts]
            )

            def invoke(m: SimMember) -> Any:
                return m.kv.Txn(req, SimCall())

        def done(resp: Any) -> tuple[str, Any]:
            self._saw(resp.header.revision)
            return OK, {"puts": puts, "revision": resp.header.revision}

        await self.run(w, "put", {"puts": puts}, invoke, done)

    async def watch_delete(self, w: Worker, key: str) -> None:
        req = pb.DeleteRangeRequest(key=key.encode())

        def done(resp: pb.DeleteRangeResponse) -> tuple[str, Any]:
            self._saw(resp.header.revision)
            if resp.deleted:
                self.deletes.append(resp.header.revision)
            return OK, {"key": key, "deleted": resp.deleted, "revision": resp.header.revision}

        await self.run(w, "delete", {"key": key}, lambda m: m.kv.DeleteRange(req, SimCall()), done)

    async def sread(self, w: Worker, key: str) -> None:
        req = pb.RangeRequest(key=key.encode(), serializable=True)

        def invoke(m: SimMember) -> Any:
            return (m.incarnation, m.kv.Range(req, SimCall()))

        def done(answer: tuple[int, pb.RangeResponse]) -> tuple[str, Any]:
            incarnation, resp = answer
            kv = resp.kvs[0] if resp.kvs else None
            return OK, {
                "key": key,
                "value": kv.value.decode() if kv else None,
                "mod": kv.mod_revision if kv else 0,
                "revision": resp.header.revision,
                "member": f"{self.members[w.member].name}#{incarnation}",
            }

        await self.run(w, "sread", {"key": key}, invoke, done, read_only=True)

    async def compactor(self, stop: asyncio.Event) -> None:
        rng = self.sim.rng_for("clients/compactor")
        w = Worker(COMPACTOR, COMPACTOR, 1, 0, rng)
        while not stop.is_set():
            await asyncio.sleep(rng.uniform(0.5, 1.5) * self.opts.compact_every)
            if stop.is_set():
                return
            recent = [r for r in self.deletes[-5:] if r > self.compacted]
            # now and then exactly at a deletion (etcd-io/etcd#18089's shape), else behind the head
            target = rng.choice(recent) if recent and rng.random() < 0.5 else self.head - rng.randint(3, 40)
            if target <= max(self.compacted, 1):
                continue
            w.member = rng.randrange(len(self.members))
            req = pb.CompactionRequest(revision=target, physical=rng.random() < 0.3)

            def done(resp: Any, rev: int = target) -> tuple[str, Any]:
                self.compacted = max(self.compacted, rev)
                return OK, {"revision": rev}

            await self.run(w, "compact", {"revision": target}, lambda m, r=req: m.kv.Compact(r, SimCall()), done)

    # ---- watchers ----

    def _scope(self, i: int) -> tuple[bytes, bytes, bool]:
        prefix = WATCH_PREFIX.encode()
        kind = i % 3
        if kind == 0:
            return prefix, prefix_end(prefix), False
        if kind == 1:
            return prefix, prefix_end(prefix), True
        return self.watch_keys[i % len(self.watch_keys)].encode(), b"", True

    async def watcher(self, i: int, stop: asyncio.Event) -> None:
        rng = self.sim.rng_for(f"clients/watcher{i}")
        key, end, prev_kv = self._scope(i)
        last = 0
        session = 0
        while not stop.is_set():
            session += 1
            m = rng.choice(self.members)
            roll = rng.random()
            if last and roll < 0.8:
                start = last + 1
            elif roll < 0.9:
                start = 1
            else:
                start = 0
            got = await self.session(
                f"watcher-{i}", session, m, key, end, prev_kv, start, rng.uniform(0.3, 3.0), stop, rng
            )
            last = got or last
            await asyncio.sleep(rng.uniform(0.0, 0.3))

    async def session(
        self,
        process: str,
        session: int,
        m: SimMember,
        key: bytes,
        end: bytes,
        prev_kv: bool,
        start: int,
        duration: float,
        stop: asyncio.Event | None,
        rng: random.Random,
        until: int = 0,
    ) -> int:
        """One watch stream on m; records what arrives; returns the last revision known complete (0: none)."""
        rec = self.rec
        base = {"watcher": process, "session": session}

        def note(kind: str, **fields: Any) -> None:
            rec.ok(rec.invoke(process, "watch", {**base, "kind": kind, **fields}, node=m.name))

        note("open", key=key.decode(), range_end=end.decode(), start=start, prev_kv=prev_kv)
        proc = m.process
        if not m.up or proc is None or not proc.alive or m.watch is None:
            note("close", reason="error: connection refused")
            return 0
        call = SimCall(self.net)
        handler = proc.spawn(self.loop, m.watch.Watch(call))
        handler.add_done_callback(self._handler_done)
        call.send(
            pb.WatchRequest(
                create_request=pb.WatchCreateRequest(key=key, range_end=end, start_revision=start, prev_kv=prev_kv)
            )
        )
        loop = self.loop
        deadline = loop.time() + duration
        next_progress = loop.time() + rng.uniform(0.1, duration)
        complete = 0
        reason = "closed"
        while True:
            now = loop.time()
            if (stop is not None and stop.is_set()) or now >= deadline:
                break
            gone = not proc.alive or handler.done()
            if not gone and now >= next_progress:
                next_progress = now + 0.5 if until else deadline + 1
                call.send(pb.WatchRequest(progress_request=pb.WatchProgressRequest()))
            if gone and call.responses.empty():
                reason = "error: the stream broke"
                break
            try:
                data = await asyncio.wait_for(call.responses.get(), min(0.25, max(0.01, deadline - now)))
            except TimeoutError:
                continue
            assert data is not None
            item = pb.WatchResponse.FromString(data)
            events = [event_json(ev) for ev in item.events]
            progress = not events and not item.created and not item.canceled
            note(
                "recv",
                header=item.header.revision,
                created=item.created,
                canceled=item.canceled,
                compact=item.compact_revision,
                cancel_reason=item.cancel_reason,
                progress=progress,
                events=events,
            )
            if item.canceled:
                reason = "canceled"
                if item.compact_revision:
                    complete = item.compact_revision - 1
                break
            if events:
                complete = max(complete, events[-1][3])
            if progress:
                complete = max(complete, item.header.revision)
            if until and complete >= until:
                break
        if proc.alive and not handler.done():
            handler.cancel()
        note("close", reason=reason)
        return complete

    def _handler_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, EtcdError):
            self.errors.append(f"a Watch handler raised {exc!r}")

    # ---- leases ----

    async def lease_worker(self, i: int, stop: asyncio.Event) -> None:
        rng = self.sim.rng_for(f"clients/lease{i}")
        w = Worker(LEASE_PROCESS + i, LEASE_PROCESS + i, 1000, i % len(self.members), rng)
        while not stop.is_set():
            self._pick_member(w)
            self.lease_ids += 1
            lease_id = (i + 1) << 32 | self.lease_ids
            ttl = rng.choice((2, 3, 4))
            self.max_ttl = max(self.max_ttl, ttl)
            grant = pb.LeaseGrantRequest(ID=lease_id, TTL=ttl)
            outcome, granted = await self.run(
                w,
                "lease-grant",
                {"lease": lease_id, "ttl": ttl},
                lambda m, r=grant: m.lease.LeaseGrant(r, SimCall()),
                lambda resp, lid=lease_id: (OK, {"lease": lid, "ttl": resp.TTL}),
            )
            if outcome != OK:
                await asyncio.sleep(0.2)
                continue
            ttl = granted["ttl"]
            keys = [f"l/{lease_id:x}/{j}" for j in range(rng.randint(1, 2))]
            for key in keys:
                value = self._value()
                req = pb.PutRequest(key=key.encode(), value=value.encode(), lease=lease_id)
                outcome, _ = await self.run(
                    w,
                    "lease-put",
                    {"key": key, "value": value, "lease": lease_id},
                    lambda m, r=req: m.kv.Put(r, SimCall()),
                    lambda resp: (OK, {"revision": resp.header.revision}),
                )
                if outcome != FAIL:
                    self.lease_keys.append(key)
            until = self.loop.time() + rng.uniform(0.5, 6.0)
            alive = True
            while alive and not stop.is_set() and self.loop.time() < until:
                await asyncio.sleep(ttl / 3 * rng.uniform(0.5, 1.0))
                self._pick_member(w)
                if rng.random() < 0.3 and keys:
                    await self.lease_read(w, rng.choice(keys))
                self.last_keepalive = self.loop.time()
                outcome, out = await self.keepalive(w, lease_id)
                alive = not (outcome == OK and out["ttl"] <= 0)
            if alive and not stop.is_set() and rng.random() < 0.4:
                self._pick_member(w)
                revoke = pb.LeaseRevokeRequest(ID=lease_id)
                await self.run(
                    w,
                    "lease-revoke",
                    {"lease": lease_id},
                    lambda m, r=revoke: m.lease.LeaseRevoke(r, SimCall()),
                    lambda resp: (OK, None),
                )
            # otherwise the lease is left to expire; a reader looks at its keys now and then
            for _ in range(2):
                if stop.is_set() or not keys:
                    break
                await asyncio.sleep(rng.uniform(0.1, 1.5 * ttl))
                await self.lease_read(w, rng.choice(keys))

    async def lease_read(self, w: Worker, key: str, member: SimMember | None = None) -> None:
        def done(resp: pb.RangeResponse) -> tuple[str, Any]:
            kv = resp.kvs[0] if resp.kvs else None
            return OK, {"key": key, "value": kv.value.decode() if kv else None, "lease": kv.lease if kv else 0}

        await self.run(
            w,
            "lease-read",
            {"key": key},
            lambda m: m.kv.Range(pb.RangeRequest(key=key.encode()), SimCall()),
            done,
            read_only=True,
            member=member,
        )

    async def keepalive(self, w: Worker, lease_id: int) -> tuple[str, Any]:
        """A renewal on the worker's member; a follower forwards it to the leader (LeaseService's way)."""
        timeout = self.opts.op_timeout

        async def renew(m: SimMember, forwarded: bool) -> tuple[str, int]:
            member = m.member
            assert member is not None
            runner = member.lease_runner
            if not runner.is_primary():
                if member.log.leader == member.member_id:
                    await runner.wait_primary(timeout)
                elif forwarded:
                    raise NotLeader()
                else:
                    return "forward", member.log.leader
            try:
                return "ttl", await runner.renew(lease_id)
            except NotPrimary:
                if forwarded:
                    raise NotLeader() from None
                return "forward", member.log.leader

        m = self.members[w.member]
        inv = self.rec.invoke(w.process, "lease-keepalive", {"lease": lease_id}, node=m.name)
        try:
            kind, value = await self.net.call(m, lambda: renew(m, False), timeout)
            if kind == "forward":
                leader = next((x for x in self.members if x.id == value), None)
                if leader is None:
                    raise EtcdError("etcdserver: no leader")
                kind, value = await self.net.call(leader, lambda: renew(leader, True), timeout)
        except (NotSent, EtcdError, TimeoutError) as exc:
            self.rec.info(inv, error=str(exc) or "timeout")
            w.process += w.stride
            return INFO, None
        out = {"lease": lease_id, "ttl": value}
        self.rec.ok(inv, out)
        return OK, out

    # ---- after the faults ----

    async def final(self, leader: SimMember) -> None:
        """Register keys through every member; the watch keys' final state and history on every member."""
        members = self.members
        rng = self.sim.rng_for("clients/final")

        async def register_through(i: int) -> None:
            w = Worker(FINAL_PROCESS + i, FINAL_PROCESS + i, 1000, i, rng)
            misses = 0
            for key in sorted(self.reg_used):
                misses = 0 if await self.reg_read(w, key, members[i]) == OK else misses + 1
                if misses >= 2:
                    return

        await asyncio.gather(*(register_through(i) for i in range(len(members))))
        prefix = WATCH_PREFIX.encode()
        heads = await asyncio.gather(*(self._final_read(i, prefix) for i in range(len(members))))
        head = max([h for h in heads if h is not None] + [self.head])
        await asyncio.gather(*(self._final_watch(i, prefix, head, rng) for i in range(len(members))))

    async def _final_read(self, i: int, prefix: bytes) -> int | None:
        w = Worker(FINAL_PROCESS + 100 + i, FINAL_PROCESS + 100 + i, 1000, i, self.rng)
        req = pb.RangeRequest(key=prefix, range_end=prefix_end(prefix))
        revision: int | None = None

        def done(resp: pb.RangeResponse) -> tuple[str, Any]:
            nonlocal revision
            kvs = [
                [kv.key.decode(), kv.value.decode(), kv.mod_revision, kv.create_revision, kv.version] for kv in resp.kvs
            ]
            revision = resp.header.revision
            return OK, {"kvs": kvs, "revision": revision}

        await self.run(
            w, "final-read", {"prefix": WATCH_PREFIX}, lambda m: m.kv.Range(req, SimCall()), done, read_only=True
        )
        return revision

    async def _final_watch(self, i: int, prefix: bytes, head: int, rng: random.Random) -> None:
        m = self.members[i]
        start = max(1, self.compacted)
        for session in (1, 2, 3):
            complete = await self.session(
                f"final-watcher-{m.name}", session, m, prefix, prefix_end(prefix), True, start, 30.0, None, rng, head
            )
            if complete >= head or complete < start:
                return
            start = complete + 1

    async def lease_final(self, leader: SimMember) -> None:
        """Every lease key, read through the leader once abandoned leases have had time to expire."""
        w = Worker(LEASE_FINAL, LEASE_FINAL, 1000, self.members.index(leader), self.rng)
        for key in sorted(set(self.lease_keys)):
            await self.lease_read(w, key, leader)
            await asyncio.sleep(0)

    def tasks(self, stop: asyncio.Event) -> list[Awaitable[None]]:
        o = self.opts
        workers = [
            Worker(i, i, o.writers, i % len(self.members), self.sim.rng_for(f"clients/worker{i}"))
            for i in range(o.writers)
        ]
        jobs: list[Awaitable[None]] = [self.worker(w, stop) for w in workers]
        jobs += [self.watcher(i, stop) for i in range(o.watchers)]
        jobs += [self.lease_worker(i, stop) for i in range(o.lease_workers)]
        if o.compact_every > 0:
            jobs.append(self.compactor(stop))
        return jobs
