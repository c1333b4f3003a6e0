"""Dialling peers: opening a connection (with peer TLS), one request on a connection of its own
(``exchange``, and ``ask`` for a member that does not know the cluster yet), peer addresses, and the
stream helpers every side uses (no delay, closing, watching an outgoing connection for REMOVED)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from collections.abc import Awaitable, Callable

import msgpack

from raft.net import framing
from raft.net.framing import (
    HELLO,
    HELLO_MAX_FRAME,
    LEN,
    NONCE_BYTES,
    PROTOCOL_VERSION,
    READ_LIMIT,
    REMOVED,
    REQUEST,
    RESPONSE,
    PeerRequestError,
)
from raft.net.security import ClientSSL

CONNECT_TIMEOUT = 2.0


class RemovedAnswer(Exception):
    """The peer answered a request with REMOVED."""


async def open_connection(
    addr: tuple[str, int],
    client_ssl: ClientSSL,
    local_addr: tuple[str, int] | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Dials a peer address (with peer TLS when client_ssl is given), within CONNECT_TIMEOUT."""
    host, port = addr
    if callable(client_ssl):
        client_ssl = client_ssl()
    async with asyncio.timeout(CONNECT_TIMEOUT):
        return await asyncio.open_connection(
            host,
            port,
            limit=READ_LIMIT,
            local_addr=local_addr,
            ssl=client_ssl,
            server_hostname=host if client_ssl is not None else None,
        )


async def exchange(
    dial: Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]],
    addr: tuple[str, int],
    ids: tuple[int, int, int],
    nonce: bytes,
    payload: bytes,
    timeout: float,
) -> bytes:
    """One request on a connection of its own: HELLO (with nonce) and REQUEST as (cluster, from, to)
    ids, then the answer."""
    host, port = addr
    writer: asyncio.StreamWriter | None = None
    ok = False
    packer = msgpack.Packer()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await dial()
            set_nodelay(writer)
            cid, me, to = ids
            hello = packer.pack([cid, me, to, HELLO, [PROTOCOL_VERSION, nonce]])
            req = packer.pack([cid, me, to, REQUEST, payload])
            writer.write(LEN.pack(len(hello)) + hello + LEN.pack(len(req)) + req)
            (n,) = LEN.unpack(await reader.readexactly(4))
            if n > framing.MAX_FRAME:
                raise PeerRequestError(f"answer from {host}:{port} too large ({n} bytes)")
            frame = msgpack.unpackb(await reader.readexactly(n))
        if type(frame) is not list or len(frame) != 5:
            raise PeerRequestError(f"malformed answer from {host}:{port}")
        kind, body = frame[3], frame[4]
        if kind == REMOVED:
            raise RemovedAnswer()
        if kind != RESPONSE or type(body) is not list or len(body) != 2 or type(body[1]) is not bytes:
            raise PeerRequestError(f"unexpected answer from {host}:{port} (frame kind {kind!r})")
        ok = True
        if not body[0]:
            raise PeerRequestError(body[1].decode(errors="replace"))
        return body[1]
    except TimeoutError:
        raise PeerRequestError(f"no answer from {host}:{port} within {timeout:.1f}s") from None
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError, ValueError, msgpack.UnpackException) as exc:
        raise PeerRequestError(f"cannot ask {host}:{port}: {exc!r}") from None
    finally:
        if writer is not None:
            await close(writer, abort=not ok)


async def ask(
    address: str,
    payload: bytes,
    timeout: float = 5.0,
    client_ssl: ClientSSL = None,
) -> bytes:
    """Asks the member listening at a peer address as a stranger (member 0 of cluster 0): what a member
    that does not know the cluster yet can do (with peer TLS: client_ssl, as PeerSecurity's).
    Raises PeerRequestError."""
    addr = parse_address(address)
    try:
        return await exchange(
            lambda: open_connection(addr, client_ssl), addr, (0, 0, 0), os.urandom(NONCE_BYTES), payload, timeout
        )
    except RemovedAnswer:
        raise PeerRequestError("unexpected REMOVED answer to a stranger") from None


def parse_address(addr: str) -> tuple[str, int]:
    """ "host:port", "[v6]:port" or "http://host:port" -> (host, port)."""
    rest = addr.removeprefix("http://").removeprefix("tcp://").rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or "://" in host:
        raise ValueError(f"peer address must be host:port, got {addr!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def set_nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def close(writer: asyncio.StreamWriter, abort: bool = False) -> None:
    """Closes a stream (abort: drop unsent data, do not wait for a stuck peer)."""
    if abort:
        writer.transport.abort()
    else:
        writer.close()
    try:
        async with asyncio.timeout(1.0):
            await writer.wait_closed()
    except (Exception, TimeoutError):
        writer.transport.abort()


async def drain_input(reader: asyncio.StreamReader, wake: asyncio.Event, on_removed: Callable[[], None]) -> None:
    """Reads an outgoing connection to notice when it closes; the only frame a peer ever writes on
    it is REMOVED, reported through on_removed."""
    try:
        while True:
            (n,) = LEN.unpack(await reader.readexactly(4))
            if n > HELLO_MAX_FRAME:
                return
            frame = msgpack.unpackb(await reader.readexactly(n))
            if type(frame) is list and len(frame) == 5 and frame[3] == REMOVED:
                on_removed()
                return
    except Exception:
        pass
    finally:
        wake.set()
