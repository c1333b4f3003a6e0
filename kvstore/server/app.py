"""A member process's lifecycle: open the data, start the log and the client front end, serve, stop.

Clients are served by raftkv's own front end (``frontend``: gRPC over HTTP/2 on asyncio, HTTP/1.1
on the same port) from the dispatch table of ``kvstore.server.routes`` (a learner serves only what
etcd's learners serve); HTTP/1.1 requests go to etcd's JSON gateway over that same table and to
etcd's endpoints (``kvstore.server.http_api``), and ``--listen-metrics-urls`` adds listeners for the
metrics and health endpoints alone. Who the member is (a founding member, a restart, a member
joining with ``--initial-cluster-state existing``) is decided by ``kvstore.server.identity``.
Startup refuses to run on damaged data (``StartupError`` with the file named), and, with
``--experimental-initial-corrupt-check``, on data that differs from its peers'. A member removed
from the cluster stops with exit code 0, as etcd does. Shutdown is graceful on SIGTERM and SIGINT:
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

from frontend.gateway import Gateway
from frontend.http1 import Http1Config
from frontend.protocol import FrontendConfig
from frontend.server import FrontendServer
from kvstore import corrupt
from kvstore.config import GRPC_OVERHEAD_BYTES, ServerConfig
from kvstore.errors import StartupError
from kvstore.membership import Membership
from kvstore.mvcc import Backend
from kvstore.server import identity
from kvstore.server.endpoints import Endpoints
from kvstore.server.http_api import BINDINGS, CORS, ClientPortApp, etcd_codec
from kvstore.server.lease_service import LeaseService
from kvstore.server.local_client import LocalClient
from kvstore.server.member import VERSION, Member
from kvstore.server.metrics import HealthCounts, MemberCollector, member_registry
from kvstore.server.routes import member_services, methods
from kvstore.server.rpc import error_status
from kvstore.server.security import ClientDialer, client_server_tls, peer_security
from raft.errors import RemovedError
from raft.node import RaftNode

log = logging.getLogger("raftkv.server")

GRACE_SECONDS = 2.0


def receive_limit(cfg: ServerConfig) -> int:
    """etcd's receive limit: --max-request-bytes plus gRPC's overhead allowance (2 MiB by default)."""
    return cfg.max_request_bytes + GRPC_OVERHEAD_BYTES


def frontend_config(cfg: ServerConfig) -> FrontendConfig:
    # a JSON body holds its bytes in base64 (4/3) among field names: four times the receive limit lets
    # through whatever etcd's gateway would decode and then refuse with gRPC's limit (the decoded
    # request is checked as gRPC checks it); only a body past that is refused unread (413)
    limit = receive_limit(cfg)
    return FrontendConfig(
        max_receive_message_length=limit,
        max_concurrent_streams=cfg.max_concurrent_streams,
        http1=Http1Config(max_body_bytes=4 * limit + (64 << 10)),
    )


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
        self.local_client: LocalClient | None = None
        self.metrics_servers: list[FrontendServer] = []
        self.metrics_ports: list[int] = []

    async def start(self) -> None:
        cfg = self.cfg
        member_dir = cfg.data_dir / "member"
        client_tls = client_server_tls(cfg)  # certificates load (or are made) before anything opens
        security = peer_security(cfg)
        backend = Backend(member_dir / "db")
        try:
            ident = await identity.resolve(
                cfg, has_members=bool(Membership(backend).members), client_ssl=security.client_ssl
            )
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
            peer_security=security,
        )
        member = Member(cfg, node, backend, known_members=ident.known)
        member.client_dialer = ClientDialer(cfg)  # type: ignore[attr-defined]
        self.member = member
        await member.start()
        if cfg.initial_corrupt_check:
            await corrupt.initial_check(member)
        # like etcd, serve clients once this member's name and client URLs are in the log (what
        # MemberList and endpoint discovery show); that needs a leader and a quorum
        await member.published.wait()
        services, self.lease_service, self.local_client = member_services(member)
        config = frontend_config(cfg)
        table = methods(services, member.is_learner, has_leader=lambda: bool(member.log.leader))
        server = FrontendServer(table, config, error_status=error_status)
        self.frontend = server
        health = HealthCounts()
        registry = member_registry(MemberCollector(member, server.methods, health, VERSION))
        gateway = None
        if cfg.enable_grpc_gateway:
            gateway = Gateway(
                BINDINGS,
                server.methods,
                codec=etcd_codec(),
                error_status=error_status,
                receive_limit=receive_limit(cfg),
                services=server.services,
                extra_headers=CORS,
            )
        server.http1 = ClientPortApp(gateway, Endpoints(member, VERSION, registry, health, extra_headers=CORS))
        for address in cfg.client_bind_addresses():
            try:
                port = await server.listen(
                    *split_host_port(address), ssl=client_tls.context if client_tls is not None else None
                )
            except OSError as exc:
                raise StartupError(f"cannot listen for clients on {address}: {exc}") from exc
            self.ports.append(port)
        for url, address in zip(cfg.listen_metrics_urls, cfg.metrics_bind_addresses(), strict=True):
            metrics = FrontendServer(
                {}, config, http1=Endpoints(member, VERSION, registry, health, serve_version=False)
            )
            self.metrics_servers.append(metrics)
            # as etcd: an https:// metrics URL is served with the client port's certificate
            metrics_ssl = client_tls.context if client_tls is not None and url.startswith("https://") else None
            try:
                self.metrics_ports.append(await metrics.listen(*split_host_port(address), ssl=metrics_ssl))
            except OSError as exc:
                raise StartupError(f"cannot listen for metrics on {address}: {exc}") from exc
        log.info(
            "serving client requests",
            extra={
                "member_name": cfg.name,
                "member_id": f"{member.member_id:x}",
                "cluster_id": f"{member.cluster_id:x}",
                "listen_client_urls": ",".join(cfg.listen_client_urls),
                "listen_metrics_urls": ",".join(cfg.listen_metrics_urls),
                "data_dir": str(cfg.data_dir),
                "revision": member.store.current_rev,
                "applied_index": member.applied_index,
            },
        )

    async def stop(self) -> None:
        for metrics in self.metrics_servers:
            await metrics.stop(0)
        if self.frontend is not None:
            await self.frontend.stop(GRACE_SECONDS)
        if self.local_client is not None:
            await self.local_client.close()
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
        if isinstance(fatal.result(), RemovedError):  # etcd exits 0 then too
            log.warning("stopping: the member has been permanently removed from the cluster")
        else:
            log.critical("stopping: the log can no longer persist", extra={"error": str(fatal.result())})
            code = 1
    await server.stop()
    return code
