"""etcd's /health, /livez, /readyz and /version over an in-memory HTTP/1.1 session, with a fake
member whose leader, alarms and reads the tests set; and the flags that shape the HTTP side."""

from __future__ import annotations

import argparse
import asyncio
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from frontend.http1 import Http1Session
from kvstore.config import add_flags, from_args
from kvstore.errors import NoLeader, StartupError
from kvstore.server.endpoints import Endpoints
from kvstore.server.metrics import HealthCounts
from tests.frontend.test_http1 import FakeTransport, Responses, until


@dataclass
class FakeLog:
    leader: int = 1


@dataclass
class FakeCfg:
    request_timeout_s: float = 5.0


class FakeView:
    def rev(self) -> int:
        return 1


@dataclass
class FakeMember:
    log: FakeLog = field(default_factory=FakeLog)
    cfg: FakeCfg = field(default_factory=FakeCfg)
    alarms: list[str] = field(default_factory=list)
    barrier_error: Exception | None = None

    async def read_barrier(self) -> None:
        if self.barrier_error is not None:
            raise self.barrier_error

    @property
    def store(self) -> Any:
        member = self

        class Store:
            @contextmanager
            def read(self) -> Any:
                assert member is not None
                yield FakeView()

        return Store()


async def get(member: FakeMember, target: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    health = HealthCounts()
    app = Endpoints(member, "3.5.17", registry=None, health=health)
    transport = FakeTransport()
    session = Http1Session(app, transport, asyncio.get_running_loop())
    session.feed(f"{method} {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await until(lambda: b"\r\n\r\n" in transport.out and Responses(bytes(transport.out)).items)
    ((status, headers, body),) = Responses(bytes(transport.out)).items
    return status, headers, body


async def test_health_as_etcd_3_5() -> None:
    member = FakeMember()
    assert (await get(member, "/health"))[::2] == (200, b'{"health":"true","reason":""}')
    member.log.leader = 0
    status, headers, body = await get(member, "/health")
    assert (status, body) == (503, b'{"health":"false","reason":"RAFT NO LEADER"}\n')
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert (await get(member, "/health?serializable=true"))[::2] == (200, b'{"health":"true","reason":""}')
    member.log.leader = 1
    member.barrier_error = NoLeader()
    assert (await get(member, "/health"))[::2] == (
        503,
        b'{"health":"false","reason":"RANGE ERROR:etcdserver: no leader"}\n',
    )
    member.barrier_error = None
    member.alarms = ["NOSPACE"]
    assert (await get(member, "/health"))[::2] == (503, b'{"health":"false","reason":"ALARM NOSPACE"}\n')
    assert (await get(member, "/health?exclude=NOSPACE"))[0] == 200
    assert (await get(member, "/health", "POST"))[::2] == (405, b"Method Not Allowed\n")


async def test_livez_and_readyz_as_etcd_3_5_11() -> None:
    member = FakeMember()
    assert (await get(member, "/livez"))[::2] == (200, b"ok\n")
    assert (await get(member, "/livez?verbose"))[2] == b"[+]serializable_read ok\nok\n"
    member.barrier_error = NoLeader()
    status, _, body = await get(member, "/readyz")
    assert status == 503
    assert body == (
        b"[+]data_corruption ok\n[+]serializable_read ok\n[-]linearizable_read failed: etcdserver: no leader\n\n"
    )
    assert (await get(member, "/readyz?exclude=linearizable_read"))[::2] == (200, b"ok\n")
    assert (await get(member, "/readyz/serializable_read"))[::2] == (200, b"ok\n")
    assert (await get(member, "/readyz/linearizable_read"))[0] == 503
    assert (await get(member, "/livez"))[0] == 200  # a serializable read needs no leader
    member.alarms = ["CORRUPT"]
    assert b"[-]data_corruption failed: alarm activated: CORRUPT" in (await get(member, "/readyz"))[2]
    assert (await get(member, "/readyz/nothing"))[::2] == (404, b"404 page not found\n")


async def test_version() -> None:
    status, headers, body = await get(FakeMember(), "/version")
    assert (status, body) == (200, b'{"etcdserver":"3.5.17","etcdcluster":"3.5.0"}')
    assert headers["content-type"] == "application/json"
    transport = FakeTransport()
    app = Endpoints(FakeMember(), "3.5.17", registry=None, health=HealthCounts())
    Http1Session(app, transport, asyncio.get_running_loop()).feed(b"HEAD /version HTTP/1.1\r\n\r\n")
    await until(lambda: transport.out.endswith(b"\r\n\r\n"))
    assert transport.out.startswith(b"HTTP/1.1 405 ") and b"Allow: GET\r\n" in transport.out  # no body for HEAD


def parse(*argv: str) -> Any:
    parser = argparse.ArgumentParser()
    add_flags(parser)
    return from_args(parser.parse_args(list(argv)), environ={})


def test_http_flags() -> None:
    assert parse().enable_grpc_gateway is True
    assert parse().listen_metrics_urls == []
    assert parse("--enable-grpc-gateway=false").enable_grpc_gateway is False
    assert parse("--enable-grpc-gateway").enable_grpc_gateway is True
    assert parse("-enable-grpc-gateway=0").enable_grpc_gateway is False
    cfg = parse("--listen-metrics-urls=http://127.0.0.1:2381,http://127.0.0.1:2382")
    assert cfg.metrics_bind_addresses() == ["127.0.0.1:2381", "127.0.0.1:2382"]
    with pytest.raises(StartupError, match="enable-grpc-gateway"):
        parse("--enable-grpc-gateway=perhaps")
    with pytest.raises(StartupError, match="listen-metrics-urls"):
        parse("--listen-metrics-urls=https://127.0.0.1:2381")
    parser = argparse.ArgumentParser()
    add_flags(parser)
    env = from_args(parser.parse_args([]), environ={"ETCD_ENABLE_GRPC_GATEWAY": "false"})
    assert env.enable_grpc_gateway is False
