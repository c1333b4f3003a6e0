"""The outgoing side of the peer transport: one writer task per peer that dials it, says HELLO, writes
everything queued for it in batches (one write per wakeup, split under the frame limit), notices a
closed or REMOVED connection, and on failure drops the queue, reports the peer unreachable and
redials with jittered exponential backoff (the loss policy of ``raft.transport``).

Write-through: while a peer's writer task waits with nothing queued and nothing buffered, the
first ``send`` of a loop turn writes straight to its connection instead of waking the task (which
costs a loop iteration, about 60 µs on the put path); it then hands the connection back to the
task, so that later sends of the same turn are queued and go out together in one batch."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl

from raft.core.types import Message
from raft.net import framing
from raft.net.dialing import close, drain_input, set_nodelay
from raft.net.framing import HELLO, LEN, MSG, PROTOCOL_VERSION
from raft.net.state import PeerState, TransportState, log

BACKOFF_MIN = 0.05
BACKOFF_MAX = 1.0
WRITE_STALL_TIMEOUT = 5.0
"""A peer that does not take a single batch of ours for this long is treated as gone."""


class OutgoingPeers(TransportState):
    """The writer tasks of a Transport's peers."""

    def _start_peer(self, p: PeerState) -> None:
        p.accepting = True
        p.task = self._spawn(self._run_peer(p), f"raft-peer-{p.id:x}")

    def _encode_batch(self, to: int, batch: list[Message]) -> bytes:
        payload = self._packer.pack([self.cluster_id, self.member_id, to, MSG, [m.to_wire() for m in batch]])
        if len(payload) <= framing.MAX_FRAME:
            return LEN.pack(len(payload)) + payload
        if len(batch) == 1:
            self._limiter.log(
                logging.WARNING,
                ("oversized", to),
                "dropping a message larger than the frame limit",
                raft_peer=f"{to:x}",
                size=len(payload),
                max_frame=framing.MAX_FRAME,
                type=batch[0].type.name,
            )
            return b""
        half = len(batch) // 2
        return self._encode_batch(to, batch[:half]) + self._encode_batch(to, batch[half:])

    def _peer_failed(self, p: PeerState, what: str, exc: BaseException | None) -> None:
        """Connection to p failed or broke: drop its queue, report it once for this backoff step."""
        p.accepting = False
        p.queue.clear()
        p.overflowed = False
        p.down = True
        self._limiter.log(
            logging.WARNING,
            ("down", p.id),
            f"peer {what}",
            raft_peer=f"{p.id:x}",
            address=f"{p.addr[0]}:{p.addr[1]}",
            error=repr(exc),
        )
        self._callback(self._on_unreachable, p.id)

    async def _run_peer(self, p: PeerState) -> None:
        """The writer task of one peer: dial, pump the queue, and on failure back off and redial."""
        loop = asyncio.get_running_loop()
        backoff = BACKOFF_MIN
        while True:
            host, port = p.addr
            try:
                reader, writer = await self._dial(p.addr)
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                self._peer_failed(p, "unreachable", exc)
            else:
                connected_at = loop.time()
                p.connected_at = connected_at
                if p.down:
                    p.down = False
                    log.info("peer reachable", extra={"raft_peer": f"{p.id:x}", "address": f"{host}:{port}"})
                try:
                    await self._pump(p, reader, writer)
                except (OSError, TimeoutError, ssl.SSLError) as exc:
                    self._peer_failed(p, "connection lost", exc)
                except Exception as exc:  # a bug (e.g. an unencodable message): log it, keep the peer alive
                    log.exception("peer writer failed", extra={"raft_peer": f"{p.id:x}"})
                    self._peer_failed(p, "writer failed", exc)
                finally:
                    p.connected_at = None
                if loop.time() - connected_at >= BACKOFF_MAX:
                    backoff = BACKOFF_MIN
            await asyncio.sleep(random.uniform(backoff / 2, backoff))
            backoff = min(backoff * 2, BACKOFF_MAX)
            p.accepting = True

    def _write_queued(self, p: PeerState, writer: asyncio.StreamWriter) -> None:
        """Writes everything queued for p as one batch (split under the frame limit)."""
        q = p.queue
        batch = list(q)
        q.clear()
        p.overflowed = False
        data = self._encode_batch(p.id, batch)
        if data:
            writer.write(data)
            self.stats.sent_bytes[p.id] += len(data)

    def _write_through(self, p: PeerState) -> None:
        """Called by send for a peer it queued to: writes at once if its connection is idle."""
        writer = p.idle_writer
        if writer is None:
            return
        p.idle_writer = None  # the rest of this turn's sends are queued: the writer task batches them
        p.wake.set()  # and it goes around once, draining what the kernel did not take
        try:
            self._write_queued(p, writer)
        except Exception:  # as a failed write in the writer task: the link goes down and is redialled
            log.exception("peer write failed", extra={"raft_peer": f"{p.id:x}"})
            writer.transport.abort()

    async def _pump(self, p: PeerState, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Writes everything queued for p, one batch (one write, one drain) per wakeup, until the link breaks."""
        set_nodelay(writer)
        q, wake, transport = p.queue, p.wake, writer.transport
        self.stats.sent_bytes.setdefault(p.id, 0)
        watcher = asyncio.get_running_loop().create_task(drain_input(reader, wake, self._report_removed))
        nonce = self._new_nonce(p.id)
        try:
            writer.write(self._frame(p.id, HELLO, [PROTOCOL_VERSION, nonce]))
            while True:
                if transport.get_write_buffer_size():  # the kernel did not take it all: wait, but not forever
                    async with asyncio.timeout(WRITE_STALL_TIMEOUT):
                        await writer.drain()
                while not q:
                    if watcher.done() or transport.is_closing():
                        raise ConnectionResetError("peer closed the connection")
                    if transport.get_write_buffer_size():
                        break  # a write-through left bytes behind: drain them first
                    wake.clear()
                    p.idle_writer = writer
                    try:
                        await wake.wait()
                    finally:
                        p.idle_writer = None
                if watcher.done() or transport.is_closing():
                    raise ConnectionResetError("peer closed the connection")
                if q:
                    self._write_queued(p, writer)
        finally:
            p.idle_writer = None
            self._nonces.pop(nonce, None)
            watcher.cancel()
            await close(writer, abort=True)
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    # ---- snapshots, sender side ----
