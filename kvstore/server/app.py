"""A member process's lifecycle: open the data, start the log and the client front end, serve, stop.

Clients are served by raftkv's own front end (``frontend``: gRPC over HTTP/2 on asyncio, HTTP/1.1
on the same port) from the dispatch table of ``kvstore.server.routes``. Startup refuses to run on
damaged data (``StartupError`` with the file named). Shutdown is graceful on SIGTERM and SIGINT:
the front end stops taking calls (GOAWAY) and gives running ones a moment, then the log and the
backend are closed. A failure of the log itself (a failed fsync)
stops the member with exit code 1: it must never acknowledge what it did not persist.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal

from frontend.protocol import FrontendConfig
from frontend.server import FrontendServer
from kvstore.config import GRPC_OVERHEAD_BYTES, ServerConfig, peer_address
from kvstore.errors import StartupError
from kvstore.mvcc import Backend
from kvstore.server.lease_service import LeaseService
from kvstore.server.member import Member
from kvstore.server.routes import member_services, methods
from kvstore.server.rpc import error_status
from kvstore.server.security import ClientDialer, client_server_tls, peer_security
from raft.node import RaftNode

log = logging.getLogger("raftkv.server")

GRACE_SECONDS = 2.0


def frontend_config(cfg: ServerConfig) -> FrontendConfig:
    # etcd's receive limit: --max-request-bytes plus gRPC's overhead allowance (2 MiB by default)
    return FrontendConfig(max_receive_message_length=cfg.max_request_bytes + GRPC_OVERHEAD_BYTES)


def split_host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class MemberServer:
    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.member: Member | None = None
        self.frontend: FrontendServer | None = None
        self.ports: list[int] = []
        self.lease_service: LeaseService | None = None

    async def start(self) -> None:
        cfg = self.cfg
        member_dir = cfg.data_dir / "member"
        client_tls = client_server_tls(cfg)  # certificates load (or are made) before anything opens
        security = peer_security(cfg)
        backend = Backend(member_dir / "db")
        node = RaftNode(
            member_id=cfg.member_id,
            cluster_id=cfg.cluster_id,
            wal_dir=member_dir / "wal",
            snap_dir=member_dir / "snap",
            peer_listen=cfg.peer_bind_addresses(),
            peers={mid: peer_address(urls[0]) for mid, (_, urls) in cfg.members.items()},
            bootstrap=cfg.initial_cluster_state == "new",
            heartbeat_ms=cfg.heartbeat_interval_ms,
            election_ms=cfg.election_timeout_ms,
            snapshot_count=cfg.snapshot_count,
            request_timeout=cfg.request_timeout_s,
            peer_security=security,
        )
        member = Member(cfg, node, backend)
        member.client_dialer = ClientDialer(cfg)  # type: ignore[attr-defined]
        self.member = member
        await member.start()
        # like etcd, serve clients once this member's name and client URLs are in the log (what
        # MemberList and endpoint discovery show); that needs a leader and a quorum
        await member.published.wait()
        services, self.lease_service = member_services(member)
        server = FrontendServer(methods(services), frontend_config(cfg), error_status=error_status)
        self.frontend = server
        for address in cfg.client_bind_addresses():
            try:
                port = await server.listen(
                    *split_host_port(address), ssl=client_tls.context if client_tls is not None else None
                )
            except OSError as exc:
                raise StartupError(f"cannot listen for clients on {address}: {exc}") from exc
            self.ports.append(port)
        log.info(
            "serving client requests",
            extra={
                "member_name": cfg.name,
                "member_id": f"{cfg.member_id:x}",
                "cluster_id": f"{cfg.cluster_id:x}",
                "listen_client_urls": ",".join(cfg.listen_client_urls),
                "data_dir": str(cfg.data_dir),
                "revision": member.store.current_rev,
                "applied_index": member.applied_index,
            },
        )

    async def stop(self) -> None:
        if self.frontend is not None:
            await self.frontend.stop(GRACE_SECONDS)
        if self.lease_service is not None:
            await self.lease_service.close()
        if self.member is not None:
            await self.member.stop()
        log.info("stopped", extra={"member_name": self.cfg.name})


def quiet_gc() -> None:
    """Keeps the garbage collector from pausing requests: what start-up built (the key index can be
    millions of objects) is frozen out of collections, and young collections run less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


async def serve(cfg: ServerConfig) -> int:
    """Runs a member until SIGTERM or SIGINT (exit 0) or a fatal log failure (exit 1)."""
    server = MemberServer(cfg)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    starting = asyncio.ensure_future(server.start())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        # a member that cannot reach a quorum waits in start (to publish itself): SIGTERM still stops it
        await asyncio.wait([starting, stopping], return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            await server.stop()
            return 0
        starting.result()
    except BaseException:
        stopping.cancel()
        await server.stop()
        raise
    assert server.member is not None
    quiet_gc()
    fatal = getattr(server.member.log, "fatal", None)
    waiters = [stopping]
    if fatal is not None:
        waiters.append(fatal)
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if fatal is not None and fatal.done():
        log.critical("stopping: the log can no longer persist", extra={"error": str(fatal.result())})
        code = 1
    await server.stop()
    return code
