"""The etcd Lease service: LeaseGrant, LeaseRevoke, LeaseKeepAlive, LeaseTimeToLive and LeaseLeases.

Grant and revoke go through the log like any write; the member picks the id of a grant that
names none before proposing it (etcd's request id generator, top bit cleared), so the log
carries it and every member grants the same lease.

Renewals and time-to-live queries are answered by the leader alone, because only its lessor
counts time (``kvstore.lease.runner``). etcd forwards them from a follower over its peer HTTP
API; raftkv has no peer HTTP, so a follower forwards them over the **leader's client gRPC URL**
(from the membership the log applied): ``LeaderLink`` keeps one channel and one long-lived
``LeaseKeepAlive`` stream to the current leader per follower, multiplexes every local client's
renewals over it, and matches the answers by lease id. Forwarded calls carry the metadata
``raftkv-lease-forwarded: 1``; a member that receives one while it does not lead fails the
call with ``etcdserver: not leader`` instead of forwarding again, and the follower finds the new
leader and retries until the request timeout (then ``etcdserver: no leader`` or
``etcdserver: request timed out``, which end the client's stream as etcd's do).

Auth: grants and revokes carry the caller's identity into the log (a revoke needs write permission
on every key of the lease, checked by the applier); LeaseTimeToLive with auth enabled needs read
permission on every key of the lease. The member the client called checks it (every member's
lessor knows which keys a lease holds); a follower then forwards the call with the client's token.
The leader checks a forwarded call again with that token, unless it comes over a connection whose
client certificate is a member's own (with --client-cert-auth: the forwarding member vouches for
a client it authenticated by certificate); a forwarded call is never authenticated by its
certificate's name, which is the forwarding member's. Keep-alives need none, as in etcd.

A keep-alive stream answers each request with the header filled before renewing (as etcd, so
the revision never postdates a revoke the client has not seen) and TTL 0 for a lease that does
not exist or was revoked. Renewals the leader can answer at once are answered inline; those that
must wait (a follower's forward, a lease whose revoke is in flight) run concurrently, up to
``STREAM_CONCURRENCY`` per stream, so one slow renewal never holds up the others on the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

import grpc

from frontend.grpc import ServerCall
from kvstore.apply import Op, response_as
from kvstore.errors import EtcdError, NoLeader, NotLeader, Timeout, UserEmpty, from_message
from kvstore.lease.errors import NotPrimary
from kvstore.lease.lessor import Lessor
from kvstore.lease.runner import LeaseRunner
from kvstore.server.credentials import NO_USER, needs_auth, token_of
from kvstore.server.member import Member
from kvstore.tls import common_name
from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc

log = logging.getLogger("raftkv.lease")

FORWARDED_KEY = "raftkv-lease-forwarded"
FORWARDED = ((FORWARDED_KEY, "1"),)
STREAM_CONCURRENCY = 256  # renewals of one stream waiting at once
RETRY_PAUSE = 0.05  # before asking again when no leader is known or the link to it broke
FORWARD_ATTEMPT_TIMEOUT = 1.5  # one forwarded renewal; then the stream is dropped and the renewal asked again


class IdGenerator:
    """etcd's idutil.Generator: 16 bits of the member id, 40 bits of milliseconds, 8 bits of counter.

    Ids made by different members never collide, and a restarted member starts past the ids it
    made before (its clock moved on).
    """

    def __init__(self, member_id: int, now_ms: int | None = None) -> None:
        if now_ms is None:
            now_ms = time.time_ns() // 1_000_000
        self._prefix = (member_id & 0xFFFF) << 48
        self._suffix = (now_ms & ((1 << 40) - 1)) << 8

    def next(self) -> int:
        self._suffix += 1
        return self._prefix | (self._suffix & ((1 << 48) - 1))


def client_address(url: str) -> str | None:
    """host:port (for a gRPC target) of an http:// client URL; None if it has no port."""
    parts = urlsplit(url)
    if not parts.hostname or parts.port is None:
        return None
    host = parts.hostname
    return f"[{host}]:{parts.port}" if ":" in host else f"{host}:{parts.port}"


def _is_forwarded(call: ServerCall) -> bool:
    return call.metadata(FORWARDED_KEY) is not None


_ANSWERS = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT)


class _LinkBroken(Exception):
    """The stream to the leader failed; ask again once the leader is known."""


