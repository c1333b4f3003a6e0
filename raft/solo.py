"""A single member's replicated log: the WAL with no peers, committed as soon as it is durable.

Proposals arriving in one loop iteration become one batch: one WAL write and fdatasync (on a
worker thread, so the event loop keeps taking requests that form the next batch), then one
apply. Every restart counts as an election and bumps the term, as a single-member Raft group's
does. This is the stand-in the Raft issue replaces with ``raft.node.RaftNode``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kvstore.errors import StartupError, Stopped, TooManyRequests
from raft import failpoints
from raft.api import ApplyFn, StateMachine
from raft.wal import WAL, WalEntry

log = logging.getLogger("raftkv.solo")

MAX_BATCH_ENTRIES = 2048
MAX_PENDING = 50_000  # proposals queued behind the WAL before new ones are refused


class SoloLog:
    def __init__(self, wal_dir: Path, member_id: int, cluster_id: int, applied_index: int) -> None:
        self.wal_dir = wal_dir
        self.member_id = member_id
        self.cluster_id = cluster_id
        self._applied_at_open = applied_index
        self._term = 0
        self._last_index = 0
        self._commit = 0
        self._pending: list[bytes] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="wal")
        self._wal: WAL | None = None
        self._apply: ApplyFn | None = None
        self._stopped = False
        self.fatal: asyncio.Future | None = None  # set with the exception that stopped the log

    @property
    def term(self) -> int:
        return self._term

    @property
    def leader(self) -> int:
        return self.member_id

    @property
    def commit_index(self) -> int:
        return self._commit

    async def start(self, sm: StateMachine) -> None:
        apply = sm.apply_entries
        self._apply = apply
        loop = asyncio.get_running_loop()
        self.fatal = loop.create_future()
        if WAL.exists(self.wal_dir):
            wal, state = WAL.open(self.wal_dir)
            if (state.member_id, state.cluster_id) != (self.member_id, self.cluster_id):
                raise StartupError(
                    f"WAL in {self.wal_dir} belongs to member {state.member_id:x} of cluster "
                    f"{state.cluster_id:x}, not {self.member_id:x} of {self.cluster_id:x}"
                )
            entries = state.entries
            self._last_index = entries[-1].index if entries else state.snapshot_index
            if self._applied_at_open > self._last_index:
                raise StartupError(
                    f"backend has applied entry {self._applied_at_open} but the WAL in {self.wal_dir} ends "
                    f"at {self._last_index}: the WAL lost acknowledged entries; refusing to start"
                )
            self._term = state.term
            replay = [e for e in entries if e.index > self._applied_at_open]
            for i in range(0, len(replay), MAX_BATCH_ENTRIES):
                apply(replay[i : i + MAX_BATCH_ENTRIES])
            if replay:
                log.info("replayed WAL tail", extra={"entries": len(replay), "last_index": self._last_index})
        else:
            if self._applied_at_open:
                raise StartupError(f"backend has applied entries but there is no WAL in {self.wal_dir}")
            wal = WAL.create(self.wal_dir, self.member_id, self.cluster_id)
        self._wal = wal
        self._term += 1  # a restart is an election
        self._commit = self._last_index
        wal.save((), (self._term, self.member_id, self._commit))
        self._task = loop.create_task(self._run(), name="solo-log")

    def propose(self, data: bytes) -> None:
        if self._stopped:
            raise Stopped()
        if len(self._pending) >= MAX_PENDING:
            raise TooManyRequests()
        self._pending.append(data)
        self._wake.set()

    async def read_index(self) -> int:
        if self._stopped:
            raise Stopped()
        return self._commit

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        wal = self._wal
        apply = self._apply
        assert wal is not None and apply is not None
        try:
            while not self._stopped:
                await self._wake.wait()
                self._wake.clear()
                while self._pending and not self._stopped:
                    batch = self._pending[:MAX_BATCH_ENTRIES]
                    del self._pending[:MAX_BATCH_ENTRIES]
                    term = self._term
                    first = self._last_index + 1
                    entries = [WalEntry(term, first + i, 0, data) for i, data in enumerate(batch)]
                    last = first + len(batch) - 1
                    await loop.run_in_executor(self._executor, wal.save, entries, (term, self.member_id, last))
                    self._last_index = self._commit = last
                    failpoints.hit("beforeApply")
                    apply(entries)
                    failpoints.hit("afterApply")
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a failed fsync or a bug in apply: nothing more may be acknowledged
            self._stopped = True
            log.critical("log stopped", exc_info=exc)
            if self.fatal is not None and not self.fatal.done():
                self.fatal.set_result(exc)

    async def stop(self) -> None:
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)
        if self._wal is not None:
            self._wal.close()
