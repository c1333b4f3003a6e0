"""The listening side of the peer transport: accepting connections, checking who is on the other end
(the VERIFY dial-back, certificates, removed members, connection limits), reading a verified peer's
frames and delivering its messages, and answering requests (a member's, or one stranger request).
See ``raft.transport`` for the rules."""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from raft.net import framing
from raft.net.dialing import close, set_nodelay
from raft.net.framing import (
    HELLO,
    HELLO_MAX_FRAME,
    MSG,
    NONCE_BYTES,
    PROTOCOL_VERSION,
    READ_LIMIT,
    REMOVED,
    REQUEST,
    RESPONSE,
    SNAP_BEGIN,
    VERIFIED,
    VERIFY,
    PeerRequestError,
    Rejected,
    read_raw,
)
from raft.net.snapshots import SnapshotStreams
from raft.net.state import log
from raft.peer_messages import message_from_peer

REQUEST_TIMEOUT = 10.0
"""A request's answer must be written (and a stranger's request read) within this long."""
FIRST_FRAME_TIMEOUT = 5.0
"""A connection (TLS handshake included) must deliver its first frame within this."""
VERIFY_TIMEOUT = 3.0
"""Asking a peer whether a connection is really its own must be answered within this."""
MAX_PENDING = 32
"""Connections at most between accept and verification; more are closed at once."""
MAX_CONNECTIONS_PER_PEER = 4
"""Verified incoming connections at most per member (messages, snapshots, and a reconnect's overlap);
a newer verified one replaces the oldest."""