class LeaderLink:
    """A follower's forwarding path to the leader: one channel and one keep-alive stream at a time."""

    def __init__(self, member: Member) -> None:
        self.member = member
        self._target: str | None = None
        self._channel: grpc.aio.Channel | None = None
        self._call: Any = None  # grpc.aio.StreamStreamCall of the forwarding stream
        self._reader: asyncio.Task | None = None
        self._write_lock = asyncio.Lock()
        self._pending: dict[int, deque[asyncio.Future]] = {}

    def leader_address(self) -> str | None:
        """The leader's client address, None if there is no leader, it is this member or its URLs are unknown."""
        member = self.member
        lead = member.log.leader
        if not lead or lead == member.member_id:
            return None
        info = member.applier.membership.members.get(lead)
        if info is None:
            return None
        for url in info.client_urls:
            address = client_address(url)
            if address is not None:
                return address
        return None

    def _channel_to(self, target: str) -> grpc.aio.Channel:
        if self._target != target:
            self._drop_stream()
            if self._channel is not None:
                channel = self._channel
                asyncio.get_running_loop().create_task(channel.close())
            dialer = getattr(self.member, "client_dialer", None)
            self._channel = dialer.channel(target) if dialer is not None else grpc.aio.insecure_channel(target)
            self._target = target
        assert self._channel is not None
        return self._channel

    async def renew(self, target: str, lease_id: int) -> int:
        """The TTL the leader at target answers for the lease; _LinkBroken if the stream fails."""
        channel = self._channel_to(target)
        if self._call is None:
            call = rpc_pb2_grpc.LeaseStub(channel).LeaseKeepAlive(metadata=FORWARDED)
            self._call = call
            self._reader = asyncio.get_running_loop().create_task(self._read(call))
        call = self._call
        fut = asyncio.get_running_loop().create_future()
        queue = self._pending.setdefault(lease_id, deque())
        queue.append(fut)
        try:
            try:
                async with self._write_lock:
                    await call.write(pb.LeaseKeepAliveRequest(ID=lease_id))
            except (grpc.RpcError, grpc.aio.UsageError, RuntimeError) as exc:
                if self._call is call:
                    self._drop_stream()
                raise _LinkBroken(str(exc)) from exc
            return await fut
        finally:
            if not fut.done():  # cancelled (timeout): forget it so a late answer goes to the next one
                with contextlib.suppress(ValueError):
                    queue.remove(fut)
                if not queue and self._pending.get(lease_id) is queue:
                    del self._pending[lease_id]

    async def _read(self, call: Any) -> None:
        error: str = "stream ended"
        try:
            async for resp in call:
                queue = self._pending.get(resp.ID)
                while queue:
                    fut = queue.popleft()
                    if not fut.done():
                        fut.set_result(resp.TTL)
                        break
                if queue is not None and not queue:
                    del self._pending[resp.ID]
        except grpc.RpcError as exc:
            error = f"{exc.code()}: {exc.details()}"
        except asyncio.CancelledError:
            error = "link closed"
            raise
        finally:
            if self._call is call:
                self._call = None
                self._reader = None
                self._fail_pending(error)

    def _fail_pending(self, error: str) -> None:
        pending, self._pending = self._pending, {}
        for queue in pending.values():
            for fut in queue:
                if not fut.done():
                    fut.set_exception(_LinkBroken(error))

    def reset(self) -> None:
        """Forgets the forwarding stream (the next renewal opens a fresh one)."""
        self._drop_stream()

    def _drop_stream(self) -> None:
        call, reader = self._call, self._reader
        self._call = None
        self._reader = None
        if call is not None:
            call.cancel()
        if reader is not None:
            reader.cancel()
        self._fail_pending("leader changed")

    async def time_to_live(
        self, target: str, request: pb.LeaseTimeToLiveRequest, timeout: float, token: str | None = None
    ) -> Any:
        channel = self._channel_to(target)
        metadata = FORWARDED if token is None else (*FORWARDED, ("token", token))
        try:
            return await rpc_pb2_grpc.LeaseStub(channel).LeaseTimeToLive(request, metadata=metadata, timeout=timeout)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise Timeout() from None
            if exc.code() in _ANSWERS:  # the leader's answer (permission denied, a bad token, ...)
                answer = from_message(exc.details() or "")
                if answer is not None:
                    raise answer from None
            raise _LinkBroken(f"{exc.code()}: {exc.details()}") from exc

    async def close(self) -> None:
        self._drop_stream()
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._target = None


