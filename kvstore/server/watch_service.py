"""The etcd Watch service: one bidirectional stream per client, over the member's watch hub.

Each call gets a ``WatchStream`` from ``member.watch_hub``. A reader task turns requests into
stream operations (create, cancel, progress); the call's own coroutine sends what the stream
queues, in order, filling each header (cluster, member, term) as it goes and fragmenting the
responses of watchers that asked for it exactly as etcd does (``sendFragments``: split between
events once a response reaches --max-request-bytes plus gRPC's overhead allowance). When the
client goes away, by cancel or by error, the stream is closed and its watchers leave the hub.
As in etcd, a client that only half-closes its side keeps receiving events.

``hasleader``: a call with gRPC metadata ``hasleader: true`` is refused with ``etcdserver: no
leader`` when the member knows no leader, and is ended with that status once the member has seen
no leader for three election timeouts in a row (etcd's ``monitorLeader``, checked once per
election timeout, for all such calls together).

Auth: each create request is checked for read permission on its whole range (etcd checks only
the start key of a from-key watch); a refused one gets etcd's created-and-canceled response with
the gRPC error string as cancel reason, and the stream goes on.

A stream whose client stops reading is ended with ``SlowConsumer`` once what it holds back
passes its memory limit (see ``kvstore.watch.stream``), at once, even while a write is held back
by the client's flow control (what the front end still had queued for it is dropped).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

from frontend.grpc import ServerCall
from kvstore.config import GRPC_OVERHEAD_BYTES
from kvstore.errors import AuthOldRevision, EtcdError, InvalidAuthToken, NoLeader, UserEmpty
from kvstore.server.credentials import Call, needs_auth
from kvstore.server.require_leader import wants_leader
from kvstore.watch import WatchStream
from proto.etcdserverpb import rpc_pb2 as pb

NO_LEADER_TIMEOUTS = 3  # etcd: maxNoLeaderCnt

_GO_CODES = {"PERMISSION_DENIED": "PermissionDenied", "UNAUTHENTICATED": "Unauthenticated"}


def grpc_error_string(exc: EtcdError) -> str:
    """What Go's status error prints: etcd's cancel reasons are such strings."""
    name = exc.code.name
    go = _GO_CODES.get(name) or "".join(part.capitalize() for part in name.split("_"))
    return f"rpc error: code = {go} desc = {exc.message}"


WATCH_DENIED = "rpc error: code = PermissionDenied desc = etcdserver: permission denied"


async def watch_refusal(member: Any, call: Call, creq: pb.WatchCreateRequest) -> str | None:
    """etcd's cancel reason for a watch the caller may not create, None if it may."""
    try:
        ai = await member.credentials.resolve(call)
        member.auth.check_range(ai, creq.key or b"\x00", creq.range_end)
    except (InvalidAuthToken, AuthOldRevision, UserEmpty) as exc:
        return grpc_error_string(exc)
    except EtcdError:
        return WATCH_DENIED
    return None


def _varint_len(n: int) -> int:
    size = 1
    while n >= 0x80:
        n >>= 7
        size += 1
    return size


def fragments(resp: pb.WatchResponse, limit: int) -> Iterator[pb.WatchResponse]:
    """resp split as etcd's sendFragments does: parts under limit bytes, each with at least one event."""
    events = resp.events
    n = len(events)
    if n < 2 or resp.ByteSize() < limit:
        yield resp
        return
    base = pb.WatchResponse()
    base.CopyFrom(resp)
    del base.events[:]
    base.fragment = True
    base_size = base.ByteSize()
    idx = 0
    while True:
        part = pb.WatchResponse()
        part.CopyFrom(base)
        size = base_size
        count = 0
        while idx < n:
            ev = events[idx]
            es = ev.ByteSize()
            add = 1 + _varint_len(es) + es
            if count and size + add >= limit:
                break
            part.events.append(ev)
            size += add
            count += 1
            idx += 1
        if idx == n:
            part.fragment = False
        yield part
        if not part.fragment:
            return


class WatchService:
    def __init__(self, member: Any) -> None:
        self.member = member
        self.fragment_limit = member.cfg.max_request_bytes + GRPC_OVERHEAD_BYTES
        self._leader_streams: dict[WatchStream, None] = {}
        self._monitor: asyncio.Task | None = None

    async def Watch(self, call: ServerCall) -> None:
        member = self.member
        require_leader = wants_leader(call)
        if require_leader and not member.log.leader:
            raise NoLeader()
        stream = member.watch_hub.new_stream()
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        failed = loop.create_future()
        stream.on_ready = ready.set
        stream.on_failed = lambda: failed.done() or failed.set_result(None)
        reader = asyncio.ensure_future(self._receive(call, stream, call))
        reader.add_done_callback(lambda _: ready.set())
        sender = asyncio.ensure_future(self._send(call, stream, ready, reader))
        if require_leader:
            self._leader_streams[stream] = None
            if self._monitor is None:
                self._monitor = asyncio.ensure_future(self._monitor_leader())
        try:
            # the sender may sit in a write that the client's flow control holds back: a failure must not wait
            await asyncio.wait((sender, failed), return_when=asyncio.FIRST_COMPLETED)
            error = stream.error
            if error is not None:
                raise error
            await sender
        finally:
            reader.cancel()
            sender.cancel()
            if not failed.done():
                failed.cancel()
            self._leader_streams.pop(stream, None)
            stream.close()

    async def _receive(self, requests: AsyncIterator[pb.WatchRequest], stream: WatchStream, call: ServerCall) -> None:
        member = self.member
        async for req in requests:
            if req.WhichOneof("request_union") == "create_request" and needs_auth(member, call):
                reason = await watch_refusal(member, call, req.create_request)
                if reason is not None:
                    stream.refuse(reason)
                    continue
            stream.handle(req)

    async def _send(self, call: ServerCall, stream: WatchStream, ready: asyncio.Event, reader: asyncio.Future) -> None:
        """Sends what the stream queues until it fails or the client's side breaks."""
        fill = self.member.fill_header
        write = call.write
        limit = self.fragment_limit
        pop = stream.pop
        while True:
            item = pop()
            if item is None:
                if stream.error is not None:
                    return
                if reader.done() and not reader.cancelled() and reader.exception() is not None:
                    return  # the client's side broke: etcd ends the call
                ready.clear()
                if stream.queue:
                    continue
                await ready.wait()
                continue
            resp, fragment = item
            header = resp.header
            if header.revision:
                fill(header)
            else:
                fill(header)
                header.revision = 0  # etcd's compaction cancel carries revision 0
            if fragment:
                for part in fragments(resp, limit):
                    await write(part)
            else:
                await write(resp)

    async def _monitor_leader(self) -> None:
        """Fails every hasleader stream once no leader was seen for NO_LEADER_TIMEOUTS election timeouts."""
        member = self.member
        interval = member.cfg.election_timeout_ms / 1000
        misses = 0
        try:
            while self._leader_streams:
                await asyncio.sleep(interval)
                misses = 0 if member.log.leader else misses + 1
                if misses >= NO_LEADER_TIMEOUTS:
                    streams, self._leader_streams = self._leader_streams, {}
                    for stream in streams:
                        stream.fail(NoLeader())
        finally:
            self._monitor = None
