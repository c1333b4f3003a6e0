"""The leader-side duties of leases on a running member: promote, demote, expire, checkpoint, renew.

``LeaseRunner.step`` is one pass of the loop ``run`` repeats every ``tick`` seconds:

1. **Leadership.** When the log says this member leads, the runner waits until everything
   committed in earlier terms is applied (a read barrier: Raft answers it only once the new
   leader has committed an entry of its own term, the moment etcd promotes its lessor at), then
   promotes the lessor, extending every lease by the election timeout. When the member stops
   leading, or the term moves on, the lessor is demoted at once.
2. **Expiry.** Leases past their expiry are revoked by proposing ``LeaseRevoke`` through the
   log, at most ``revoke_rate`` per second and ``max_pending_revokes`` at once (etcd's
   ``leaseRevokeRate`` and ``maxPendingRevokes``), so every member deletes the keys at the same
   revision. A revoke that does not land is proposed again after the request timeout.
3. **Checkpoints.** Due remaining TTLs are proposed in batches of up to 1000 per log entry.

Leadership is re-checked synchronously right before every proposal, so a deposed leader does
not propose revokes after it has noticed; until it notices (at most one tick), its proposals
carry a stale term and cannot commit, as in etcd.

Renewals (``renew_now``, ``renew``) and time-to-live lookups (``lookup``) are answered here only
when this member is the primary; otherwise ``NotPrimary`` tells the caller to ask the leader
(``kvstore.server.lease_service`` forwards them). Tests drive ``step`` by hand with a fake host
and a fake clock; ``run`` only starts when the member starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any, Protocol

from kvstore.apply.codec import Op
from kvstore.errors import EtcdError, LeaseNotFound
from kvstore.lease.errors import LeaseExpired, LeaseNotFoundError, NotPrimary
from kvstore.lease.lessor import LEASE_CHECKPOINT_RATE, LEASE_REVOKE_RATE, MAX_CHECKPOINT_BATCH, Lease, Lessor
from proto.etcdserverpb import rpc_pb2 as pb

log = logging.getLogger("raftkv.lease")

MAX_PENDING_REVOKES = 16  # etcd's maxPendingRevokes


class LogView(Protocol):
    @property
    def leader(self) -> int: ...

    @property
    def term(self) -> int: ...

    @property
    def commit_index(self) -> int: ...


class LeaseHost(Protocol):
    """What the runner needs from the member (``kvstore.server.member.Member`` provides it)."""

    member_id: int

    @property
    def log(self) -> LogView: ...

    @property
    def applied_index(self) -> int: ...

    async def propose(self, op: Op, body: bytes) -> object: ...

    async def read_barrier(self) -> None: ...

    async def wait_applied(self, index: int) -> None: ...


class LeaseRunner:
    def __init__(
        self,
        host: LeaseHost,
        lessor: Lessor,
        *,
        election_timeout: float,
        request_timeout: float,
        tick: float = 0.1,
        revoke_rate: int = LEASE_REVOKE_RATE,
        checkpoint_rate: int = LEASE_CHECKPOINT_RATE,
        max_pending_revokes: int = MAX_PENDING_REVOKES,
    ) -> None:
        self.host = host
        self.lessor = lessor
        self.election_timeout = election_timeout
        self.request_timeout = request_timeout
        self.tick = tick
        self.revoke_rate = revoke_rate
        self.checkpoint_rate = checkpoint_rate
        self.max_pending_revokes = max_pending_revokes
        self._term = 0  # the term this member's lessor is primary in; 0 when it is not
        self._revoking: set[int] = set()  # lease ids whose revoke proposal is in flight
        self._revoke_waiters: dict[int, list[asyncio.Future]] = {}
        self._primary_waiters: list[asyncio.Future] = []
        self._tasks: set[asyncio.Task] = set()
        lessor.on_revoke = self._revoked

    # ---- the loop ----

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.step()
                except asyncio.CancelledError:
                    raise
                except Exception:  # a bug here must not stop leases for good: log it and go on
                    log.exception("lease runner step failed")
                await asyncio.sleep(self.tick)
        finally:
            await self.stop()

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._term:
            self._demote()

    async def step(self) -> None:
        await self._follow_leadership()
        if self.is_primary():
            self._expire()
            self._checkpoint()

    def is_primary(self) -> bool:
        """True when this member leads in the term its lessor was promoted in."""
        if not self._term or not self.lessor.primary:
            return False
        log_view = self.host.log
        return log_view.leader == self.host.member_id and log_view.term == self._term

    async def wait_primary(self, timeout: float) -> bool:
        """Waits until this member is the primary (it was just elected); False after timeout."""
        if self.is_primary():
            return True
        fut = asyncio.get_running_loop().create_future()
        self._primary_waiters.append(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return False
        finally:
            if fut in self._primary_waiters:
                self._primary_waiters.remove(fut)
        return self.is_primary()

    # ---- leadership ----

    async def _follow_leadership(self) -> None:
        host = self.host
        log_view = host.log
        term = log_view.term
        leading = log_view.leader == host.member_id
        if self._term and (not leading or term != self._term):
            self._demote()
        if not leading or self._term:
            return
        try:
            await host.read_barrier()
        except EtcdError as exc:
            log.info("lease promotion postponed", extra={"error": exc.message})
            return
        if log_view.leader != host.member_id or log_view.term != term:
            return
        self.lessor.promote(self.election_timeout)
        self._term = term
        log.info("leases promoted", extra={"term": term, "leases": len(self.lessor)})
        waiters, self._primary_waiters = self._primary_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _demote(self) -> None:
        self._term = 0
        self.lessor.demote()
        log.info("leases demoted", extra={"leases": len(self.lessor)})
        waiters, self._revoke_waiters = self._revoke_waiters, {}
        for futs in waiters.values():  # renewals waiting on a revoke must now ask the new leader
            for fut in futs:
                if not fut.done():
                    fut.set_result(None)

    # ---- expiry and checkpoints ----

    def _expire(self) -> None:
        room = self.max_pending_revokes - len(self._revoking)
        if room <= 0:
            return
        limit = min(room, max(1, int(self.revoke_rate * self.tick)))
        for lease_id in self.lessor.expired(limit, self.request_timeout):
            if lease_id in self._revoking:
                continue
            self._revoking.add(lease_id)
            self._spawn(self._revoke(lease_id))

    async def _revoke(self, lease_id: int) -> None:
        try:
            if not self.is_primary():
                return
            await self.host.propose(Op.LEASE_REVOKE, pb.LeaseRevokeRequest(ID=lease_id).SerializeToString())
            log.debug("lease expired", extra={"lease_id": f"{lease_id:016x}"})
        except LeaseNotFound:
            pass  # revoked by a client meanwhile
        except EtcdError as exc:
            log.warning("failed to revoke lease", extra={"lease_id": f"{lease_id:016x}", "error": exc.message})
        finally:
            self._revoking.discard(lease_id)

    def _checkpoint(self) -> None:
        for _ in range(max(1, int(self.checkpoint_rate * self.tick))):
            cps = self.lessor.due_checkpoints(MAX_CHECKPOINT_BATCH)
            if cps:
                self._propose_checkpoints(cps)
            if len(cps) < MAX_CHECKPOINT_BATCH:
                return

    def _propose_checkpoints(self, cps: list[tuple[int, int]]) -> None:
        req = pb.LeaseCheckpointRequest(checkpoints=[pb.LeaseCheckpoint(ID=i, remaining_TTL=r) for i, r in cps])
        self._spawn(self._propose_checkpoint(req.SerializeToString()))

    async def _propose_checkpoint(self, body: bytes) -> None:
        try:
            if self.is_primary():
                await self.host.propose(Op.LEASE_CHECKPOINT, body)
        except EtcdError as exc:
            log.warning("failed to checkpoint leases", extra={"error": exc.message})

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- renewals and lookups ----

    def renew_now(self, lease_id: int) -> int | None:
        """The fast path of a renewal: the TTL (0 for an unknown lease), or None if only ``renew`` can answer.

        Answers at once only on the primary, with everything it knows committed applied (etcd's
        waitAppliedIndex), and for a lease that has not run out.
        """
        if not self.is_primary():
            return None
        host = self.host
        if host.applied_index < host.log.commit_index:
            return None
        try:
            ttl, clear = self.lessor.renew(lease_id)
        except LeaseNotFoundError:
            return 0
        except (LeaseExpired, NotPrimary):
            return None
        if clear:
            self._propose_checkpoints([(lease_id, 0)])
        return ttl

    async def renew(self, lease_id: int) -> int:
        """Renews the lease on this member: its TTL, or 0 if it is unknown or was revoked meanwhile.

        Raises NotPrimary when this member is not the primary (ask the leader instead), and
        etcd's Timeout when the applied index does not catch up.
        """
        host = self.host
        if not self.is_primary():
            raise NotPrimary()
        commit = host.log.commit_index  # wait once, for what was committed when the renewal arrived
        if host.applied_index < commit:
            await host.wait_applied(commit)
        while True:
            if not self.is_primary():
                raise NotPrimary()
            try:
                ttl, clear = self.lessor.renew(lease_id)
            except LeaseNotFoundError:
                return 0
            except LeaseExpired:
                # its revoke is on the way: answer once it has been applied (or leadership moved)
                await self._wait_revoked(lease_id)
                continue
            if clear:
                self._propose_checkpoints([(lease_id, 0)])
            return ttl

    async def lookup(self, lease_id: int) -> Lease | None:
        """The lease as the primary sees it, once everything committed is applied; NotPrimary elsewhere."""
        host = self.host
        if not self.is_primary():
            raise NotPrimary()
        commit = host.log.commit_index
        if host.applied_index < commit:
            await host.wait_applied(commit)
            if not self.is_primary():
                raise NotPrimary()
        return self.lessor.lookup(lease_id)

    def renewals_waiting(self, lease_id: int) -> int:
        """How many renewals of the (expired) lease wait for its revoke to be applied."""
        return len(self._revoke_waiters.get(lease_id, ()))

    async def _wait_revoked(self, lease_id: int) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._revoke_waiters.setdefault(lease_id, []).append(fut)
        try:
            await asyncio.wait_for(fut, self.request_timeout)
        except TimeoutError:
            pass  # still expired: the caller asks again and the expiry loop proposes the revoke again
        finally:
            futs = self._revoke_waiters.get(lease_id)
            if futs is not None and fut in futs:
                futs.remove(fut)
                if not futs:
                    del self._revoke_waiters[lease_id]

    def _revoked(self, lease_id: int) -> None:
        for fut in self._revoke_waiters.pop(lease_id, ()):
            if not fut.done():
                fut.set_result(None)
