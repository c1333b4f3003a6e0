"""Peer transport: Raft messages and snapshot files between members over asyncio TCP streams.

Owns the peer listener, one long-lived outgoing connection per peer (its writer task, bounded
queue and reconnect backoff), the readers of incoming connections, and snapshot streaming on
separate connections. It knows nothing about Raft beyond `Message.to_wire`/`from_wire` and
the SNAP message type; every callback runs on the event loop, never inside `send()`.

``Transport`` is this module's: its constructor and public methods (``start``, ``stop``,
``set_peers``, ``active_since``, ``send``, ``request``), the peer set and the queueing rules. Its
parts live in ``raft.net``, one job each: ``framing`` (the wire format, reading and encoding a
frame), ``dialing`` (opening connections, one-request exchanges, ``ask``, addresses), ``outgoing``
(each peer's writer task, backoff), ``listener`` (accepting, verifying who is on the other end,
reading peers' frames, answering requests), ``snapshots`` (streaming snapshot files both ways),
``state`` (the fields and helpers they share), ``security`` (``PeerSecurity``) and ``limiter``.

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
import logging
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import msgpack

from raft.core.types import Message, MessageType
from raft.net.dialing import CONNECT_TIMEOUT, RemovedAnswer, ask, exchange, parse_address
from raft.net.framing import (
    HELLO,
    HELLO_MAX_FRAME,
    MAX_FRAME,
    MSG,
    NONCE_BYTES,
    PROTOCOL_VERSION,
    REMOVED,
    REQUEST,
    RESPONSE,
    SNAP_ACK,
    SNAP_BEGIN,
    SNAP_CHUNK,
    SNAP_END,
    VERIFIED,
    VERIFY,
    PeerRequestError,
)
from raft.net.limiter import LogLimiter
from raft.net.listener import (
    FIRST_FRAME_TIMEOUT,
    MAX_CONNECTIONS_PER_PEER,
    MAX_PENDING,
    REQUEST_TIMEOUT,
    VERIFY_TIMEOUT,
    Listener,
)
from raft.net.outgoing import BACKOFF_MAX, BACKOFF_MIN, WRITE_STALL_TIMEOUT, OutgoingPeers
from raft.net.security import ClientSSL, PeerSecurity
from raft.net.snapshots import SNAP_IO_TIMEOUT
from raft.net.state import PeerState, log
from raft.snapshot import SnapshotDir
from raft.stats import RaftStats

__all__ = [
    "BACKOFF_MAX",
    "BACKOFF_MIN",
    "CONNECT_TIMEOUT",
    "FIRST_FRAME_TIMEOUT",
    "HELLO",
    "HELLO_MAX_FRAME",
    "MAX_CONNECTIONS_PER_PEER",
    "MAX_FRAME",
    "MAX_PENDING",
    "MSG",
    "NONCE_BYTES",
    "PROTOCOL_VERSION",
    "REMOVED",
    "REQUEST",
    "REQUEST_TIMEOUT",
    "RESPONSE",
    "SNAP_ACK",
    "SNAP_BEGIN",
    "SNAP_CHUNK",
    "SNAP_END",
    "SNAP_IO_TIMEOUT",
    "VERIFIED",
    "VERIFY",
    "VERIFY_TIMEOUT",
    "WRITE_STALL_TIMEOUT",
    "ClientSSL",
    "PeerRequestError",
    "PeerSecurity",
    "Transport",
    "ask",
    "parse_address",
]

LOG_INTERVAL = 5.0
"""At most one warning per kind of problem (and peer) per this many seconds."""
_SNAP = MessageType.SNAP


class Transport(OutgoingPeers, Listener):
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
        self.bound_ports = []
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
        self._removed = set()
        self._removed_reported = False
        self._peers = {}
        self._servers = []
        self._tasks = set()  # everything we started and must await on stop
        self._incoming = {}  # peer -> its reader tasks, oldest first
        self._packer = msgpack.Packer()
        self._limiter = LogLimiter(LOG_INTERVAL)
        self._io = None  # one thread for snapshot file I/O, made on first use
        self._loop = None
        self._started = False
        self._stopping = False
        self._local_addr = None
        self.security = security or PeerSecurity()
        self._nonces = {}  # HELLO nonce of each open outgoing connection -> its peer
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
        await self._listen(addrs)
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
            p.idle_writer = None
            for task in (p.task, p.snap_task, *self._incoming.pop(pid, ())):
                if task is not None:
                    task.cancel()
        for pid, addr in wanted.items():
            known = self._peers.get(pid)
            if known is None:
                known = self._peers[pid] = PeerState(pid, addr, self._max_queue)
            elif known.addr == addr:
                continue
            else:
                known.addr = addr
                known.idle_writer = None  # the old connection: its writer task is being cancelled
                if known.task is not None:
                    known.task.cancel()
                    known.task = None
            if self._started:
                self._start_peer(known)

    def active_since(self, peer: int) -> float | None:
        """Since when (event loop time) the connection to peer has been up; None while it is down."""
        p = self._peers.get(peer)
        return p.connected_at if p is not None else None

    def send(self, messages: Iterable[Message]) -> None:
        """Queues messages for their peers (m.to); never blocks, never raises for network trouble."""
        if self._stopping:
            return
        peers = self._peers
        max_queue = self._max_queue
        touched: list[PeerState] = []
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
            if p.idle_writer is not None:
                if p not in touched:
                    touched.append(p)
            else:
                p.wake.set()
        for p in touched:
            self._write_through(p)

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
                return await exchange(
                    lambda: self._dial(p.addr),
                    p.addr,
                    (self.cluster_id, self.member_id, peer),
                    nonce,
                    payload,
                    timeout,
                )
            except RemovedAnswer:
                self._report_removed()
                raise PeerRequestError("the member has been permanently removed from the cluster") from None
            finally:
                self._nonces.pop(nonce, None)
        if address is None:
            raise ValueError("request needs a peer or an address")
        return await ask(address, payload, timeout, self.security.client_ssl)
