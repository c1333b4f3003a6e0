"""What every side of the peer transport shares: the per-peer outgoing state, the transport's fields
(declared once, for the dialling, listening and snapshot sides that ``raft.transport.Transport`` is
made of), and the helpers they all use (callbacks on the loop, tasks, frames, nonces, dialling)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgpack

from raft.core.types import Message
from raft.net.dialing import open_connection
from raft.net.framing import NONCE_BYTES, Rejected, encode_frame, read_raw
from raft.net.limiter import LogLimiter
from raft.net.security import PeerSecurity
from raft.snapshot import SnapshotDir
from raft.stats import RaftStats

log = logging.getLogger("raftkv.transport")


class PeerState:
    """Outgoing state for one peer; the connection itself lives in its writer task."""

    __slots__ = (
        "accepting",
        "addr",
        "connected_at",
        "down",
        "id",
        "idle_writer",
        "overflowed",
        "queue",
        "snap_task",
        "task",
        "wake",
    )

    def __init__(self, peer_id: int, addr: tuple[str, int], max_queue: int) -> None:
        self.id = peer_id
        self.connected_at: float | None = None  # loop time the current outgoing connection came up
        self.addr = addr
        self.queue: deque[Message] = deque(maxlen=max_queue)
        self.wake = asyncio.Event()
        self.accepting = True  # False during reconnect backoff: messages are dropped
        self.overflowed = False  # on_unreachable already reported for the current overflow
        self.down = False  # a failure was logged; log when the peer is reachable again
        self.task: asyncio.Task[None] | None = None
        # the connection while its writer task waits with nothing queued or buffered: the first send
        # of a loop turn writes to it at once (``OutgoingPeers._write_through``)
        self.idle_writer: asyncio.StreamWriter | None = None
        self.snap_task: asyncio.Task[None] | None = None


class TransportState:
    """The fields of a Transport and the helpers every side of it uses (set up by Transport.__init__)."""

    member_id: int
    cluster_id: int
    bound_ports: list[int]
    stats: RaftStats
    security: PeerSecurity
    _deliver: Callable[[Message], None]
    _on_unreachable: Callable[[int], None]
    _on_snapshot_status: Callable[[int, bool], None]
    _snapshot_source: Callable[[Message], Awaitable[Path]]
    _snapshot_dir: SnapshotDir
    _deliver_snapshot: Callable[[Message, Path], None]
    _max_queue: int
    _on_request: Callable[[int, bytes], Awaitable[bytes]] | None
    _on_removed: Callable[[], None] | None
    _removed: set[int]  # member ids whose connections are answered with REMOVED
    _removed_reported: bool
    _peers: dict[int, PeerState]
    _servers: list[asyncio.Server]
    _tasks: set[asyncio.Task[Any]]  # everything we started and must await on stop
    _incoming: dict[int, dict[asyncio.Task[Any], None]]  # peer -> its reader tasks, oldest first
    _packer: msgpack.Packer
    _limiter: LogLimiter
    _io: ThreadPoolExecutor | None  # one thread for snapshot file I/O, made on first use
    _loop: asyncio.AbstractEventLoop | None
    _started: bool
    _stopping: bool
    _local_addr: tuple[str, int] | None
    _nonces: dict[bytes, int]  # HELLO nonce of each open outgoing connection -> its peer
    _pending: int  # incoming connections not verified yet

    def _call_soon(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop or asyncio.get_running_loop()
        loop.call_soon(self._callback, fn, *args)

    def _callback(self, fn: Callable[..., None], *args: Any) -> None:
        if self._stopping:
            return
        try:
            fn(*args)
        except Exception:
            log.exception("transport callback failed", extra={"callback": getattr(fn, "__name__", repr(fn))})

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _report_removed(self) -> None:
        if self._removed_reported or self._on_removed is None:
            return
        self._removed_reported = True
        self._call_soon(self._on_removed)

    # ---- sending ----

    async def _dial(self, addr: tuple[str, int]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await open_connection(addr, self.security.client_ssl, self._local_addr)

    def _new_nonce(self, peer: int) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        self._nonces[nonce] = peer
        return nonce

    def _frame(self, to: int, kind: int, body: Any) -> bytes:
        return encode_frame(self._packer, self.cluster_id, self.member_id, to, kind, body)

    async def _read_frame(self, reader: asyncio.StreamReader, cap: int) -> tuple[Any, Any, Any]:
        """Reads one frame addressed to us by our cluster: returns (from_id, kind, body) or raises Rejected."""
        (cluster_id, frm, to, kind, body), n = await read_raw(reader, cap)
        self._check_addressed(cluster_id, to)
        received = self.stats.received_bytes
        if frm in received or frm in self._peers:
            received[frm] = received.get(frm, 0) + 4 + n
        return frm, kind, body

    def _check_addressed(self, cluster_id: Any, to: Any) -> None:
        if cluster_id != self.cluster_id:
            raise Rejected("cluster_id_mismatch", their_cluster_id=repr(cluster_id)[:40])
        if to != self.member_id:
            raise Rejected("to_id_mismatch", to_id=repr(to)[:40])
