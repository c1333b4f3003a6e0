"""A running member: its store, applier and replicated log, and the bookkeeping between them.

Writes: a request is encoded, a waiter is registered under a fresh request id, the entry is
proposed, and when the log hands the committed entry to ``apply_entries`` the applier's result
resolves the waiter. Every member applies every entry; only the one that proposed it has a
waiter. Linearizable reads wait for the log's read index to be applied.

Requests that wait longer than etcd's request timeout fail with ``etcdserver: request timed
out``; the entry itself may still be applied later, exactly as with etcd.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import msgpack

from kvstore.apply import Applier, CompactResult, Op, encode_request
from kvstore.auth import AuthStore, token_provider
from kvstore.auth.passwords import Passwords
from kvstore.config import ServerConfig
from kvstore.errors import EtcdError, RequestTooLarge, Timeout
from kvstore.lease import Lessor, min_lease_ttl
from kvstore.lease.runner import LeaseRunner
from kvstore.membership import MemberInfo
from kvstore.mvcc import Backend, KVStore
from kvstore.mvcc.shared_lock import SharedLock
from kvstore.mvcc.store import CompactionJob
from kvstore.server.credentials import Credentials
from kvstore.watch import WatchHub
from proto.etcdserverpb import rpc_pb2 as pb
from raft import unsafe
from raft.api import CommittedEntry, ReplicatedLog

log = logging.getLogger("raftkv.member")

VERSION = "3.5.17"  # the etcd API version we answer to (Kubernetes gates features on it)


class Member:
    def __init__(self, cfg: ServerConfig, replicated_log: ReplicatedLog, backend: Backend) -> None:
        self.cfg = cfg
        self.member_id = cfg.member_id
        self.cluster_id = cfg.cluster_id
        # the lessor first: the store re-attaches every leased key to it when it opens
        self.lessor = Lessor(backend, min_ttl=min_lease_ttl(cfg.heartbeat_interval_ms, cfg.election_timeout_ms))
        self.watch_hub: WatchHub | None = None
        self.auth = AuthStore(backend, token_provider(cfg.auth_token, cfg.auth_token_ttl))
        self.passwords = Passwords(cfg.bcrypt_cost)
        self.credentials = Credentials(self, cfg.client_tls.client_cert_auth)
        self._open_state(backend)
        self.log = replicated_log
        self.lease_runner = LeaseRunner(
            self, self.lessor, election_timeout=cfg.election_timeout_ms / 1000, request_timeout=cfg.request_timeout_s
        )
        self.known_members = {mid: MemberInfo(mid, name, urls) for mid, (name, urls) in cfg.members.items()}
        self._snapshot_seq = itertools.count()
        self._backend_lock = SharedLock()
        self.published = asyncio.Event()  # set once this member's attributes are in the applied log
        # request ids as etcd makes them: the low 16 bits of the member id on top, then a counter
        # started from the clock (so sizes, and the request-size limit, match etcd's to the byte)
        self._ids = itertools.count(((cfg.member_id & 0xFFFF) << 48) | ((int(time.time() * 1000) & (2**40 - 1)) << 8))
        self._waiters: dict[int, tuple[asyncio.Future, float]] = {}
        self._applied_waiters: list[tuple[int, int, asyncio.Future]] = []  # heap of (index, seq, future)
        self._seq = itertools.count()
        self._compaction_wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._timeout = cfg.request_timeout_s

    def _open_state(self, backend: Backend) -> None:
        """Opens the store over backend with its applier, lessor and watch hooks (at start, and after
        a snapshot from the leader replaced the backend)."""
        self.backend = backend
        self.store = KVStore(backend, leases=self.lessor)
        if self.watch_hub is None:
            self.watch_hub = WatchHub(self.store)
        else:
            self.watch_hub.reset(self.store)  # watchers catch up from the new store, or are canceled if compacted
        self.applier = Applier(self.store, leases=self.lessor, on_changes=self.watch_hub.notify, auth=self.auth)

    @property
    def applied_index(self) -> int:
        return self.applier.applied_index

    # ---- lifecycle ----

    async def start(self) -> None:
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

    def apply_conf_change(self, index: int, term: int, kind: str, member_id: int, context: bytes) -> None:
        self.applier.apply_conf_change(index, term, kind, member_id, context, self.known_members.get(member_id))

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
        """Replaces the backend by a snapshot received from the leader and reloads everything from it."""
        with self._backend_lock.exclusive():
            db_dir = self.backend.path
            self.backend.close()
            (db_dir / "lock.mdb").unlink(missing_ok=True)
            os.replace(path, db_dir / "data.mdb")
            backend = Backend(db_dir)
        self.lessor.reload(backend)  # before the store, which re-attaches the leased keys
        self.auth.reload(backend)
        self._open_state(backend)
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
        self._waiters[request_id] = (fut, time.monotonic() + self._timeout)
        try:
            self.log.propose(data)
            result = await fut
        finally:
            self._waiters.pop(request_id, None)
        if isinstance(result, EtcdError):
            raise result
        return result

    async def read_barrier(self) -> None:
        """Returns once local reads are linearizable (the log's read index is applied)."""
        if unsafe.STALE_READS:  # deliberately broken for chaos tests (raft/unsafe.py): no ReadIndex
            return
        await self.wait_applied(await self.log.read_index())

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
            now = time.monotonic()
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
            # self.store is read afresh: a snapshot from the leader may replace it between steps (its
            # own interrupted compaction then resumes from the new store's scheduled revision)
            while self.store.pending_compactions:
                store = self.store
                job = store.pending_compactions[0]
                while store is self.store and not store.compaction_step(job):
                    await asyncio.sleep(0)  # let requests through between batches
                if store is self.store:
                    store.pending_compactions.pop(0)
                for fut in job.waiters:  # (when replaced, the new store carries the compaction on)
                    if not fut.done():
                        fut.set_result(None)
                log.info("compaction finished", extra={"revision": job.rev})

    async def _sync_backend(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.1)
            await loop.run_in_executor(None, self.sync)

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
