"""The in-process client the Lock and Election services make their requests through.

etcd's services run clientv3/concurrency against the server itself (``v3client``); this is raftkv's
equivalent, the ``kvstore.concurrency.Client`` over this member's own handlers: Txn, Range
(linearizable) and DeleteRange through ``KVService`` (the same checks, log and read barrier as a
client's request), LeaseGrant through ``LeaseService``, watches as streams of the member's watch hub
(the same watchers, catch-up and compaction rules as a client's Watch). Errors are handed on as
etcd's client hands them on (``Relayed``: the message, gRPC code Unknown).

Every request runs with the identity of the Lock or Election call it serves (``for_call``): etcd's
v3lock and v3election servers pass the caller's context down to the in-process client, so its
token (or client certificate) is what the permission checks see, for the keys, the lease and the
watches alike (a watch the caller may not read ends the wait as a lost watcher). A client made
without a call is anonymous. The clean-up of a call whose caller went away (the waiter's key
deleted) runs with the caller's identity too, where etcd's uses the client's own context, which
carries no credentials and so fails once auth is on.

``background`` keeps the clean-up tasks of calls whose caller went away; ``close`` ends them.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

from kvstore.errors import ANSWERABLE, Compacted, Relayed, as_etcd
from kvstore.server.credentials import Call, needs_auth
from kvstore.server.kv_service import KVService
from kvstore.server.lease_service import LeaseService
from kvstore.server.member import Member
from kvstore.server.watch_service import watch_refusal
from kvstore.watch import WatchStream
from proto.etcdserverpb import rpc_pb2 as pb

log = logging.getLogger("raftkv.concurrency")
T = TypeVar("T")


class Anonymous:
    """The call of a request made on nobody's behalf: no token, no certificate."""

    def metadata(self, key: str) -> str | None:
        return None

    def peer_certificate(self) -> dict[str, Any] | None:
        return None


class LocalWatch:
    """One watcher on a stream of its own in the member's hub; ``next`` gives responses with events.

    With auth to check, the watcher is created by the first ``next``, once the caller may read its
    range (the recipes always watch from an explicit revision, so nothing is missed)."""

    def __init__(self, member: Member, request: pb.WatchCreateRequest, call: Call) -> None:
        self._member = member
        self._fill = member.fill_header
        self._request = request
        self._call = call
        self._stream: WatchStream | None = None
        self._ready = asyncio.Event()
        self._closed = False
        if not needs_auth(member, call):
            self._open()

    def _open(self) -> WatchStream:
        hub = self._member.watch_hub
        assert hub is not None
        stream = self._stream = hub.new_stream()
        stream.on_ready = self._ready.set
        stream.on_failed = self._ready.set
        stream.create(self._request)
        return stream

    async def next(self) -> pb.WatchResponse:
        stream = self._stream
        if stream is None:
            if self._closed:
                raise Relayed("lost watcher: closed")
            reason = await watch_refusal(self._member, self._call, self._request)
            if reason is not None:
                raise Relayed(f"lost watcher: {reason}")
            if self._closed:
                raise Relayed("lost watcher: closed")
            stream = self._open()
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
        self._closed = True
        if self._stream is not None:
            self._stream.close()


class LocalClient:
    def __init__(
        self,
        member: Member,
        kv: KVService,
        lease: LeaseService,
        call: Call | None = None,
        tasks: set[asyncio.Task] | None = None,
    ) -> None:
        self.member = member
        self.kv = kv
        self.lease = lease
        self.call: Call = call if call is not None else Anonymous()
        self._tasks: set[asyncio.Task] = tasks if tasks is not None else set()

    def for_call(self, call: Call) -> LocalClient:
        """This client acting for call: its requests carry the caller's credentials (see the module docstring)."""
        return LocalClient(self.member, self.kv, self.lease, call, self._tasks)

    async def _call(self, result: T | Awaitable[T]) -> T:
        try:
            if inspect.isawaitable(result):
                return await result
            return result
        except ANSWERABLE as exc:
            raise Relayed.of(as_etcd(exc)) from None

    async def txn(self, request: pb.TxnRequest) -> pb.TxnResponse:
        try:
            pending = self.kv.Txn(request, self.call)
        except ANSWERABLE as exc:
            raise Relayed.of(as_etcd(exc)) from None
        return await self._call(pending)

    async def get(self, request: pb.RangeRequest) -> pb.RangeResponse:
        try:
            pending = self.kv.Range(request, self.call)
        except ANSWERABLE as exc:
            raise Relayed.of(as_etcd(exc)) from None
        return await self._call(pending)

    async def delete(self, key: bytes) -> pb.DeleteRangeResponse:
        return await self._call(self.kv.DeleteRange(pb.DeleteRangeRequest(key=key), self.call))

    async def grant(self, ttl: int) -> int:
        resp = await self._call(self.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=ttl), self.call))  # type: ignore[arg-type]
        return resp.ID

    def watch(self, request: pb.WatchCreateRequest) -> LocalWatch:
        return LocalWatch(self.member, request, self.call)

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
