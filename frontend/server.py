"""The client listener: one port per address, each connection a ``ClientProtocol``; graceful stop.

``FrontendServer.stop(grace)`` stops listening, sends GOAWAY on every HTTP/2 connection (streams
already open go on, new ones are refused), waits up to ``grace`` seconds for them to finish,
then cancels what is left and closes every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl as ssl_module
from collections.abc import Mapping, Sequence

from frontend.grpc import Method
from frontend.grpc._session import ErrorStatus
from frontend.http1 import Http1App, not_served
from frontend.protocol import ClientProtocol, FrontendConfig

HANDSHAKE_TIMEOUT = 10.0


class FrontendServer:
    def __init__(
        self,
        methods: Mapping[str, Method],
        config: FrontendConfig | None = None,
        *,
        http1: Http1App = not_served,
        error_status: ErrorStatus | None = None,
    ) -> None:
        self.methods = {path.encode("ascii"): method for path, method in methods.items()}
        self.services = frozenset(path.lstrip("/").rpartition("/")[0] for path in methods)
        self.config = config or FrontendConfig()
        self.http1 = http1
        self.error_status = error_status
        self.connections: set[ClientProtocol] = set()
        self._servers: list[asyncio.base_events.Server] = []
        self._changed: asyncio.Event | None = None
        self.ports: list[int] = []

    def _protocol(self) -> ClientProtocol:
        return ClientProtocol(self, self.methods, self.config, self.http1, self.error_status, self.services)

    async def listen(
        self, host: str, port: int, reuse_port: bool = False, ssl: ssl_module.SSLContext | None = None
    ) -> int:
        """Starts listening on host:port (port 0: any) and returns the port; OSError if it cannot.
        With reuse_port, processes share the port (SO_REUSEPORT; benchmarks only). With ssl, the port
        speaks TLS (its context offers ALPN h2 and http/1.1); a handshake that does not finish within
        HANDSHAKE_TIMEOUT seconds is dropped."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            self._protocol,
            host or None,
            port,
            reuse_address=True,
            reuse_port=reuse_port or None,
            backlog=1024,
            ssl=ssl,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT if ssl is not None else None,
        )
        self._servers.append(server)
        bound = server.sockets[0].getsockname()[1]
        for sock in server.sockets:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.ports.append(bound)
        return bound

    async def listen_all(self, addresses: Sequence[tuple[str, int]]) -> list[int]:
        return [await self.listen(host, port) for host, port in addresses]

    def connection_closed(self) -> None:
        if self._changed is not None:
            self._changed.set()

    async def stop(self, grace: float) -> None:
        for server in self._servers:
            server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        self._changed = asyncio.Event()
        for conn in list(self.connections):
            conn.shutdown()
        # a connection closes itself once its last stream is over (ClientProtocol._flush)
        while self.connections:
            left = deadline - loop.time()
            if left <= 0:
                break
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        for conn in list(self.connections):
            conn.abort()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