class Listener(SnapshotStreams):
    """A Transport's listeners and the readers of its incoming connections."""

    async def _listen(self, addrs: list[tuple[str, int]]) -> None:
        """Binds every address (port 0 picks one); raises OSError, with nothing left bound, if one cannot be bound."""
        try:
            for host, port in addrs:
                server = await asyncio.start_server(
                    self._on_connection,
                    host,
                    port,
                    limit=READ_LIMIT,
                    reuse_address=True,
                    ssl=self.security.server_ssl,
                    ssl_handshake_timeout=FIRST_FRAME_TIMEOUT if self.security.server_ssl else None,
                )
                self._servers.append(server)
                self.bound_ports.append(server.sockets[0].getsockname()[1])
        except BaseException:
            for server in self._servers:
                server.close()
            self._servers.clear()
            self.bound_ports.clear()
            raise

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer: int | None = None
        abort = True
        pending = False
        try:
            if self._stopping:
                return
            if self._pending >= MAX_PENDING:
                raise Rejected("too_many_pending_connections", max_pending=MAX_PENDING)
            self._pending += 1
            pending = True
            set_nodelay(writer)
            allow = self.security.allow_certificate
            if allow is not None and not allow(writer.get_extra_info("peercert")):
                raise Rejected("certificate_not_allowed")
            async with asyncio.timeout(FIRST_FRAME_TIMEOUT):
                (cluster_id, frm, to, kind, body), _ = await read_raw(reader, HELLO_MAX_FRAME)
            stranger = cluster_id == 0 and frm == 0 and to == 0  # a member that does not know the cluster yet
            if not stranger:
                self._check_addressed(cluster_id, to)
            if kind == VERIFY and not stranger:
                await self._answer_verify(frm, body, writer)
                abort = False
                return
            if kind != HELLO:
                raise Rejected("expected_hello", kind=repr(kind)[:40])
            if (
                type(body) is not list
                or len(body) != 2
                or body[0] != PROTOCOL_VERSION
                or type(body[1]) is not bytes
                or len(body[1]) != NONCE_BYTES
            ):
                raise Rejected("protocol_version", version=repr(body)[:40])
            if stranger:
                abort = not await self._serve_stranger(reader, writer)
                return
            if type(frm) is int and frm in self._removed:
                # no identity check: telling whoever claims a removed id that it is removed delivers
                # nothing (a removed member is no longer a peer, so it could not be dialled back)
                writer.write(self._frame(frm, REMOVED, None))
                async with asyncio.timeout(1.0):
                    await writer.drain()
                raise Rejected("removed_member", from_id=f"{frm:x}")
            if type(frm) is not int or frm not in self._peers:
                raise Rejected("unknown_peer", from_id=repr(frm)[:40])
            if self.security.verify_identity and not await self._verify(frm, body[1]):
                raise Rejected("identity_not_verified", claimed_id=f"{frm:x}")
            served = self._incoming.setdefault(frm, {})
            while len(served) >= MAX_CONNECTIONS_PER_PEER:
                # the peer proved this one is its own: the oldest is one it gave up on (a partition
                # can leave a connection that never sees its close), so it goes
                oldest = next(iter(served))
                del served[oldest]
                oldest.cancel()
            self._pending -= 1
            pending = False
            peer = frm
            served[task] = None
            abort = not await self._serve(peer, reader, writer)
        except Rejected as r:
            self._limiter.log(
                logging.WARNING,
                ("reject", r.reason),
                f"rejected peer connection: {r.reason}",
                reason=r.reason,
                remote_addr=str(writer.get_extra_info("peername")),
                raft_peer=f"{peer:x}" if peer is not None else None,
                member_id=f"{self.member_id:x}",
                **r.fields,
            )
        except TimeoutError:
            self._limiter.log(
                logging.WARNING,
                ("reject", "slow_first_frame"),
                "rejected peer connection: slow_first_frame",
                reason="slow_first_frame",
                remote_addr=str(writer.get_extra_info("peername")),
                timeout=FIRST_FRAME_TIMEOUT,
            )
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass  # the peer went away (or failed its handshake); it will redial
        except asyncio.CancelledError:
            pass  # stop() or the peer was removed; asyncio's streams would log a cancelled callback task
        except OSError as exc:  # a timeout, or the snapshot directory
            self._limiter.log(
                logging.WARNING,
                ("conn-error", type(exc).__name__),
                "peer connection failed",
                raft_peer=f"{peer:x}" if peer is not None else None,
                error=repr(exc),
            )
        except Exception:
            log.exception("peer connection failed", extra={"raft_peer": peer})
        finally:
            if pending:
                self._pending -= 1
            self._tasks.discard(task)
            if peer is not None:
                self._incoming.get(peer, {}).pop(task, None)
            await close(writer, abort=abort)

    async def _verify(self, peer: int, nonce: bytes) -> bool:
        """Asks peer, at its own address, whether it sent a HELLO with nonce (see the module docstring)."""
        p = self._peers.get(peer)
        if p is None:
            return False
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(VERIFY_TIMEOUT):
                reader, writer = await self._dial(p.addr)
                writer.write(self._frame(peer, VERIFY, nonce))
                frm, kind, body = await self._read_frame(reader, HELLO_MAX_FRAME)
            return frm == peer and kind == VERIFIED and body is True
        except (OSError, TimeoutError, ssl.SSLError, asyncio.IncompleteReadError, Rejected):
            return False
        finally:
            if writer is not None:
                await close(writer, abort=True)

    async def _answer_verify(self, frm: Any, nonce: Any, writer: asyncio.StreamWriter) -> None:
        if type(frm) is not int or frm not in self._peers:
            raise Rejected("unknown_peer", from_id=repr(frm)[:40])
        mine = type(nonce) is bytes and self._nonces.get(nonce) == frm
        writer.write(self._frame(frm, VERIFIED, mine))
        async with asyncio.timeout(VERIFY_TIMEOUT):
            await writer.drain()

    async def _serve_stranger(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """One REQUEST from a member that does not know the cluster yet (peer id 0), one RESPONSE."""
        async with asyncio.timeout(REQUEST_TIMEOUT):
            (cluster_id, frm, to, kind, body), _ = await read_raw(reader, HELLO_MAX_FRAME)
        if (cluster_id, frm, to) != (0, 0, 0) or kind != REQUEST or type(body) is not bytes:
            raise Rejected("stranger_not_a_request", kind=repr(kind)[:40])
        await self._answer(0, writer, body)
        return True

    async def _answer(self, peer: int, writer: asyncio.StreamWriter, body: bytes) -> None:
        if self._on_request is None:
            answer = [False, b"this member answers no requests"]
        else:
            try:
                answer = [True, await self._on_request(peer, body)]
            except PeerRequestError as exc:
                answer = [False, str(exc).encode()]
            except Exception as exc:
                log.exception("a peer request failed", extra={"raft_peer": f"{peer:x}"})
                answer = [False, f"internal error: {exc!r}".encode()]
        writer.write(self._frame(peer, RESPONSE, answer))
        async with asyncio.timeout(REQUEST_TIMEOUT):
            await writer.drain()

    async def _serve(self, peer: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Reads frames from a peer after its HELLO; returns True when it ended cleanly (a snapshot was acked)."""
        me = self.member_id
        deliver = self._deliver
        read_frame = self._read_frame
        while True:
            try:
                frm, kind, body = await read_frame(reader, framing.MAX_FRAME)
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    raise
                return False  # EOF between frames: the peer closed
            if frm != peer:
                raise Rejected("from_id_mismatch", from_id=repr(frm)[:40])
            if kind == MSG:
                if type(body) is not list:
                    raise Rejected("malformed_frame")
                try:
                    msgs = [message_from_peer(w) for w in body]
                except ValueError as exc:
                    raise Rejected("undecodable_message", error=str(exc)[:200]) from None
                for m in msgs:
                    if m.to != me or m.frm != peer:
                        raise Rejected("bad_message", type=int(m.type), to_id=repr(m.to)[:40], from_id=repr(m.frm)[:40])
                for m in msgs:
                    try:
                        deliver(m)
                    except Exception:
                        self._limiter.log(
                            logging.ERROR,
                            "deliver",
                            "delivering a peer message failed",
                            exc_info=True,
                            raft_peer=f"{peer:x}",
                        )
            elif kind == SNAP_BEGIN:
                await self._receive_snapshot(peer, reader, writer, body)
                return True
            elif kind == REQUEST and type(body) is bytes:
                await self._answer(peer, writer, body)
                return True
            else:
                raise Rejected("unexpected_frame", kind=repr(kind)[:40])
