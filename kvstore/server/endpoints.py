"""etcd's plain HTTP endpoints: ``/version``, ``/health``, ``/livez``, ``/readyz`` and ``/metrics``.

As etcd 3.5 serves them (3.5.11 and later for ``/livez`` and ``/readyz``):

- ``GET /version``: ``{"etcdserver":"3.5.17","etcdcluster":"3.5.0"}``.
- ``GET /health``: ``{"health":"true","reason":""}``; with an alarm raised (unless ``?exclude=NAME``),
  without a leader (unless ``?serializable=true``) or when a read fails, 503 and
  ``{"health":"false","reason":"..."}`` (``ALARM NOSPACE``, ``RAFT NO LEADER``, ``RANGE ERROR:...``).
- ``GET /livez`` (the ``serializable_read`` check) and ``GET /readyz`` (``data_corruption``,
  ``serializable_read``, ``linearizable_read``): ``ok`` (each check's ``[+]name ok`` line first with
  ``?verbose``), ``?exclude=name`` leaves a check out, ``/livez/<check>`` and ``/readyz/<check>``
  run one; a failing check makes it 503 with every check's line (``[-]name failed: reason``).
  etcd runs the checks in Go's map order (random); raftkv in the order above.
- ``/metrics``: Prometheus text (``kvstore.server.metrics``), any method, gzip when accepted.

Other methods than GET get Go's ``405 Method Not Allowed`` with ``Allow: GET``; any other path
Go's ``404 page not found``. Reads are checked through the member (a serializable read of the
store, and for a linearizable one the read barrier first), bounded by the request timeout.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import parse_qs

from frontend.http1 import Exchange
from kvstore.errors import EtcdError
from kvstore.server.metrics import HealthCounts, render

TEXT = "text/plain; charset=utf-8"
GO_ERROR_HEADERS = (("Content-Type", TEXT), ("X-Content-Type-Options", "nosniff"))
LIVEZ = ("serializable_read",)
READYZ = ("data_corruption", "serializable_read", "linearizable_read")


def cluster_version(version: str) -> str:
    major, minor = version.split(".")[:2]
    return f"{major}.{minor}.0"


class Endpoints:
    """The endpoints for one member; ``version`` is served only where etcd serves it (the client port)."""

    def __init__(
        self,
        member: Any,
        version: str,
        registry: Any,
        health: HealthCounts,
        *,
        serve_version: bool = True,
        extra_headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.member = member
        self.version = version
        self.registry = registry
        self.health = health
        self.serve_version = serve_version
        self.extra = extra_headers
        paths: dict[str, Callable[[Exchange, dict[str, list[str]]], Awaitable[None] | None]] = {
            "/health": self._health,
            "/livez": lambda ex, q: self._checks(ex, q, LIVEZ, root=True),
            "/readyz": lambda ex, q: self._checks(ex, q, READYZ, root=True),
        }
        for name in LIVEZ:
            paths["/livez/" + name] = lambda ex, q, name=name: self._checks(ex, q, (name,), root=False)
        for name in READYZ:
            paths["/readyz/" + name] = lambda ex, q, name=name: self._checks(ex, q, (name,), root=False)
        if serve_version:
            paths["/version"] = self._version
        self.paths = paths

    def __call__(self, ex: Exchange) -> Awaitable[None] | None:
        request = ex.request
        if request.path == "/metrics":
            headers, body = render(self.registry, request.header("accept-encoding"))
            ex.respond(200, [*self.extra, *headers], body)
            return None
        handler = self.paths.get(request.path)
        if handler is None:
            ex.respond(404, self.extra + GO_ERROR_HEADERS, b"404 page not found\n")
            return None
        if request.method != "GET":
            ex.respond(405, (*self.extra, ("Allow", "GET"), *GO_ERROR_HEADERS), b"Method Not Allowed\n")
            return None
        return handler(ex, parse_qs(request.query, keep_blank_values=True))

    # ---- /version ----

    def _version(self, ex: Exchange, query: dict[str, list[str]]) -> None:
        body = json.dumps(
            {"etcdserver": self.version, "etcdcluster": cluster_version(self.version)}, separators=(",", ":")
        )
        ex.respond(200, (*self.extra, ("Content-Type", "application/json")), body.encode())

    # ---- the checks ----

    def alarms(self) -> Sequence[str]:
        """Names of the raised alarms (raftkv raises none yet)."""
        return tuple(getattr(self.member, "alarms", ()))

    async def read(self, serializable: bool) -> str | None:
        """None if a read works now, else why not (etcd's error text)."""
        member = self.member
        try:
            async with asyncio.timeout(member.cfg.request_timeout_s):
                if not serializable:
                    await member.read_barrier()
                with member.store.read() as view:
                    view.rev()
        except EtcdError as exc:
            return exc.message
        except TimeoutError:
            return "context deadline exceeded"
        return None

    async def _health(self, ex: Exchange, query: dict[str, list[str]]) -> None:
        excluded = {v for v in query.get("exclude", []) if v}
        serializable = query.get("serializable", [""])[0] == "true"
        reason = ""
        for alarm in self.alarms():
            if alarm not in excluded:
                reason = {"NOSPACE": "ALARM NOSPACE", "CORRUPT": "ALARM CORRUPT"}.get(alarm, "ALARM UNKNOWN")
                break
        if not reason and not serializable and not self.member.log.leader:
            reason = "RAFT NO LEADER"
        if not reason:
            failure = await self.read(serializable)
            if failure is not None:
                reason = "RANGE ERROR:" + failure
        if reason:
            self.health.failures += 1
            body = json.dumps({"health": "false", "reason": reason}, separators=(",", ":")) + "\n"
            ex.respond(503, self.extra + GO_ERROR_HEADERS, body.encode())
            return
        self.health.success += 1
        ex.respond(200, (*self.extra, ("Content-Type", TEXT)), b'{"health":"true","reason":""}')

    async def _check(self, name: str) -> str | None:
        if name == "data_corruption":
            return "alarm activated: CORRUPT" if "CORRUPT" in self.alarms() else None
        return await self.read(serializable=name == "serializable_read")

    async def _checks(self, ex: Exchange, query: dict[str, list[str]], names: Sequence[str], root: bool) -> None:
        if root:
            excluded = {v for v in query.get("exclude", []) if v}
            names = [n for n in names if n not in excluded]
        lines = []
        failed = False
        for name in names:
            failure = await self._check(name)
            if failure is None:
                lines.append(f"[+]{name} ok\n")
            else:
                failed = True
                lines.append(f"[-]{name} failed: {failure}\n")
        reason = "".join(lines)
        if failed:
            ex.respond(503, self.extra + GO_ERROR_HEADERS, (reason + "\n").encode())
            return
        body = (reason if "verbose" in query else "") + "ok\n"
        ex.respond(200, self.extra + GO_ERROR_HEADERS, body.encode())
