"""A running member: its store, applier and replicated log, and the bookkeeping between them.

Writes: a request is encoded, a waiter is registered under a fresh request id, the entry is
proposed, and when the log hands the committed entry to ``apply_entries`` the applier's result
resolves the waiter. Every member applies every entry; only the one that proposed it has a
waiter. Linearizable reads wait for the log's read index to be applied.

Requests that wait longer than etcd's request timeout fail with ``etcdserver: request timed
out``; the entry itself may still be applied later, exactly as with etcd.

Membership changes go through the log as conf changes (``configure``), one at a time; the applier
validates each one and its result resolves the proposer's waiter. After every applied change the
log is told who the peers are and which ids were removed.

A snapshot from the leader is installed in place, as etcd's ``kv.Restore`` does: the backend swaps
its file and the lessor, auth, store, applier and watch hub reload from it; every object stays
the same, so whoever holds one (services, the simulator) keeps a valid reference.

Time, randomness and blocking calls go through the ``raft.runtime.Runtime`` the member is given
(the real one by default), so the simulator can run a whole member deterministically.

Operations beyond the data path: the backend quota (``check_quota`` raises NOSPACE through the
log), alarms (``alarm``), defragmentation (``defragment``: applying pauses while the backend file
is rewritten compactly, Raft goes on), auto-compaction (``kvstore.compactor``) and the periodic
corruption check (``kvstore.corrupt``), both run by the leader. The log's errors
(``raft.errors``) become etcd's here.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import lmdb
import msgpack

from kvstore import compactor, corrupt
from kvstore.alarms import CORRUPT, NOSPACE
from kvstore.apply import Applier, CompactResult, ConfChangeResult, Op, encode_request
from kvstore.auth import AuthStore, token_provider
from kvstore.auth.passwords import Passwords
from kvstore.config import ServerConfig, peer_address
from kvstore.errors import (
    BadLeaderTransferee,
    EtcdError,
    NoLeader,
    NoSpace,
    NotLeader,
    RequestTooLarge,
    StartupError,
    Stopped,
    Timeout,
    TimeoutLeaderTransfer,
    TooManyRequests,
)
from kvstore.lease import Lessor, min_lease_ttl
from kvstore.lease.runner import LeaseRunner
from kvstore.membership import ChangeContext, MemberInfo
from kvstore.mvcc import Backend, KVStore
from kvstore.mvcc.shared_lock import SharedLock
from kvstore.mvcc.stats import MvccStats
from kvstore.mvcc.store import CompactionJob
from kvstore.quota import Quota
from kvstore.server import peer_requests
from kvstore.server.credentials import Credentials
from kvstore.snapshot.maintenance import hash_kv
from kvstore.watch import WatchHub
from proto.etcdserverpb import rpc_pb2 as pb
from raft import errors as log_errors
from raft import unsafe
from raft.api import CommittedEntry, ReplicatedLog
from raft.runtime import REAL, Runtime
from raft.stats import FSYNC_BUCKETS, Histogram

log = logging.getLogger("raftkv.member")

VERSION = "3.5.17"  # the etcd API version we answer to (Kubernetes gates features on it)
CONF_CHANGE_RETRY = 0.05  # while another membership change is unapplied, ask again this often


def etcd_error(exc: log_errors.LogError) -> EtcdError:
    """etcd's error for an error of the log."""
    if isinstance(exc, log_errors.NoLeaderError):
        return NoLeader()
    if isinstance(exc, log_errors.BusyError):
        return TooManyRequests()
    if isinstance(exc, log_errors.NotLeaderError):
        return NotLeader()
    if isinstance(exc, log_errors.BadTransfereeError):
        return BadLeaderTransferee()
    if isinstance(exc, log_errors.TransferTimeoutError):
        return TimeoutLeaderTransfer()
    return Stopped()


