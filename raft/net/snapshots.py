"""Snapshot streaming between members: a MsgSnap's file goes on a connection of its own (HELLO,
SNAP_BEGIN, chunks, SNAP_END with the CRC), file I/O on one thread; the receiver writes it into the
snapshot directory, fsyncs it, answers SNAP_ACK and hands the complete file over. Every MsgSnap
sent gets exactly one snapshot status; at most one is in flight per peer."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO

from raft import snapshot as snapfiles
from raft.core.types import Message, MessageType
from raft.net import framing
from raft.net.dialing import close, set_nodelay
from raft.net.framing import (
    HELLO,
    HELLO_MAX_FRAME,
    PROTOCOL_VERSION,
    SNAP_ACK,
    SNAP_BEGIN,
    SNAP_CHUNK,
    SNAP_END,
    Rejected,
)
from raft.net.state import PeerState, TransportState, log
from raft.peer_messages import message_from_peer

SNAP_IO_TIMEOUT = 30.0
"""No progress on a snapshot stream for this long (a chunk, or fsync before the ACK) fails it."""
_SNAP = MessageType.SNAP


class SnapshotStreams(TransportState):
    """Sending and receiving snapshot files."""

    def _start_snapshot(self, p: PeerState, m: Message) -> None:
        if not self._started:
            self._call_soon(self._on_snapshot_status, p.id, False)
            return
        if p.snap_task is not None:
            self._limiter.log(
                logging.WARNING,
                ("snap-busy", p.id),
                "a snapshot to this peer is in flight; failing the new one",
                raft_peer=f"{p.id:x}",
            )
            self._call_soon(self._on_snapshot_status, p.id, False)
            return
        p.snap_task = self._spawn(self._send_snapshot(p, m), f"raft-snap-to-{p.id:x}")

    def _io_executor(self) -> ThreadPoolExecutor:
        if self._io is None:
            self._io = ThreadPoolExecutor(1, thread_name_prefix="raft-snap-io")
        return self._io

    async def _send_snapshot(self, p: PeerState, m: Message) -> None:
        loop = asyncio.get_running_loop()
        io = self._io_executor()
        index = m.snapshot.metadata.index if m.snapshot is not None else 0
        ok = False
        f: BinaryIO | None = None
        writer: asyncio.StreamWriter | None = None
        nonce: bytes | None = None
        started = time.monotonic()
        try:
            path = await self._snapshot_source(m)
            f, size = snapfiles.open_read(path)  # opening is quick; reads go to the I/O thread
            reader, writer = await self._dial(p.addr)
            set_nodelay(writer)
            nonce = self._new_nonce(p.id)
            writer.write(
                self._frame(p.id, HELLO, [PROTOCOL_VERSION, nonce]) + self._frame(p.id, SNAP_BEGIN, [m.to_wire(), size])
            )
            crc, sent = 0, 0
            while True:
                chunk, crc = await loop.run_in_executor(io, snapfiles.read_chunk, f, crc)
                if not chunk:
                    break
                sent += len(chunk)
                writer.write(self._frame(p.id, SNAP_CHUNK, chunk))
                async with asyncio.timeout(SNAP_IO_TIMEOUT):
                    await writer.drain()
            if sent != size:
                raise OSError(f"snapshot file changed while being sent ({sent} bytes read, {size} expected)")
            writer.write(self._frame(p.id, SNAP_END, crc))
            async with asyncio.timeout(SNAP_IO_TIMEOUT):
                await writer.drain()
                frm, kind, body = await self._read_frame(reader, HELLO_MAX_FRAME)
            if frm != p.id or kind != SNAP_ACK or body != index:
                raise Rejected("bad_snapshot_ack", kind=kind)
            ok = True
            log.info(
                "snapshot sent",
                extra={
                    "raft_peer": f"{p.id:x}",
                    "index": index,
                    "bytes": size,
                    "seconds": round(time.monotonic() - started, 3),
                },
            )
        except Exception as exc:
            self._limiter.log(
                logging.WARNING,
                ("snap-send", p.id),
                "sending a snapshot failed",
                raft_peer=f"{p.id:x}",
                index=index,
                error=repr(exc),
            )
        finally:
            if nonce is not None:
                self._nonces.pop(nonce, None)
            if p.snap_task is asyncio.current_task():
                p.snap_task = None
            if writer is not None:
                await close(writer, abort=not ok)
            if f is not None:
                io.submit(snapfiles.discard, f, None)
            self._callback(self._on_snapshot_status, p.id, ok)

    # ---- snapshots, receiver side ----

    async def _receive_snapshot(
        self, peer: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: Any
    ) -> None:
        try:
            wire, total = body
            msg = message_from_peer(wire, allow_snapshot=True)
        except (ValueError, TypeError):
            raise Rejected("malformed_snapshot") from None
        if type(total) is not int or total < 0 or msg.type is not _SNAP or msg.to != self.member_id or msg.frm != peer:
            raise Rejected("malformed_snapshot")
        if msg.snapshot is None:
            raise Rejected("malformed_snapshot")
        md = msg.snapshot.metadata
        loop = asyncio.get_running_loop()
        io = self._io_executor()
        started = time.monotonic()
        f, tmp = self._snapshot_dir.open_incoming(peer, md.index)  # quick; writes: I/O thread
        final = self._snapshot_dir.received_path(peer, md.term, md.index)
        done = False
        try:
            crc, received = 0, 0
            while True:
                async with asyncio.timeout(SNAP_IO_TIMEOUT):
                    frm, kind, body = await self._read_frame(reader, framing.MAX_FRAME)
                if frm != peer:
                    raise Rejected("from_id_mismatch", from_id=repr(frm)[:40])
                if kind == SNAP_CHUNK and type(body) is bytes:
                    received += len(body)
                    if received > total:
                        raise Rejected("snapshot_too_long", size=total)
                    crc = await loop.run_in_executor(io, snapfiles.write_chunk, f, body, crc)
                elif kind == SNAP_END:
                    if received != total:
                        raise Rejected("snapshot_truncated", size=total, received=received)
                    if body != crc:
                        raise Rejected("snapshot_crc_mismatch", size=total)
                    await loop.run_in_executor(io, snapfiles.commit, f, tmp, final)
                    done = True
                    break
                else:
                    raise Rejected("unexpected_frame", kind=repr(kind)[:40])
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            self._limiter.log(
                logging.WARNING,
                ("snap-recv", peer),
                "snapshot stream broke; discarding it",
                raft_peer=f"{peer:x}",
                index=md.index,
                error=repr(exc),
            )
            raise
        finally:
            if not done:
                await asyncio.shield(asyncio.wrap_future(io.submit(snapfiles.discard, f, tmp)))
        log.info(
            "snapshot received",
            extra={
                "raft_peer": f"{peer:x}",
                "index": md.index,
                "bytes": total,
                "file": str(final),
                "seconds": round(time.monotonic() - started, 3),
            },
        )
        writer.write(self._frame(peer, SNAP_ACK, md.index))
        self._callback(self._deliver_snapshot, msg, final)
        async with asyncio.timeout(SNAP_IO_TIMEOUT):
            await writer.drain()