class _Stream:
    """One LeaseKeepAlive call: serialized writes, bounded concurrent slow renewals, first error wins."""

    def __init__(self, call: ServerCall) -> None:
        self.call = call
        self.error: EtcdError | None = None
        self._lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(STREAM_CONCURRENCY)
        self._tasks: set[asyncio.Task] = set()

    async def send(self, resp: pb.LeaseKeepAliveResponse) -> None:
        """Writes one answer; called by the reading loop or by a slow renewal's task."""
        if self.error is not None:
            return
        async with self._lock:
            await self.call.write(resp)

    async def send_inline(self, resp: pb.LeaseKeepAliveResponse) -> None:
        """Writes from the reading loop: without the lock when no task exists (none can write meanwhile,
        as only the reading loop starts them)."""
        if self._tasks:
            await self.send(resp)
        elif self.error is None:
            await self.call.write(resp)

    async def spawn(self, coro_fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        await self._slots.acquire()
        task = asyncio.get_running_loop().create_task(coro_fn())
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:  # the client went away mid-write
            log.debug("keep-alive answer not delivered", extra={"error": repr(task.exception())})

    async def fail(self, exc: EtcdError) -> None:
        if self.error is not None:
            return
        self.error = exc
        self.call.fail(exc)  # ends the call with etcd's status (the reading loop's task is cancelled)

    async def finish(self) -> None:
        """The client stopped sending: answer what it already asked (each renewal has its own timeout)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


class LeaseService:
    def __init__(self, member: Member) -> None:
        self.member = member
        self.link = LeaderLink(member)
        self._ids = IdGenerator(member.member_id)
        self._timeout = member.cfg.request_timeout_s

    @property
    def lessor(self) -> Lessor:
        return self.member.lessor  # type: ignore[attr-defined]

    @property
    def runner(self) -> LeaseRunner:
        return self.member.lease_runner  # type: ignore[attr-defined]

    async def close(self) -> None:
        await self.link.close()

    async def _cred(self, call: ServerCall) -> tuple[str, int]:
        member = self.member
        return await member.credentials.for_log(call) if needs_auth(member, call) else NO_USER

    def _from_a_member(self, call: ServerCall) -> bool:
        """A call over a connection authenticated by a member's own certificate."""
        mine = getattr(getattr(self.member, "client_dialer", None), "common_name", None)
        return (
            bool(mine)
            and self.member.cfg.client_tls.client_cert_auth
            and (common_name(call.peer_certificate()) == mine)
        )

    async def _check_ttl(self, call: ServerCall, keys: Any) -> None:
        """Read permission on every key of the lease (etcd's checkLeaseTimeToLive)."""
        member = self.member
        if not needs_auth(member, call):
            return
        if _is_forwarded(call) and self._from_a_member(call):
            return  # the member that forwarded it checked it
        ai = await member.credentials.resolve(call, use_certificate=not _is_forwarded(call))
        if not member.auth.enabled:
            return
        if ai is None:
            raise UserEmpty()
        for key in keys:
            member.auth.check_range(ai, key, b"")

    # ---- through the log ----

    async def LeaseGrant(self, request: pb.LeaseGrantRequest, call: ServerCall) -> pb.LeaseGrantResponse:
        await self.member.check_quota(request)  # etcd's quotaLeaseServer
        req = pb.LeaseGrantRequest(ID=request.ID, TTL=request.TTL)
        while req.ID == 0:  # no id given: choose one (positive), as etcd does, before proposing
            req.ID = self._ids.next() & ((1 << 63) - 1)
        resp = response_as(
            await self.member.propose(Op.LEASE_GRANT, req.SerializeToString(), await self._cred(call)),
            pb.LeaseGrantResponse,
        )
        self.member.fill_header(resp.header)
        return resp

    async def LeaseRevoke(self, request: pb.LeaseRevokeRequest, call: ServerCall) -> pb.LeaseRevokeResponse:
        resp = response_as(
            await self.member.propose(Op.LEASE_REVOKE, request.SerializeToString(), await self._cred(call)),
            pb.LeaseRevokeResponse,
        )
        self.member.fill_header(resp.header)
        return resp

    # ---- local ----

    def LeaseLeases(self, request: pb.LeaseLeasesRequest, call: ServerCall) -> pb.LeaseLeasesResponse:
        resp = pb.LeaseLeasesResponse(leases=[pb.LeaseStatus(ID=lease.id) for lease in self.lessor.leases()])
        self.member.fill_header(resp.header)
        return resp

    # ---- answered by the leader ----

    async def LeaseTimeToLive(self, request: pb.LeaseTimeToLiveRequest, call: ServerCall) -> pb.LeaseTimeToLiveResponse:
        member = self.member
        deadline = time.monotonic() + self._timeout
        forwarded = _is_forwarded(call)
        while True:
            left = deadline - time.monotonic()
            if await self._leading(left, forwarded):
                try:
                    lease = await self.runner.lookup(request.ID)
                except NotPrimary:
                    continue
                if lease is None:
                    resp = pb.LeaseTimeToLiveResponse(ID=request.ID, TTL=-1)
                else:
                    await self._check_ttl(call, sorted(lease.keys))
                    resp = pb.LeaseTimeToLiveResponse(
                        ID=request.ID, TTL=self.lessor.time_to_live(lease), grantedTTL=lease.ttl
                    )
                    if request.keys:
                        resp.keys.extend(sorted(lease.keys))
                break
            target = self.link.leader_address()
            if target is not None:
                local = self.lessor.lookup(request.ID)
                if local is not None:  # checked here, where the client is known (its certificate, say)
                    await self._check_ttl(call, sorted(local.keys))
                try:
                    resp = await self.link.time_to_live(target, request, max(left, 0.001), token_of(call))
                    break
                except _LinkBroken:
                    pass
            await self._pause(deadline, target)
        member.fill_header(resp.header)
        return resp

    async def LeaseKeepAlive(self, call: ServerCall) -> None:
        member = self.member
        runner = self.runner
        forwarded = _is_forwarded(call)
        stream = _Stream(call)
        try:
            async for req in call:
                if stream.error is not None:
                    break
                resp = pb.LeaseKeepAliveResponse(ID=req.ID)
                member.fill_header(resp.header)  # before renewing, as etcd does
                ttl = runner.renew_now(req.ID)
                if ttl is not None:
                    resp.TTL = ttl
                    await stream.send_inline(resp)
                    continue
                await stream.spawn(lambda resp=resp, f=forwarded, s=stream: self._renew_slow(s, resp, f))
            await stream.finish()
        finally:
            await stream.close()

    async def _renew_slow(self, stream: _Stream, resp: pb.LeaseKeepAliveResponse, forwarded: bool) -> None:
        try:
            resp.TTL = await self._renew(resp.ID, forwarded)
        except EtcdError as exc:
            await stream.fail(exc)
            return
        await stream.send(resp)

    async def _renew(self, lease_id: int, forwarded: bool) -> int:
        """The lease's TTL from the primary: this member, or the leader through the link."""
        deadline = time.monotonic() + self._timeout
        while True:
            left = deadline - time.monotonic()
            if await self._leading(left, forwarded):
                try:
                    return await self.runner.renew(lease_id)
                except NotPrimary:
                    continue
            target = self.link.leader_address()
            if target is not None:
                # one attempt may not take the whole request timeout: a leader that died or was cut
                # off mid-stream must not swallow the renewal; drop that stream and ask again
                attempt = min(max(left, 0.001), FORWARD_ATTEMPT_TIMEOUT)
                try:
                    return await asyncio.wait_for(self.link.renew(target, lease_id), attempt)
                except TimeoutError:
                    self.link.reset()
                    if time.monotonic() >= deadline:
                        raise Timeout() from None
                    continue
                except _LinkBroken as exc:
                    log.debug("lease forwarding failed", extra={"leader": target, "error": str(exc)})
            await self._pause(deadline, target)

    async def _leading(self, left: float, forwarded: bool) -> bool:
        """True when this member is (or, just elected, becomes) the primary; a forward to a non-leader fails."""
        runner = self.runner
        if runner.is_primary():
            return True
        member = self.member
        if member.log.leader == member.member_id:
            return await runner.wait_primary(max(min(left, self._timeout), 0.001))
        if forwarded:
            raise NotLeader()
        return False

    async def _pause(self, deadline: float, target: str | None) -> None:
        if time.monotonic() + RETRY_PAUSE > deadline:
            raise NoLeader() if target is None else Timeout()
        await asyncio.sleep(RETRY_PAUSE)
