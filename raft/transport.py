"""Peer transport: Raft messages and snapshot files between members over asyncio TCP streams.

Owns the peer listener, one long-lived outgoing connection per peer (its writer task, bounded
queue and reconnect backoff), the readers of incoming connections, and snapshot streaming on
separate connections. It knows nothing about Raft beyond `Message.to_wire`/`from_wire` and
the SNAP message type; every callback runs on the event loop, never inside `send()`.

Wire format. Every frame is ``u32 length (big-endian) | msgpack payload`` where the payload is
``[cluster_id, from_id, to_id, kind, body]``:

====  ==========  ==========================================================================
kind  name        body
====  ==========  ==========================================================================
1     HELLO       ``[protocol version, nonce]`` (16 random bytes); the first frame of a connection
2     MSG         list of ``Message.to_wire()``: everything queued for the peer at once
3     SNAP_BEGIN  ``[Message.to_wire() of the MsgSnap, file size]``
4     SNAP_CHUNK  bytes (about 1 MiB) of the snapshot file, in order
5     SNAP_END    CRC-32 of the whole file
6     SNAP_ACK    the snapshot index; receiver -> sender once the file is durable
7     VERIFY      a nonce: "did you open a connection to me with this HELLO?" (the first frame)
8     VERIFIED    true or false, the answer to VERIFY
9     REQUEST     bytes: one request for the application (``request``), on a fresh connection
10    RESPONSE    ``[ok, bytes]``: the answer to a REQUEST (ok False: bytes is an error text)
11    REMOVED     nothing: listener -> dialer, "you were removed from the cluster"
====  ==========  ==========================================================================

A connection carries one direction: the dialer writes, the listener reads (the only frames that
ever travel back are SNAP_ACK on a snapshot connection, VERIFIED, RESPONSE and REMOVED). A frame that is too big
(HELLO_MAX_FRAME before the peer is verified, MAX_FRAME after), undecodable, from another
cluster, not addressed to us, from an unknown peer or out of protocol gets the connection closed
and a rate-limited warning; nothing in it is delivered.

Who is on the other end. The cluster id and the member ids are no secret (``etcdctl member
list`` hands them out), so a HELLO proves nothing by itself. Before reading anything past it,
the listener asks the member the HELLO claims to come from, by dialling that member's own peer
address, whether it opened a connection with that nonce (VERIFY / VERIFIED): a stranger who can
reach the peer port but not read the traffic sent to the member's address cannot pass, whatever
ids it names, so it cannot inject heartbeats, appends or votes. Peer TLS (``PeerSecurity``) with
client certificates is the stronger answer against an attacker on the path; the check runs with
it as well and binds the certificate's connection to one member id. A connection that sends no
complete first frame within FIRST_FRAME_TIMEOUT is closed; at most MAX_PENDING connections wait
to be verified and MAX_CONNECTIONS_PER_PEER are served per member (a newer one, verified,
replaces the oldest), so a flood of connections, or of huge declared frames, costs a bounded
amount of memory (an unverified connection can make us buffer at most HELLO_MAX_FRAME). Every
message is decoded strictly (``raft.peer_messages``) and must come from the member that
connected.

Loss policy (Raft tolerates loss, never blocking): a peer's queue holds `max_queue` messages and
drops the OLDEST on overflow (the newest heartbeats and appends are the useful ones), reporting
the peer unreachable once per overflow episode. While a peer is in reconnect backoff, its queue
is cleared and messages for it are dropped; messages sent while a connection is being dialled
are kept and sent once it is up.

Requests: ``request`` asks one peer (by id) or any address (a member that does not know the
cluster yet: it says HELLO as member 0 of cluster 0, and may send only one REQUEST) for the
answer of its ``on_request`` handler, on a connection of its own: HELLO, REQUEST, RESPONSE.
The payloads are the application's; the handler knows whether the asker is a stranger (0). A
member's request is verified like any connection of its (the listener dials it back before
reading the REQUEST). A stranger has no identity to verify: it is what a member that was just
added looks like before it has learnt the cluster (etcd's ``GET /members`` on the peer port
needs no member identity either). So a stranger gets exactly one REQUEST of at most
HELLO_MAX_FRAME bytes, read within REQUEST_TIMEOUT, while counting against MAX_PENDING, it
reaches only the application's handler with peer id 0 (which must answer strangers nothing but
what is public: raftkv answers them the member list and refuses the rest), and nothing it sends
is delivered to Raft. With peer TLS it must still present a certificate the listener accepts.

Removed members: the application marks member ids removed (``set_peers(..., removed=...)``).
A connection from one of them is answered with REMOVED and closed; a dialer that reads REMOVED
on any of its connections reports it once through ``on_removed``, so a member that missed its
own removal learns of it (etcd's peers answer such a member with HTTP 410 Gone).

Snapshots: every MsgSnap given to `send` gets exactly one `on_snapshot_status` (none after
`stop()`); a second one for a peer that already has one in flight fails at once. The file from
`snapshot_source` stays the caller's (never deleted here). The receiver writes it into
`snapshot_dir` (a ``raft.snapshot.SnapshotDir``, which names the files) and hands the complete,
fsynced file to `deliver_snapshot`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import ssl
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import msgpack

from raft import snapshot as snapfiles
from raft.core.types import Message, MessageType
from raft.peer_messages import message_from_peer
from raft.snapshot import SnapshotDir
from raft.stats import RaftStats

log = logging.getLogger("raftkv.transport")

PROTOCOL_VERSION = 2
NONCE_BYTES = 16

HELLO = 1
MSG = 2
SNAP_BEGIN = 3
SNAP_CHUNK = 4
SNAP_END = 5
SNAP_ACK = 6
VERIFY = 7
VERIFIED = 8
REQUEST = 9
RESPONSE = 10
REMOVED = 11

MAX_FRAME = 64 << 20
"""Largest frame accepted (and produced) once a connection said HELLO."""
HELLO_MAX_FRAME = 4096
"""Largest first frame: a stranger cannot make us buffer more than this."""

BACKOFF_MIN = 0.05
BACKOFF_MAX = 1.0
CONNECT_TIMEOUT = 2.0
WRITE_STALL_TIMEOUT = 5.0
"""A peer that does not take a single batch of ours for this long is treated as gone."""
SNAP_IO_TIMEOUT = 30.0
"""No progress on a snapshot stream for this long (a chunk, or fsync before the ACK) fails it."""
REQUEST_TIMEOUT = 10.0
"""A request's answer must be written (and a stranger's request read) within this long."""
LOG_INTERVAL = 5.0
"""At most one warning per kind of problem (and peer) per this many seconds."""
FIRST_FRAME_TIMEOUT = 5.0
"""A connection (TLS handshake included) must deliver its first frame within this."""
VERIFY_TIMEOUT = 3.0
"""Asking a peer whether a connection is really its own must be answered within this."""
MAX_PENDING = 32
"""Connections at most between accept and verification; more are closed at once."""
MAX_CONNECTIONS_PER_PEER = 4
"""Verified incoming connections at most per member (messages, snapshots, and a reconnect's overlap);
a newer verified one replaces the oldest."""


ClientSSL = ssl.SSLContext | Callable[[], ssl.SSLContext] | None
"""What a member dials its peers with: no TLS, a context, or a callable returning the context per dial."""


@dataclass(frozen=True)
class PeerSecurity:
    """Peer TLS and identity checks. server_ssl/client_ssl: the listener's and the dialer's contexts
    (None: plaintext; the dialer's may be a callable returning the context to use for each dial, so
    rotated certificates are picked up); allow_certificate: a check of the verified client certificate's fields
    (``--peer-cert-allowed-cn`` / ``-hostname``); verify_identity: the VERIFY dial-back (tests of the
    frame checks alone turn it off)."""

    server_ssl: ssl.SSLContext | None = None
    client_ssl: ClientSSL = None
    allow_certificate: Callable[[dict[str, Any] | None], bool] | None = None
    verify_identity: bool = True


_READ_LIMIT = 1 << 20  # StreamReader buffer size before it pauses the socket
_LEN = struct.Struct(">I")
_SNAP = MessageType.SNAP


class PeerRequestError(Exception):
    """A request to a peer failed: unreachable, timed out, refused, or answered with an error."""


class _Rejected(Exception):
    """A frame or connection we refuse; `reason` is a short stable token for logs."""

    def __init__(self, reason: str, **fields: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fields = fields


class _LogLimiter:
    """Structured warnings, at most one per key per interval, counting what was suppressed."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._last: dict[object, float] = {}
        self._suppressed: dict[object, int] = {}

    def log(self, level: int, key: object, msg: str, exc_info: bool = False, **fields: Any) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        fields["suppressed"] = self._suppressed.pop(key, 0)
        log.log(level, msg, extra=fields, exc_info=exc_info)


class _Peer:
    """Outgoing state for one peer; the connection itself lives in its writer task."""

    __slots__ = (
        "accepting",
        "addr",
        "connected_at",
        "down",
        "id",
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
        self.task: asyncio.Task | None = None
        self.snap_task: asyncio.Task | None = None


class _RemovedAnswer(Exception):
    """The peer answered a request with REMOVED."""


async def _open(
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
            limit=_READ_LIMIT,
            local_addr=local_addr,
            ssl=client_ssl,
            server_hostname=host if client_ssl is not None else None,
        )


async def _exchange(
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
            _set_nodelay(writer)
            cid, me, to = ids
            hello = packer.pack([cid, me, to, HELLO, [PROTOCOL_VERSION, nonce]])
            req = packer.pack([cid, me, to, REQUEST, payload])
            writer.write(_LEN.pack(len(hello)) + hello + _LEN.pack(len(req)) + req)
            (n,) = _LEN.unpack(await reader.readexactly(4))
            if n > MAX_FRAME:
                raise PeerRequestError(f"answer from {host}:{port} too large ({n} bytes)")
            frame = msgpack.unpackb(await reader.readexactly(n))
        if type(frame) is not list or len(frame) != 5:
            raise PeerRequestError(f"malformed answer from {host}:{port}")
        kind, body = frame[3], frame[4]
        if kind == REMOVED:
            raise _RemovedAnswer()
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
            await _close(writer, abort=not ok)


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
        return await _exchange(
            lambda: _open(addr, client_ssl), addr, (0, 0, 0), os.urandom(NONCE_BYTES), payload, timeout
        )
    except _RemovedAnswer:
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


def _set_nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _close(writer: asyncio.StreamWriter, abort: bool = False) -> None:
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


async def _drain_input(reader: asyncio.StreamReader, wake: asyncio.Event, on_removed: Callable[[], None]) -> None:
    """Reads an outgoing connection to notice when it closes; the only frame a peer ever writes on
    it is REMOVED, reported through on_removed."""
    try:
        while True:
            (n,) = _LEN.unpack(await reader.readexactly(4))
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


class Transport:
    """Sends Raft messages to peers and delivers theirs; see the module docstring for the rules."""

    def __init__(
        self,
        member_id: int,
        cluster_id: int,
        deliver: Callable[[Message], None],
        on_unreachable: Callable[[int], None],
        on_snapshot_status: Callable[[int, bool], None],
        snapshot_source: Callable[[Message], Awaitable[Path]],
        snapshot_dir: SnapshotDir,
        deliver_snapshot: Callable[[Message, Path], None],
        max_queue: int = 4096,
        stats: RaftStats | None = None,
        on_request: Callable[[int, bytes], Awaitable[bytes]] | None = None,
        on_removed: Callable[[], None] | None = None,
        security: PeerSecurity | None = None,
    ) -> None:
        self.member_id = member_id
        self.cluster_id = cluster_id
        self.bound_ports: list[int] = []
        self._deliver = deliver
        self._on_unreachable = on_unreachable
        self._on_snapshot_status = on_snapshot_status
        self._snapshot_source = snapshot_source
        self._snapshot_dir = snapshot_dir
        self._deliver_snapshot = deliver_snapshot
        self._max_queue = max_queue
        self.stats = stats if stats is not None else RaftStats()
        self._on_request = on_request
        self._on_removed = on_removed
        self._removed: set[int] = set()
        self._removed_reported = False
        self._peers: dict[int, _Peer] = {}
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task] = set()  # everything we started and must await on stop
        self._incoming: dict[int, dict[asyncio.Task, None]] = {}  # peer -> its reader tasks, oldest first
        self._packer = msgpack.Packer()
        self._limiter = _LogLimiter(LOG_INTERVAL)
        self._io: ThreadPoolExecutor | None = None  # one thread for snapshot file I/O, made on first use
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self._stopping = False
        self._local_addr: tuple[str, int] | None = None
        self.security = security or PeerSecurity()
        self._nonces: dict[bytes, int] = {}  # HELLO nonce of each open outgoing connection -> its peer
        self._pending = 0  # incoming connections not verified yet

    # ---- lifecycle ----

    async def start(self, listen: list[str]) -> None:
        """Binds every listen address ("host:port", port 0 picks one); raises OSError if one cannot be bound."""
        self._loop = asyncio.get_running_loop()
        addrs = [parse_address(a) for a in listen]
        # Dial peers from our own listen address when it is a specific one (a loopback cluster whose
        # members sit on 127.0.0.1, .2, .3 can then be partitioned by address with packet filters).
        host0 = addrs[0][0] if addrs else ""
        self._local_addr = (host0, 0) if host0 not in ("", "0.0.0.0", "::", "localhost") else None
        try:
            for host, port in addrs:
                server = await asyncio.start_server(
                    self._on_connection,
                    host,
                    port,
                    limit=_READ_LIMIT,
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
        self._started = True
        for p in self._peers.values():
            self._start_peer(p)
        log.info(
            "peer transport listening",
            extra={"member_id": f"{self.member_id:x}", "listen": ",".join(listen), "ports": self.bound_ports},
        )

    async def stop(self) -> None:
        """Closes the listeners and every connection and awaits every task; no callback runs afterwards."""
        if self._stopping:
            return
        self._stopping = True
        for server in self._servers:
            server.close()
        await asyncio.sleep(0)  # let just-accepted connections register their tasks
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._tasks.difference_update(tasks)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        if self._io is not None:  # cleanups of cancelled snapshot transfers run before we return
            await asyncio.wrap_future(self._io.submit(lambda: None))
            self._io.shutdown(wait=False)
            self._io = None
        self._peers.clear()
        self._incoming.clear()

    def set_peers(self, peers: dict[int, str], removed: Iterable[int] = ()) -> None:
        """Replaces the peer set: new peers are dialled, dropped ones forgotten, moved ones re-dialled.

        removed adds member ids whose connections are answered with REMOVED from now on.
        """
        self._removed.update(removed)
        if self._stopping:
            return
        wanted = {pid: parse_address(a) for pid, a in peers.items() if pid != self.member_id}
        for pid in [pid for pid in self._peers if pid not in wanted]:
            p = self._peers.pop(pid)
            p.queue.clear()
            for task in (p.task, p.snap_task, *self._incoming.pop(pid, ())):
                if task is not None:
                    task.cancel()
        for pid, addr in wanted.items():
            p = self._peers.get(pid)
            if p is None:
                p = self._peers[pid] = _Peer(pid, addr, self._max_queue)
            elif p.addr == addr:
                continue
            else:
                p.addr = addr
                if p.task is not None:
                    p.task.cancel()
                    p.task = None
            if self._started:
                self._start_peer(p)

    def active_since(self, peer: int) -> float | None:
        """Since when (event loop time) the connection to peer has been up; None while it is down."""
        p = self._peers.get(peer)
        return p.connected_at if p is not None else None

    def _report_removed(self) -> None:
        if self._removed_reported or self._on_removed is None:
            return
        self._removed_reported = True
        self._call_soon(self._on_removed)

    # ---- sending ----

    def send(self, messages: Iterable[Message]) -> None:
        """Queues messages for their peers (m.to); never blocks, never raises for network trouble."""
        if self._stopping:
            return
        peers = self._peers
        max_queue = self._max_queue
        for m in messages:
            p = peers.get(m.to)
            if p is None:
                self._limiter.log(
                    logging.WARNING,
                    "unknown-destination",
                    "dropping messages for an unknown peer",
                    raft_peer=f"{m.to:x}",
                    member_id=f"{self.member_id:x}",
                )
                continue
            if m.type == _SNAP:
                self._start_snapshot(p, m)
                continue
            if not p.accepting:
                continue
            q = p.queue
            if len(q) == max_queue and not p.overflowed:
                p.overflowed = True
                self._call_soon(self._on_unreachable, p.id)
                self._limiter.log(
                    logging.WARNING,
                    ("overflow", p.id),
                    "peer send queue full, dropping its oldest messages",
                    raft_peer=f"{p.id:x}",
                    max_queue=max_queue,
                )
            q.append(m)
            p.wake.set()

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

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _start_peer(self, p: _Peer) -> None:
        p.accepting = True
        p.task = self._spawn(self._run_peer(p), f"raft-peer-{p.id:x}")

    def _encode_batch(self, to: int, batch: list[Message]) -> bytes:
        payload = self._packer.pack([self.cluster_id, self.member_id, to, MSG, [m.to_wire() for m in batch]])
        if len(payload) <= MAX_FRAME:
            return _LEN.pack(len(payload)) + payload
        if len(batch) == 1:
            self._limiter.log(
                logging.WARNING,
                ("oversized", to),
                "dropping a message larger than the frame limit",
                raft_peer=f"{to:x}",
                size=len(payload),
                max_frame=MAX_FRAME,
                type=batch[0].type.name,
            )
            return b""
        half = len(batch) // 2
        return self._encode_batch(to, batch[:half]) + self._encode_batch(to, batch[half:])

    async def _dial(self, addr: tuple[str, int]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await _open(addr, self.security.client_ssl, self._local_addr)

    def _new_nonce(self, peer: int) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        self._nonces[nonce] = peer
        return nonce

    def _frame(self, to: int, kind: int, body: Any) -> bytes:
        payload = self._packer.pack([self.cluster_id, self.member_id, to, kind, body])
        return _LEN.pack(len(payload)) + payload

    def _peer_failed(self, p: _Peer, what: str, exc: BaseException | None) -> None:
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

    async def _run_peer(self, p: _Peer) -> None:
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

    async def _pump(self, p: _Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Writes everything queued for p, one batch (one write, one drain) per wakeup, until the link breaks."""
        _set_nodelay(writer)
        q, wake, transport = p.queue, p.wake, writer.transport
        sent = self.stats.sent_bytes
        sent.setdefault(p.id, 0)
        watcher = asyncio.get_running_loop().create_task(_drain_input(reader, wake, self._report_removed))
        nonce = self._new_nonce(p.id)
        try:
            writer.write(self._frame(p.id, HELLO, [PROTOCOL_VERSION, nonce]))
            while True:
                while not q:
                    if watcher.done():
                        raise ConnectionResetError("peer closed the connection")
                    wake.clear()
                    await wake.wait()
                if watcher.done():
                    raise ConnectionResetError("peer closed the connection")
                batch = list(q)
                q.clear()
                p.overflowed = False
                data = self._encode_batch(p.id, batch)
                if data:
                    writer.write(data)
                    sent[p.id] += len(data)
                if transport.get_write_buffer_size():  # the kernel did not take it all: wait, but not forever
                    async with asyncio.timeout(WRITE_STALL_TIMEOUT):
                        await writer.drain()
        finally:
            self._nonces.pop(nonce, None)
            watcher.cancel()
            await _close(writer, abort=True)
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    # ---- snapshots, sender side ----

    def _start_snapshot(self, p: _Peer, m: Message) -> None:
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

    async def _send_snapshot(self, p: _Peer, m: Message) -> None:
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
            _set_nodelay(writer)
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
                raise _Rejected("bad_snapshot_ack", kind=kind)
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
                await _close(writer, abort=not ok)
            if f is not None:
                io.submit(snapfiles.discard, f, None)
            self._callback(self._on_snapshot_status, p.id, ok)

    # ---- receiving ----

    async def _read_raw(self, reader: asyncio.StreamReader, cap: int) -> tuple[list, int]:
        """Reads one frame of the right shape, whoever it is from: ([cluster_id, from, to, kind, body], its size)."""
        (n,) = _LEN.unpack(await reader.readexactly(4))
        if n > cap:
            raise _Rejected("frame_too_large", size=n, max_frame=cap)
        payload = await reader.readexactly(n)
        try:
            frame = msgpack.unpackb(payload)
        except Exception:
            raise _Rejected("undecodable_frame", size=n) from None
        if type(frame) is not list or len(frame) != 5:
            raise _Rejected("malformed_frame", size=n)
        return frame, n

    async def _read_frame(self, reader: asyncio.StreamReader, cap: int) -> tuple[Any, Any, Any]:
        """Reads one frame addressed to us by our cluster: returns (from_id, kind, body) or raises _Rejected."""
        (cluster_id, frm, to, kind, body), n = await self._read_raw(reader, cap)
        self._check_addressed(cluster_id, to)
        received = self.stats.received_bytes
        if frm in received or frm in self._peers:
            received[frm] = received.get(frm, 0) + 4 + n
        return frm, kind, body

    def _check_addressed(self, cluster_id: Any, to: Any) -> None:
        if cluster_id != self.cluster_id:
            raise _Rejected("cluster_id_mismatch", their_cluster_id=repr(cluster_id)[:40])
        if to != self.member_id:
            raise _Rejected("to_id_mismatch", to_id=repr(to)[:40])

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
                raise _Rejected("too_many_pending_connections", max_pending=MAX_PENDING)
            self._pending += 1
            pending = True
            _set_nodelay(writer)
            allow = self.security.allow_certificate
            if allow is not None and not allow(writer.get_extra_info("peercert")):
                raise _Rejected("certificate_not_allowed")
            async with asyncio.timeout(FIRST_FRAME_TIMEOUT):
                (cluster_id, frm, to, kind, body), _ = await self._read_raw(reader, HELLO_MAX_FRAME)
            stranger = cluster_id == 0 and frm == 0 and to == 0  # a member that does not know the cluster yet
            if not stranger:
                self._check_addressed(cluster_id, to)
            if kind == VERIFY and not stranger:
                await self._answer_verify(frm, body, writer)
                abort = False
                return
            if kind != HELLO:
                raise _Rejected("expected_hello", kind=repr(kind)[:40])
            if (
                type(body) is not list
                or len(body) != 2
                or body[0] != PROTOCOL_VERSION
                or type(body[1]) is not bytes
                or len(body[1]) != NONCE_BYTES
            ):
                raise _Rejected("protocol_version", version=repr(body)[:40])
            if stranger:
                abort = not await self._serve_stranger(reader, writer)
                return
            if type(frm) is int and frm in self._removed:
                # no identity check: telling whoever claims a removed id that it is removed delivers
                # nothing (a removed member is no longer a peer, so it could not be dialled back)
                writer.write(self._frame(frm, REMOVED, None))
                async with asyncio.timeout(1.0):
                    await writer.drain()
                raise _Rejected("removed_member", from_id=f"{frm:x}")
            if type(frm) is not int or frm not in self._peers:
                raise _Rejected("unknown_peer", from_id=repr(frm)[:40])
            if self.security.verify_identity and not await self._verify(frm, body[1]):
                raise _Rejected("identity_not_verified", claimed_id=f"{frm:x}")
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
        except _Rejected as r:
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
            await _close(writer, abort=abort)

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
        except (OSError, TimeoutError, ssl.SSLError, asyncio.IncompleteReadError, _Rejected):
            return False
        finally:
            if writer is not None:
                await _close(writer, abort=True)

    async def _answer_verify(self, frm: Any, nonce: Any, writer: asyncio.StreamWriter) -> None:
        if type(frm) is not int or frm not in self._peers:
            raise _Rejected("unknown_peer", from_id=repr(frm)[:40])
        mine = type(nonce) is bytes and self._nonces.get(nonce) == frm
        writer.write(self._frame(frm, VERIFIED, mine))
        async with asyncio.timeout(VERIFY_TIMEOUT):
            await writer.drain()

    async def _serve_stranger(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """One REQUEST from a member that does not know the cluster yet (peer id 0), one RESPONSE."""
        async with asyncio.timeout(REQUEST_TIMEOUT):
            (cluster_id, frm, to, kind, body), _ = await self._read_raw(reader, HELLO_MAX_FRAME)
        if (cluster_id, frm, to) != (0, 0, 0) or kind != REQUEST or type(body) is not bytes:
            raise _Rejected("stranger_not_a_request", kind=repr(kind)[:40])
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

    async def request(
        self, payload: bytes, *, peer: int | None = None, address: str | None = None, timeout: float = 5.0
    ) -> bytes:
        """Asks a peer (by id), or whoever listens at address (as a stranger), for on_request's answer.

        Raises PeerRequestError when the peer cannot be reached, times out, or answers with an error.
        """
        if self._stopping:
            raise PeerRequestError("the transport is stopped")
        if peer is not None:
            p = self._peers.get(peer)
            if p is None:
                raise PeerRequestError(f"unknown peer {peer:x}")
            nonce = self._new_nonce(peer)  # the peer dials us back to check that the request is ours
            try:
                return await _exchange(
                    lambda: self._dial(p.addr),
                    p.addr,
                    (self.cluster_id, self.member_id, peer),
                    nonce,
                    payload,
                    timeout,
                )
            except _RemovedAnswer:
                self._report_removed()
                raise PeerRequestError("the member has been permanently removed from the cluster") from None
            finally:
                self._nonces.pop(nonce, None)
        if address is None:
            raise ValueError("request needs a peer or an address")
        return await ask(address, payload, timeout, self.security.client_ssl)

    async def _serve(self, peer: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Reads frames from a peer after its HELLO; returns True when it ended cleanly (a snapshot was acked)."""
        me = self.member_id
        deliver = self._deliver
        read_frame = self._read_frame
        while True:
            try:
                frm, kind, body = await read_frame(reader, MAX_FRAME)
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    raise
                return False  # EOF between frames: the peer closed
            if frm != peer:
                raise _Rejected("from_id_mismatch", from_id=repr(frm)[:40])
            if kind == MSG:
                if type(body) is not list:
                    raise _Rejected("malformed_frame")
                try:
                    msgs = [message_from_peer(w) for w in body]
                except ValueError as exc:
                    raise _Rejected("undecodable_message", error=str(exc)[:200]) from None
                for m in msgs:
                    if m.to != me or m.frm != peer:
                        raise _Rejected(
                            "bad_message", type=int(m.type), to_id=repr(m.to)[:40], from_id=repr(m.frm)[:40]
                        )
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
                raise _Rejected("unexpected_frame", kind=repr(kind)[:40])

    # ---- snapshots, receiver side ----

    async def _receive_snapshot(
        self, peer: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: Any
    ) -> None:
        try:
            wire, total = body
            msg = message_from_peer(wire, allow_snapshot=True)
        except (ValueError, TypeError):
            raise _Rejected("malformed_snapshot") from None
        if type(total) is not int or total < 0 or msg.type is not _SNAP or msg.to != self.member_id or msg.frm != peer:
            raise _Rejected("malformed_snapshot")
        if msg.snapshot is None:
            raise _Rejected("malformed_snapshot")
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
                    frm, kind, body = await self._read_frame(reader, MAX_FRAME)
                if frm != peer:
                    raise _Rejected("from_id_mismatch", from_id=repr(frm)[:40])
                if kind == SNAP_CHUNK and type(body) is bytes:
                    received += len(body)
                    if received > total:
                        raise _Rejected("snapshot_too_long", size=total)
                    crc = await loop.run_in_executor(io, snapfiles.write_chunk, f, body, crc)
                elif kind == SNAP_END:
                    if received != total:
                        raise _Rejected("snapshot_truncated", size=total, received=received)
                    if body != crc:
                        raise _Rejected("snapshot_crc_mismatch", size=total)
                    await loop.run_in_executor(io, snapfiles.commit, f, tmp, final)
                    done = True
                    break
                else:
                    raise _Rejected("unexpected_frame", kind=repr(kind)[:40])
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
