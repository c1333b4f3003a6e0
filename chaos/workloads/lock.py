"""The ``lock`` workload: etcd locks as clientv3/concurrency makes them, used with and without fencing.

Each worker has a session (a lease kept alive every TTL/3) and loops: acquire the lock, do its
critical section, release. The lock is etcd's Mutex:

- acquire: a Txn creates ``<lock>/<lease id>`` under the session's lease if it does not exist;
  the key's create revision is the worker's place in line and its **fencing token**. The owner
  is the key with the lowest create revision; until that is us, wait for the key just ahead of
  us to be deleted (a Watch from the revision we looked at), then check again;
- release: delete the key.

With ``via=service`` the lock is taken through etcd's Lock service instead (``v3lockpb.Lock``, which
runs the same recipe inside the server): Lock with the session's lease answers the key, a Range
of it gives the fencing token (its create revision; a key already gone means the session expired),
and Unlock releases it. The critical section and the checks are the same.

The critical section updates two list resources with a read-modify-write each:

- ``unfenced``: read the list, append an entry, write it back, trusting the lock;
- ``fenced``: the same, but both the read and the write are Txns guarded by a fence key that
  holds the highest token seen: ``fence <= token`` or the request is rejected, and each bumps
  the fence to the token. A holder that lost the lock without knowing is refused.

Sometimes (``stall_chance``; always the first holder with ``stall_first``) a holder stalls in
the middle of its critical section for twice the lease TTL,
its keepalives stopped too, as a process in a long garbage-collection pause would. Its lease
expires, the lock passes to the next worker, and the stalled one, waking, still believes it
holds the lock: its unfenced write then overwrites its successor's (a lost update), while its
fenced write is rejected. Checked by ``chaos.checker.lock``: the fenced resource must be exact;
what happened to the unfenced one is reported, as the demonstration that locks need fencing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from chaos.checker import lock as lock_checker
from chaos.history import Operation
from chaos.workloads.base import FINAL_PROCESS, Channels, Client, NotApplied, Options, Workload, failed, ok
from proto.etcdserverpb import rpc_pb2 as pb
from proto.v3lockpb import v3lock_pb2 as lockpb

PREFIX = "l/"
AIMED_STALL_LIMIT_S = 120.0
VIAS = ("client", "service")
TOKEN_WIDTH = 20


def pad(token: int) -> bytes:
    return str(token).zfill(TOKEN_WIDTH).encode()


def prefix_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


def decode_list(kvs: Any) -> list[int]:
    return [int(x) for x in kvs[0].value.decode().split()] if kvs else []


def encode_list(values: list[int]) -> bytes:
    return " ".join(map(str, values)).encode()


class Session:
    """A lease and the task that keeps it alive (etcd's concurrency.Session)."""

    def __init__(self, client: Client, ttl: int) -> None:
        self.client = client
        self.ttl = ttl
        self.lease = 0
        self.task: asyncio.Task | None = None
        self.paused = asyncio.Event()
        self.lost = False

    async def open(self) -> None:
        resp = await self.client.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=self.ttl), timeout=self.client.timeout)
        self.lease = resp.ID
        self.task = asyncio.create_task(self._keepalive())

    async def _keepalive(self) -> None:
        while not self.lost:
            call = self.client.lease.LeaseKeepAlive()
            try:
                while not self.lost:
                    if not self.paused.is_set():
                        await call.write(pb.LeaseKeepAliveRequest(ID=self.lease))
                        resp = await asyncio.wait_for(call.read(), self.ttl)
                        if resp is grpc.aio.EOF:
                            break
                        if resp.TTL <= 0:
                            self.lost = True  # expired: the session, and any lock it held, is gone
                            return
                    await asyncio.sleep(self.ttl / 3)
            except (grpc.aio.AioRpcError, TimeoutError):
                await asyncio.sleep(0.2)
            finally:
                call.cancel()

    async def close(self, revoke: bool = True) -> None:
        self.lost = True
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        if revoke and self.lease:
            with contextlib.suppress(grpc.aio.AioRpcError, TimeoutError):
                await self.client.lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=self.lease), timeout=self.client.timeout)