class Member:
    def __init__(
        self,
        cfg: ServerConfig,
        replicated_log: ReplicatedLog,
        backend: Backend,
        known_members: dict[int, MemberInfo] | None = None,
        runtime: Runtime = REAL,
    ) -> None:
        """known_members: who the initial members are (--initial-cluster, or what a joining member was
        told by its peers), for the first log entries that carry no member record."""
        self.cfg = cfg
        self.member_id = replicated_log.member_id
        self.cluster_id = replicated_log.cluster_id
        self.runtime = runtime
        self.clock = runtime.clock
        self._executor = runtime.executor("backend", 2)
        # the lessor first: the store re-attaches every leased key to it when it opens
        self.lessor = Lessor(
            backend,
            min_ttl=min_lease_ttl(cfg.heartbeat_interval_ms, cfg.election_timeout_ms),
            clock=self.clock.monotonic,
        )
        self.mvcc_stats = MvccStats()  # counted across every store this member opens
        self.proposals_failed = 0  # etcd_server_proposals_failed_total
        self.backend_commit = Histogram(FSYNC_BUCKETS)  # the periodic backend sync (etcd: backend commit)
        self.auth = AuthStore(backend, token_provider(cfg.auth_token, cfg.auth_token_ttl))
        self.passwords = Passwords(cfg.bcrypt_cost)
        self.credentials = Credentials(self, cfg.client_tls.client_cert_auth)
        self.backend = backend
        self.store = KVStore(backend, leases=self.lessor, stats=self.mvcc_stats)
        self.watch_hub = WatchHub(self.store, clock=self.clock.monotonic, rng=runtime.random("watch"))
        self.applier = Applier(self.store, leases=self.lessor, on_changes=self.watch_hub.notify, auth=self.auth)
        self.log = replicated_log
        self.lease_runner = LeaseRunner(
            self, self.lessor, election_timeout=cfg.election_timeout_ms / 1000, request_timeout=cfg.request_timeout_s
        )
        if known_members is None:
            known_members = {mid: MemberInfo(mid, name, urls) for mid, (name, urls) in cfg.members.items()}
        self.known_members = known_members
        self._snapshot_seq = itertools.count()
        self._backend_lock = SharedLock()
        self.published = asyncio.Event()  # set once this member's attributes are in the applied log
        # request ids as etcd makes them: the low 16 bits of the member id on top, then a counter
        # started from the clock (so sizes, and the request-size limit, match etcd's to the byte)
        started_ms = int(self.clock.wall() * 1000)
        self._ids = itertools.count(((self.member_id & 0xFFFF) << 48) | ((started_ms & (2**40 - 1)) << 8))
        self._waiters: dict[int, tuple[asyncio.Future[Any], float]] = {}
        self._applied_waiters: list[tuple[int, int, asyncio.Future[None]]] = []  # heap of (index, seq, future)
        self._seq = itertools.count()
        self._compaction_wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._timeout = cfg.request_timeout_s
        self._conf_lock = asyncio.Lock()  # one membership change at a time through this member
        self._defrag_lock = asyncio.Lock()
        self._writes_allowed = asyncio.Event()  # cleared while the backend file is being replaced
        self._writes_allowed.set()
        self.quota = Quota(cfg.quota_backend_bytes, lambda: self.backend.size())
        self.compactor = compactor.new_compactor(
            cfg.auto_compaction_mode,
            cfg.auto_compaction_retention,
            self,
            revision_interval=cfg.revision_compaction_interval_s,
        )

    @property
    def applied_index(self) -> int:
        return self.applier.applied_index

    # ---- lifecycle ----

    async def start(self) -> None:
        membership = self.applier.membership
        if self.member_id in membership.removed:
            raise StartupError(
                f"the member has been permanently removed from the cluster (member {self.member_id:x}, data in "
                f"{self.cfg.data_dir}); to join again, remove its data directory and add it as a new member "
                "(etcdctl member add)"
            )
        if membership.members:
            self._sync_peers()  # the membership the log applied, not the flags of the first start
        if hasattr(self.log, "on_request"):  # a log that carries requests between members (raft.node)
            self.log.on_request = lambda peer, body: peer_requests.handle(self, peer, body)
        await self.log.start(self)
        self.watch_hub.start()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._expire_waiters(), name="expire-waiters"),
            loop.create_task(self._run_compactions(), name="compactions"),
            loop.create_task(self._sync_backend(), name="backend-sync"),
            loop.create_task(self._publish_attributes(), name="publish-attributes"),
            loop.create_task(self.lease_runner.run(), name="leases"),
        ]
        if self.compactor is not None:
            self._tasks.append(loop.create_task(self.compactor.run(), name="auto-compaction"))
        if self.cfg.corrupt_check_time_s > 0:
            check = corrupt.PeriodicCheck(self, self.cfg.corrupt_check_time_s)
            self._tasks.append(loop.create_task(check.run(), name="corruption-check"))
        if self.store.pending_compactions:
            self._compaction_wakeup.set()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.log.stop()
        await self.watch_hub.stop()
        self._executor.shutdown()
        self.passwords.close()
        self.backend.close()

    async def _publish_attributes(self) -> None:
        """Records this member's name and client URLs in the log (what MemberList shows), as etcd does."""
        cfg = self.cfg
        body = msgpack.packb([self.member_id, cfg.name, cfg.advertise_client_urls])
        while True:
            info = self.applier.membership.members.get(self.member_id)
            if info is not None and info.name == cfg.name and info.client_urls == cfg.advertise_client_urls:
                self.published.set()
                return
            if info is None:  # not a member (yet): the conf change adding us has not been applied
                await asyncio.sleep(1)
                continue
            try:
                await self.propose(Op.MEMBER_ATTRS, body)
            except EtcdError:
                await asyncio.sleep(0.5)

    # ---- the state machine the log drives (raft.api.StateMachine) ----

    def apply_conf_change(self, index: int, term: int, kind: str, member_id: int, context: bytes) -> bool:
        ctx = ChangeContext.decode(context)
        accepted, result = self.applier.apply_conf_change(
            index, term, kind, member_id, ctx, self.known_members.get(member_id)
        )
        if result is not None:
            waiter = self._waiters.pop(ctx.request_id, None) if ctx.request_id else None
            if waiter is not None and not waiter[0].done():
                waiter[0].set_result(result)
            if result.error is None:
                self._sync_peers()
                info = self.applier.membership.members.get(member_id)
                log.info(
                    "applied a membership change",
                    extra={
                        "change": kind,
                        "target_member_id": f"{member_id:x}",
                        "peer_urls": ",".join(info.peer_urls) if info is not None else "",
                    },
                )
        self._wake_applied()
        return accepted

    def conf_state(self) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
        return self.applier.membership.conf_state()

    def _sync_peers(self) -> None:
        """Tells the log who the members are (their first peer URL) and which ids were removed."""
        peers: dict[int, str] = {}
        for info in self.applier.membership.members.values():
            for url in info.peer_urls:
                try:
                    peers[info.id] = peer_address(url)
                    break
                except StartupError:  # etcd stores any string a MemberUpdate gives; we cannot dial it
                    log.warning("cannot use a peer URL", extra={"target_member_id": f"{info.id:x}", "url": url})
        set_peers = getattr(self.log, "set_peers", None)
        if set_peers is not None:
            set_peers(peers, self.applier.membership.removed)

    # Worker threads sync, copy and hash the backend holding _backend_lock shared; install_snapshot
    # holds it exclusively while it closes the environment (waiting for them, on the event loop,
    # which is rare).

    @property
    def backend_lock(self) -> SharedLock:
        """Held shared by whoever reads the backend from a worker thread (kvstore.snapshot.maintenance)."""
        return self._backend_lock

    def snapshot_dir(self) -> Path:
        """Where copies of the backend are made (the raft snapshot directory, cleaned at start)."""
        return self.cfg.data_dir / "member" / "snap"

    def sync(self) -> None:
        with self._backend_lock.shared():
            self.backend.sync()

    def snapshot_file(self, directory: Path) -> Path:
        """A consistent, compacted copy of the backend (LMDB copies from one read transaction)."""
        out = directory / f"outgoing-{os.getpid()}-{next(self._snapshot_seq)}"
        out.mkdir(parents=True)
        with self._backend_lock.shared():
            self.backend.env.copy(str(out), compact=True)
        return out / "data.mdb"

    def install_snapshot(self, path: Path) -> None:
        """Replaces the backend's contents by a snapshot received from the leader and reloads every
        part from it, in place (etcd's kv.Restore): the objects stay, their state is the snapshot's."""
        seen = self.store.current_rev
        backend = self.backend
        with self._backend_lock.exclusive():
            backend.replace_file(path)
        self.lessor.reload(backend)  # before the store, which re-attaches the leased keys
        self.auth.reload(backend)
        self.store.restore()
        self.applier.reload()
        self.watch_hub.reset(self.store, seen)  # watchers catch up from the snapshot, or are canceled if compacted
        self.quota.invalidate()
        if self.applier.membership.members:
            self._sync_peers()  # the snapshot's membership may differ from what this member knew
        log.info("installed snapshot", extra={"applied_index": self.applied_index, "revision": self.store.current_rev})

    # ---- the write path ----

    def apply_entries(self, entries: Sequence[CommittedEntry]) -> None:
        results = self.applier.apply([(e.index, e.term, e.data) for e in entries])
        waiters = self._waiters
        for request_id, result in results:
            if isinstance(result, CompactResult):
                self._compaction_wakeup.set()
            waiter = waiters.pop(request_id, None)
            if waiter is not None and not waiter[0].done():
                waiter[0].set_result(result)
        self._wake_applied()

    def _wake_applied(self) -> None:
        applied = self.applier.applied_index
        heap = self._applied_waiters
        while heap and heap[0][0] <= applied:
            fut = heapq.heappop(heap)[2]
            if not fut.done():
                fut.set_result(None)

    async def propose(self, op: Op, body: bytes, auth: tuple[str, int] | None = None) -> object:
        """Proposes a request and returns the applier's result for it (raising etcd's errors).

        auth is (username, auth revision) for a client's request (("", 0) without credentials), which
        the applier checks when auth is enabled; None for the member's own requests."""
        request_id = next(self._ids)
        if etcd_request_size(len(body), request_id, auth) > self.cfg.max_request_bytes:
            raise RequestTooLarge()
        data = encode_request(op, request_id, body, auth)
        fut = asyncio.get_running_loop().create_future()
        self._waiters[request_id] = (fut, self.clock.monotonic() + self._timeout)
        try:
            try:
                self.log.propose(data)
            except log_errors.LogError as exc:
                raise etcd_error(exc) from None
            result = await fut
        except EtcdError:
            self.proposals_failed += 1
            raise
        finally:
            self._waiters.pop(request_id, None)
        if isinstance(result, EtcdError):
            raise result
        return result

    async def configure(self, kind: str, member_id: int, ctx: ChangeContext) -> list[MemberInfo]:
        """Proposes a membership change and returns the members once it is applied (etcd's configure).

        While another change is proposed and unapplied it asks again until the request timeout.
        Raises etcd's error when the applier rejects the change, Timeout when it is not applied in time.
        """
        async with self._conf_lock:
            loop = asyncio.get_running_loop()
            deadline = self.clock.monotonic() + self._timeout
            request_id = next(self._ids)
            fut = loop.create_future()
            self._waiters[request_id] = (fut, deadline)
            try:
                data = ChangeContext(request_id, ctx.name, ctx.peer_urls, ctx.learner, ctx.promote).encode()
                while True:
                    try:
                        self.log.propose_conf_change(kind, member_id, data)
                        break
                    except log_errors.ConfChangePendingError:
                        if self.clock.monotonic() + CONF_CHANGE_RETRY >= deadline:
                            raise Timeout() from None
                        await asyncio.sleep(CONF_CHANGE_RETRY)
                    except log_errors.LogError as exc:
                        raise etcd_error(exc) from None
                result = await fut
            finally:
                self._waiters.pop(request_id, None)
        assert isinstance(result, ConfChangeResult)
        if result.error is not None:
            raise result.error
        return result.members

    async def read_barrier(self) -> None:
        """Returns once local reads are linearizable (the log's read index is applied)."""
        if unsafe.STALE_READS:  # deliberately broken for chaos tests (raft/unsafe.py): no ReadIndex
            return
        try:
            index = await self.log.read_index()
        except log_errors.LogError as exc:
            raise etcd_error(exc) from None
        await self.wait_applied(index)

    async def wait_applied(self, index: int) -> None:
        """Returns once index is applied (etcd's waitAppliedIndex); etcd's Timeout after the request timeout."""
        if index <= self.applier.applied_index:
            return
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._applied_waiters, (index, next(self._seq), fut))
        try:
            await asyncio.wait_for(fut, self._timeout)
        except TimeoutError:
            raise Timeout() from None

    async def _expire_waiters(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            now = self.clock.monotonic()
            expired = [rid for rid, (_, deadline) in self._waiters.items() if deadline <= now]
            for rid in expired:
                fut = self._waiters.pop(rid)[0]
                if not fut.done():
                    fut.set_exception(Timeout())

    # ---- compaction ----

    async def wait_compaction(self, job: CompactionJob) -> None:
        if job.done:
            return
        fut = asyncio.get_running_loop().create_future()
        job.waiters.append(fut)
        await fut

    async def _run_compactions(self) -> None:
        while True:
            await self._compaction_wakeup.wait()
            self._compaction_wakeup.clear()
            # a snapshot from the leader may restore the store between steps (its own interrupted
            # compaction then resumes from the snapshot's scheduled revision): the generation tells
            store = self.store
            while store.pending_compactions:
                await self._writes_allowed.wait()
                generation = store.generation
                job = store.pending_compactions[0]
                while store.generation == generation and not store.compaction_step(job):
                    await asyncio.sleep(0)  # let requests through between batches
                    await self._writes_allowed.wait()  # (not while the backend file is replaced)
                if store.generation == generation:
                    store.pending_compactions.pop(0)
                for fut in job.waiters:  # (when restored, the snapshot carries the compaction on)
                    if not fut.done():
                        fut.set_result(None)
                log.info("compaction finished", extra={"revision": job.rev})

    async def _sync_backend(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            started = time.perf_counter()
            await self._executor.run(self.sync)
            self.backend_commit.observe(time.perf_counter() - started)

    # ---- leadership, as the leader-side duties see it ----

    def is_leader(self) -> bool:
        return self.log.leader == self.member_id

    def is_learner(self) -> bool:
        """etcd's IsMemberExist(self) && IsLearner(): what the learner guard of the services asks."""
        info = self.applier.membership.members.get(self.member_id)
        return info is not None and info.is_learner

    # ---- quota and alarms ----

    async def check_quota(self, request: object) -> None:
        """etcd's quotaAlarmer: a write that does not fit raises NOSPACE through the log and is refused."""
        if self.quota.available(request):
            return
        log.warning(
            "the backend is over its quota; raising the NOSPACE alarm",
            extra={"quota_bytes": self.quota.quota_bytes, "db_size": self.backend.size()},
        )
        with contextlib.suppress(EtcdError):
            await self.raise_alarm(self.member_id, NOSPACE)
        raise NoSpace()

    async def raise_alarm(self, member_id: int, alarm: int) -> pb.AlarmResponse:
        return await self.alarm(
            pb.AlarmRequest(action=pb.AlarmRequest.ACTIVATE, memberID=member_id, alarm=cast("pb.AlarmType", alarm))
        )

    async def alarm(self, request: pb.AlarmRequest) -> pb.AlarmResponse:
        """Maintenance.Alarm: every action goes through the log, as in etcd."""
        return await self.propose(Op.ALARM, request.SerializeToString())  # type: ignore[return-value]

    # ---- defragmentation ----

    async def defragment(self) -> tuple[int, int]:
        """Rewrites the backend file compactly; returns its size before and after (bytes).

        Applying committed entries pauses for the copy (as etcd blocks its backend while it
        defragments); Raft, serializable reads and watches go on meanwhile. Raises EtcdError
        (UNKNOWN) when the copy fails, a full disk for one, leaving the backend as it was.
        """
        async with self._defrag_lock:
            pause = getattr(self.log, "apply_paused", None)
            async with pause() if pause is not None else contextlib.nullcontext():
                self._writes_allowed.clear()
                try:
                    return await self._defragment()
                finally:
                    self._writes_allowed.set()

    async def _defragment(self) -> tuple[int, int]:
        backend = self.backend
        before = backend.size()
        # named like the snapshots' copies so a crash leaves nothing behind (the raft snap dir is cleaned)
        work = self.snapshot_dir() / f"outgoing-defrag-{os.getpid()}-{next(self._snapshot_seq)}"
        lock = self._backend_lock
        started = self.clock.monotonic()
        generation = self.store.generation  # a snapshot installed from here on makes the copy stale

        def copy() -> Path:
            with lock.shared():
                return backend.copy_compacted(work)

        try:
            copied = await self._executor.run(copy)
        except (lmdb.Error, OSError) as exc:
            shutil.rmtree(work, ignore_errors=True)
            log.warning("failed to defragment", extra={"error": str(exc)})
            raise EtcdError(f"raftkv: defragment failed: {exc}") from None
        try:
            await self._executor.run(lock.acquire_exclusive)
            try:
                if self.store.generation != generation:  # a snapshot from the leader replaced it meanwhile
                    return before, backend.size()
                backend.replace_file(copied)
                self.quota.invalidate()
            finally:
                lock.release_exclusive()
        finally:
            shutil.rmtree(work, ignore_errors=True)
        after = backend.size()
        log.info(
            "finished defragmenting the backend",
            extra={
                "db_size_before": before,
                "db_size_after": after,
                "db_size_in_use": backend.size_in_use(),
                "seconds": round(self.clock.monotonic() - started, 3),
            },
        )
        return before, after

    # ---- auto-compaction (kvstore.compactor.CompactHost) ----

    def current_revision(self) -> int:
        return self.store.current_rev

    async def compact(self, revision: int) -> None:
        await self.propose(Op.COMPACT, pb.CompactionRequest(revision=revision).SerializeToString())

    # ---- corruption checks (kvstore.corrupt.CorruptHost) ----

    def peer_ids(self) -> list[int]:
        return sorted(m for m in self.applier.membership.members if m != self.member_id)

    async def local_hash_kv(self, revision: int) -> tuple[int, int, int]:
        return await hash_kv(self, revision)

    async def peer_hash_kv(self, peer: int, revision: int) -> tuple[int, int, int]:
        return await peer_requests.ask_hash_kv(self, peer, revision)

    async def raise_corrupt(self) -> None:
        await self.raise_alarm(0, CORRUPT)

    # ---- responses ----

    def fill_header(self, header: pb.ResponseHeader, revision: bool = True) -> None:
        """etcd's header; the Cluster service's carries no revision, as etcd's does not."""
        header.cluster_id = self.cluster_id
        header.member_id = self.member_id
        header.raft_term = self.log.term
        if revision and not header.revision:
            header.revision = self.store.current_rev


def _varint_len(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7)


def etcd_request_size(body_len: int, request_id: int, auth: tuple[str, int] | None = None) -> int:
    """The size etcd checks against --max-request-bytes: its InternalRaftRequest with the request's
    header (a field holding the id, and the username and auth revision of an authenticated
    request) and the request itself as one field; our own log envelope is of a similar size, but
    the limit is etcd's, to the byte."""
    header = 1 + _varint_len(request_id)  # field 1 of RequestHeader: the id
    if auth is not None and auth[0]:
        name = len(auth[0].encode())
        header += 1 + _varint_len(name) + name + (1 + _varint_len(auth[1]) if auth[1] else 0)
    return (2 + _varint_len(header) + header) + (1 + _varint_len(body_len) + body_len)  # header is field 100
