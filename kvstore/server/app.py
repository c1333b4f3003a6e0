"""A member process's lifecycle: open the data, start the log and the client front end, serve, stop.

Clients are served by raftkv's own front end (``frontend``: gRPC over HTTP/2 on asyncio, HTTP/1.1
on the same port) from the dispatch table of ``kvstore.server.routes`` (a learner serves only what
etcd's learners serve). Who the member is (a founding member, a restart, a member joining with
``--initial-cluster-state existing``) is decided by ``kvstore.server.identity``. Startup refuses to
run on damaged data (``StartupError`` with the file named), and, with
``--experimental-initial-corrupt-check``, on data that differs from its peers'. A member removed
from the cluster stops with exit code 0, as etcd does. Shutdown is graceful on SIGTERM and SIGINT:
the front end stops taking calls (GOAWAY) and gives running ones a moment, then the log and the
backend are closed. A failure of the log itself (a failed fsync)
stops the member with exit code 1: it must never acknowledge what it did not persist.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal

from frontend.protocol import FrontendConfig
from frontend.server import FrontendServer
from kvstore import corrupt
from kvstore.config import GRPC_OVERHEAD_BYTES, ServerConfig
from kvstore.errors import StartupError
from kvstore.membership import Membership
from kvstore.mvcc import Backend
from kvstore.server import identity
from kvstore.server.lease_service import LeaseService
from kvstore.server.member import Member
from kvstore.server.routes import member_services, methods
from kvstore.server.rpc import error_status
from raft.errors import RemovedError
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
        backend = Backend(member_dir / "db")
        try:
            ident = await identity.resolve(cfg, has_members=bool(Membership(backend).members))
        except BaseException:
            backend.close()
            raise
        node = RaftNode(
            member_id=ident.member_id,
            cluster_id=ident.cluster_id,
            wal_dir=member_dir / "wal",
            snap_dir=member_dir / "snap",
            peer_listen=cfg.peer_bind_addresses(),
            peers=ident.peers,
            bootstrap=ident.bootstrap,
            heartbeat_ms=cfg.heartbeat_interval_ms,
            election_ms=cfg.election_timeout_ms,
            snapshot_count=cfg.snapshot_count,
            request_timeout=cfg.request_timeout_s,
            bootstrap_contexts=ident.contexts,
            removed=ident.removed,
        )
        member = Member(cfg, node, backend, known_members=ident.known)
        self.member = member
        await member.start()
        if cfg.initial_corrupt_check:
            await corrupt.initial_check(member)
        # like etcd, serve clients once this member's name and client URLs are in the log (what
        # MemberList and endpoint discovery show); that needs a leader and a quorum
        await member.published.wait()
        services, self.lease_service = member_services(member)
        server = FrontendServer(methods(services, member.is_learner), frontend_config(cfg), error_status=error_status)
        self.frontend = server
        for address in cfg.client_bind_addresses():
            try:
                port = await server.listen(*split_host_port(address))
            except OSError as exc:
                raise StartupError(f"cannot listen for clients on {address}: {exc}") from exc
            self.ports.append(port)
        log.info(
            "serving client requests",
            extra={
                "member_name": cfg.name,
                "member_id": f"{member.member_id:x}",
                "cluster_id": f"{member.cluster_id:x}",
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
    try:
        await server.start()
    except BaseException:
        await server.stop()
        raise
    assert server.member is not None
    quiet_gc()
    fatal = getattr(server.member.log, "fatal", None)
    waiters = [asyncio.ensure_future(stop.wait())]
    if fatal is not None:
        waiters.append(fatal)
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if fatal is not None and fatal.done():
        if isinstance(fatal.result(), RemovedError):  # etcd exits 0 then too
            log.warning("stopping: the member has been permanently removed from the cluster")
        else:
            log.critical("stopping: the log can no longer persist", extra={"error": str(fatal.result())})
            code = 1
    await server.stop()
    return code
