"""The in-process client the Lock and Election services make their requests through.

etcd's services run clientv3/concurrency against the server itself (``v3client``); this is raftkv's
equivalent, the ``kvstore.concurrency.Client`` over this member's own handlers: Txn, Range
(linearizable) and DeleteRange through ``KVService`` (the same checks, log and read barrier as a
client's request), LeaseGrant through ``LeaseService``, watches as streams of the member's watch hub
(the same watchers, catch-up and compaction rules as a client's Watch). Errors are handed on as
etcd's client hands them on (``Relayed``: the message, gRPC code Unknown).

``background`` keeps the clean-up tasks of calls whose caller went away; ``close`` ends them.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

from kvstore.errors import Compacted, EtcdError, Relayed
from kvstore.server.kv_service import KVService
from kvstore.server.lease_service import LeaseService
from kvstore.server.member import Member
from kvstore.watch import WatchStream
from proto.etcdserverpb import rpc_pb2 as pb

log = logging.getLogger("raftkv.concurrency")
T = TypeVar("T")
_NO_CALL: Any = None  # the KV and LeaseGrant handlers never look at their call


class LocalWatch:
    """One watcher on a stream of its own in the member's hub; ``next`` gives responses with events."""

    def __init__(self, member: Member, request: pb.WatchCreateRequest) -> None:
        self._fill = member.fill_header
        hub = member.watch_hub
        assert hub is not None
        self._stream: WatchStream = hub.new_stream()
        self._ready = asyncio.Event()
        self._stream.on_ready = self._ready.set
        self._stream.on_failed = self._ready.set
        self._stream.create(request)

    async def next(self) -> pb.WatchResponse:
        stream = self._stream
        while True:
            item = stream.pop()
            if item is None:
                if stream.error is not None:
                    raise Relayed.of(stream.error)
                self._ready.clear()
                if stream.queue:
                    continue
                await self._ready.wait()
                continue
            resp = item[0]
            if resp.canceled:
                if resp.compact_revision:
                    raise Relayed.of(Compacted())
                raise Relayed(f"lost watcher: {resp.cancel_reason or 'canceled'}")
            if not resp.events:
                continue  # the created response (and progress): clientv3 does not hand them on
            rev = resp.header.revision
            self._fill(resp.header)
            resp.header.revision = rev
            return resp

    def close(self) -> None:
        self._stream.close()


class LocalClient:
    def __init__(self, member: Member, kv: KVService, lease: LeaseService) -> None:
        self.member = member
        self.kv = kv
        self.lease = lease
        self._tasks: set[asyncio.Task] = set()

    async def _call(self, result: T | Awaitable[T]) -> T:
        try:
            if inspect.isawaitable(result):
                return await result
            return result
        except EtcdError as exc:
            raise Relayed.of(exc) from None

    async def txn(self, request: pb.TxnRequest) -> pb.TxnResponse:
        try:
            pending = self.kv.Txn(request, _NO_CALL)
        except EtcdError as exc:
            raise Relayed.of(exc) from None
        return await self._call(pending)

    async def get(self, request: pb.RangeRequest) -> pb.RangeResponse:
        try:
            pending = self.kv.Range(request, _NO_CALL)
        except EtcdError as exc:
            raise Relayed.of(exc) from None
        return await self._call(pending)

    async def delete(self, key: bytes) -> pb.DeleteRangeResponse:
        return await self._call(self.kv.DeleteRange(pb.DeleteRangeRequest(key=key), _NO_CALL))

    async def grant(self, ttl: int) -> int:
        resp = await self._call(self.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=ttl), _NO_CALL))
        return resp.ID

    def watch(self, request: pb.WatchCreateRequest) -> LocalWatch:
        return LocalWatch(self.member, request)

    def background(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.info("clean-up after a caller went away failed", extra={"error": str(task.exception())})

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