class Lock(Workload):
    name = "lock"
    needs = frozenset({"lease", "watch"})

    def __init__(self, options: Options, recorder: Any) -> None:
        super().__init__(options, recorder)
        base = f"{PREFIX}{options.run_id}/"
        self.lock_prefix = (base + "lock/").encode()
        self.unfenced = (base + "unfenced").encode()
        self.fenced = (base + "fenced").encode()
        self.fence = (base + "fence").encode()
        self.ttl = int(options.extra.get("ttl", 3))
        self.stall_chance = float(options.extra.get("stall_chance", 0.15))
        self.stall_first = bool(options.extra.get("stall_first", False))
        self.acquire_timeout = float(options.extra.get("acquire_timeout", 20.0))
        self.via = str(options.extra.get("via", "client"))
        if self.via not in VIAS:
            raise ValueError(f"lock workload: via must be one of {', '.join(VIAS)}, not {self.via!r}")
        if self.via == "service":
            self.needs = self.needs | {"lock"}
        self.sessions: dict[int, Session] = {}
        self.next_entry = 0
        # workers whose next critical section stalls until the awaitable's factory returns, instead
        # of for twice the TTL: a pause a script aims at one holder (chaos.scenarios)
        self.stall_until: dict[int, Callable[[], Awaitable[None]]] = {}

    async def setup(self, channels: Channels) -> None:
        await channels.kv[0].Put(pb.PutRequest(key=self.fence, value=pad(0)), timeout=10)

    # ---- the lock ----

    async def _session(self, client: Client) -> Session:
        s = self.sessions.get(client.worker)
        if s is not None and not s.lost:
            return s
        if s is not None:
            await s.close(revoke=False)
        s = Session(client, self.ttl)
        await s.open()
        self.sessions[client.worker] = s
        return s

    async def _acquire(self, client: Client, s: Session) -> int:
        """etcd's Mutex.Lock; returns the fencing token (our key's create revision)."""
        kv, timeout = client.kv, client.timeout
        my_key = self.lock_prefix + f"{s.lease:x}".encode()
        end = prefix_end(self.lock_prefix)
        first = pb.RangeRequest(
            key=self.lock_prefix,
            range_end=end,
            sort_order=pb.RangeRequest.ASCEND,
            sort_target=pb.RangeRequest.CREATE,
            limit=1,
        )
        txn = pb.TxnRequest(
            compare=[pb.Compare(result=pb.Compare.EQUAL, target=pb.Compare.CREATE, key=my_key, create_revision=0)],
            success=[
                pb.RequestOp(request_put=pb.PutRequest(key=my_key, value=b"", lease=s.lease)),
                pb.RequestOp(request_range=first),
            ],
            failure=[pb.RequestOp(request_range=pb.RangeRequest(key=my_key)), pb.RequestOp(request_range=first)],
        )
        resp = await kv.Txn(txn, timeout=timeout)
        my_rev = resp.header.revision if resp.succeeded else resp.responses[0].response_range.kvs[0].create_revision
        owner = resp.responses[1].response_range.kvs
        if owner and owner[0].create_revision == my_rev:
            return my_rev
        while True:  # waitDeletes: until no key created before ours is left
            ahead = pb.RangeRequest(
                key=self.lock_prefix,
                range_end=end,
                sort_order=pb.RangeRequest.DESCEND,
                sort_target=pb.RangeRequest.CREATE,
                limit=1,
                max_create_revision=my_rev - 1,
            )
            got = await kv.Range(ahead, timeout=timeout)
            if not got.kvs:
                break
            await self._wait_delete(client, got.kvs[0].key, got.header.revision + 1, s)
        mine = await kv.Range(pb.RangeRequest(key=my_key), timeout=timeout)
        if not mine.kvs:
            raise SessionExpired()
        return my_rev

    async def _acquire_service(self, client: Client, s: Session) -> tuple[int, bytes]:
        """The Lock service's acquisition: (fencing token, our key)."""
        name = self.lock_prefix[:-1]  # the service adds the "/"
        resp = await client.lock.Lock(lockpb.LockRequest(name=name, lease=s.lease), timeout=self.acquire_timeout)
        mine = await client.kv.Range(pb.RangeRequest(key=resp.key), timeout=client.timeout)
        if not mine.kvs:
            raise SessionExpired()
        return mine.kvs[0].create_revision, resp.key

    async def _wait_delete(self, client: Client, key: bytes, start: int, s: Session) -> None:
        create = pb.WatchCreateRequest(key=key, start_revision=start, filters=[pb.WatchCreateRequest.NOPUT])
        call = client.watch.Watch()
        try:
            await call.write(pb.WatchRequest(create_request=create))
            while not s.lost:
                resp = await call.read()
                if resp is grpc.aio.EOF or resp.canceled:
                    return  # look again
                if any(ev.type == 1 for ev in resp.events):
                    return
        finally:
            call.cancel()

    # ---- one round: acquire, critical section, release ----

    async def operate(self, client: Client) -> None:
        try:
            s = await self._session(client)
        except (grpc.aio.AioRpcError, TimeoutError):
            await asyncio.sleep(0.2)
            return
        token = 0
        my_key = self.lock_prefix + f"{s.lease:x}".encode()

        async def acquire() -> tuple[str, Any]:
            nonlocal token, my_key
            try:
                if self.via == "service":
                    token, my_key = await self._acquire_service(client, s)
                else:
                    token = await self._acquire(client, s)
            except SessionExpired:
                return failed({"lease": s.lease, "error": "session expired while waiting"})
            except grpc.aio.AioRpcError as err:
                if _session_expired(err):
                    return failed({"lease": s.lease, "error": err.details()})
                if not _lease_gone(err):
                    raise
                s.lost = True  # the lease expired (we stalled): no key was created under it
                return failed({"lease": s.lease, "error": err.details()})
            return ok({"lease": s.lease, "token": token})

        outcome, _ = await client.run("acquire", {"lease": s.lease}, acquire, timeout=self.acquire_timeout)
        if outcome != "ok":
            await s.close()  # our key, if any, goes with the lease
            self.sessions.pop(client.worker, None)
            return
        await self._critical_section(client, s, token)

        async def release() -> tuple[str, Any]:
            if self.via == "service":
                await client.lock.Unlock(lockpb.UnlockRequest(key=my_key), timeout=client.timeout)
            else:
                await client.kv.DeleteRange(pb.DeleteRangeRequest(key=my_key), timeout=client.timeout)
            return ok({"lease": s.lease, "token": token})

        await client.run("release", {"lease": s.lease, "token": token}, release)

    async def _critical_section(self, client: Client, s: Session, token: int) -> None:
        self.next_entry += 1
        entry = self.next_entry
        kv, timeout = client.kv, client.timeout
        fence_ok = pb.Compare(result=pb.Compare.LESS, target=pb.Compare.VALUE, key=self.fence, value=pad(token + 1))
        bump = pb.RequestOp(request_put=pb.PutRequest(key=self.fence, value=pad(token)))
        aimed = self.stall_until.pop(client.worker, None)
        stall = aimed is not None or self.rng.random() < self.stall_chance or (self.stall_first and entry == 1)
        state: dict[str, Any] = {}

        async def fenced_read() -> None:
            txn = pb.TxnRequest(
                compare=[fence_ok],
                success=[bump, pb.RequestOp(request_range=pb.RangeRequest(key=self.fenced))],
                failure=[pb.RequestOp(request_range=pb.RangeRequest(key=self.fence))],
            )
            try:
                resp = await kv.Txn(txn, timeout=timeout)
            except grpc.aio.AioRpcError as err:
                raise NotApplied(err) from err  # an unknown fence bump is harmless: it only refuses older tokens
            state["fenced_ok"] = resp.succeeded
            if resp.succeeded:
                state["fenced"] = decode_list(resp.responses[1].response_range.kvs)
            else:
                state["fence"] = resp.responses[0].response_range.kvs[0].value.decode()

        async def unfenced() -> tuple[str, Any]:
            try:
                got = await kv.Range(pb.RangeRequest(key=self.unfenced), timeout=timeout)
            except grpc.aio.AioRpcError as err:
                raise NotApplied(err) from err
            before = decode_list(got.kvs)
            if stall:  # a long pause with the keepalives stopped too: the lease expires meanwhile
                s.paused.set()
                try:
                    await (aimed() if aimed is not None else asyncio.sleep(2 * self.ttl))
                finally:
                    s.paused.clear()
            await kv.Put(pb.PutRequest(key=self.unfenced, value=encode_list([*before, entry])), timeout=timeout)
            return ok({"entry": entry, "token": token, "read": before, "stalled": stall})

        async def fenced() -> tuple[str, Any]:
            await fenced_read()
            if not state["fenced_ok"]:
                return failed({"entry": entry, "token": token, "refused": "read", "fence": state["fence"]})
            before = state["fenced"]
            txn = pb.TxnRequest(
                compare=[fence_ok],
                success=[
                    bump,
                    pb.RequestOp(request_put=pb.PutRequest(key=self.fenced, value=encode_list([*before, entry]))),
                ],
                failure=[pb.RequestOp(request_range=pb.RangeRequest(key=self.fence))],
            )
            resp = await kv.Txn(txn, timeout=timeout)
            if not resp.succeeded:
                fence = resp.responses[0].response_range.kvs[0].value.decode()
                return failed({"entry": entry, "token": token, "refused": "write", "fence": fence, "read": before})
            return ok({"entry": entry, "token": token, "read": before})

        # an aimed stall lasts as long as its script says (the script bounds its own waits)
        limit = timeout * 2 + (self.ttl if aimed is None else AIMED_STALL_LIMIT_S) + 2
        await client.run("unfenced", {"entry": entry, "token": token}, unfenced, timeout=limit)
        await client.run("fenced", {"entry": entry, "token": token}, fenced, timeout=timeout * 2)

    async def teardown(self, channels: Channels) -> None:
        for s in list(self.sessions.values()):
            await s.close()
        self.sessions.clear()

    async def final(self, channels: Channels) -> None:
        for m in range(len(channels.endpoints)):
            client = Client(FINAL_PROCESS + m, 1_000, channels, self.recorder, self.options.op_timeout, member=m)

            async def body(c: Client = client) -> tuple[str, Any]:
                txn = pb.TxnRequest(
                    success=[pb.RequestOp(request_range=pb.RangeRequest(key=k)) for k in (self.unfenced, self.fenced)]
                )
                resp = await c.kv.Txn(txn, timeout=c.timeout)
                lists = [decode_list(r.response_range.kvs) for r in resp.responses]
                return ok({"unfenced": lists[0], "fenced": lists[1]})

            await client.run("final-read", {}, body, read_only=True)

    def check(self, ops: list[Operation], budget_s: float) -> dict[str, Any]:
        return lock_checker.check(ops)


class SessionExpired(Exception):
    pass


LEASE_NOT_FOUND = "etcdserver: requested lease not found"
SESSION_EXPIRED = "mutex: session is expired"


def _lease_gone(err: grpc.aio.AioRpcError) -> bool:
    """The session's lease expired (we stalled): no key was created under it. The KV service says so
    with NOT_FOUND; the Lock service hands the same message on with code UNKNOWN, as etcd's does."""
    return err.code() == grpc.StatusCode.NOT_FOUND or (
        err.code() == grpc.StatusCode.UNKNOWN and err.details() == LEASE_NOT_FOUND
    )


def _session_expired(err: grpc.aio.AioRpcError) -> bool:
    """The Lock service's answer to a waiter whose lease went while it waited (its key is gone)."""
    return err.code() == grpc.StatusCode.UNKNOWN and err.details() == SESSION_EXPIRED
