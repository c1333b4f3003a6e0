"""Put and range throughput with TLS and with auth, raftkv beside etcd with the same settings.

    python -m bench.secure --seconds 5 --clients 64

For each server kind (raftkv, etcd) and each mode, a fresh single member is started and the
``bench.kv`` load generator drives ``put`` and ``range`` (linearizable) on it:

- ``plain``: no TLS, no auth (the baseline, as ``bench.kv`` measures it);
- ``tls``: client TLS (server certificate only, the client verifies it against the CA);
- ``auth``: no TLS, auth enabled with simple tokens, every request carrying the token of a user
  whose role grants read-write on the benchmark's keys (not root: each request is
  permission-checked);
- ``tls+auth``: both.

Certificates are made for the run (``chaos.security.Pki``) in a temp dir. Prints a table and writes
``bench/results/secure-<UTC timestamp>.json``. Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import grpc
import uvloop

from bench import kv
from bench.procs import KINDS, Server, exit_on_sigterm, version
from bench.results import RESULTS_DIR, write_results
from chaos.security import Pki
from proto.authpb import auth_pb2 as authpb
from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc

MODES = ("plain", "tls", "auth", "tls+auth")


class _Token(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, token: str) -> None:
        self.metadata = (("token", token),)

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        details = details._replace(metadata=self.metadata)
        return await continuation(details, request)


class SecureServer(Server):
    """A single member of ``kind`` in ``mode`` (its flags as etcd takes them)."""

    def __init__(self, kind: str, workdir: Path, mode: str, pki: Pki) -> None:
        super().__init__(kind, workdir / mode.replace("+", "-"))
        self.mode = mode
        self.pki = pki
        self.tls = "tls" in mode
        self.token: str | None = None

    def command(self) -> list[str]:
        cmd = super().command()
        if not self.tls:
            return cmd
        plain = f"http://127.0.0.1:{self.port}"
        cmd = [a.replace(plain, f"https://127.0.0.1:{self.port}") for a in cmd]
        return [*cmd, f"--cert-file={self.pki.member_cert}", f"--key-file={self.pki.member_key}"]

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self.pki.ca.read_bytes())

    def sync_channel(self) -> grpc.Channel:
        if self.tls:
            return grpc.secure_channel(self.endpoint, self.credentials())
        return grpc.insecure_channel(self.endpoint)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with self.sync_channel() as ch:
                    if rpc_pb2_grpc.MaintenanceStub(ch).Status(pb.StatusRequest(), timeout=1).leader:
                        return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.kind} not ready on {self.endpoint}:\n{self.log_tail()}")
            time.sleep(0.05)

    def setup_auth(self) -> None:
        """Root, and a user whose role covers the benchmark's keys; auth on; the user's token kept."""
        with self.sync_channel() as ch:
            a = rpc_pb2_grpc.AuthStub(ch)
            a.UserAdd(pb.AuthUserAddRequest(name="root", password="rootpw"), timeout=30)
            a.RoleAdd(pb.AuthRoleAddRequest(name="root"), timeout=10)
            a.UserGrantRole(pb.AuthUserGrantRoleRequest(user="root", role="root"), timeout=10)
            a.UserAdd(pb.AuthUserAddRequest(name="bench", password="benchpw"), timeout=30)
            a.RoleAdd(pb.AuthRoleAddRequest(name="bench"), timeout=10)
            perm = authpb.Permission(permType=authpb.Permission.READWRITE, key=b"bench/", range_end=b"bench0")
            a.RoleGrantPermission(pb.AuthRoleGrantPermissionRequest(name="bench", perm=perm), timeout=10)
            a.UserGrantRole(pb.AuthUserGrantRoleRequest(user="bench", role="bench"), timeout=10)
            a.AuthEnable(pb.AuthEnableRequest(), timeout=10)
            self.token = a.Authenticate(pb.AuthenticateRequest(name="bench", password="benchpw"), timeout=30).token

    async def open(self, endpoints: Sequence[str], count: int) -> list[grpc.aio.Channel]:
        interceptors = [_Token(self.token)] if self.token else None
        options = [("grpc.use_local_subchannel_pool", 1)]
        channels = [
            grpc.aio.secure_channel(endpoints[0], self.credentials(), options=options, interceptors=interceptors)
            if self.tls
            else grpc.aio.insecure_channel(endpoints[0], options=options, interceptors=interceptors)
            for _ in range(count)
        ]
        await asyncio.gather(*(asyncio.wait_for(ch.channel_ready(), 10) for ch in channels))
        return channels


async def _populate(server: SecureServer, cfg: kv.Config) -> None:
    (chan,) = await server.open(server.endpoints, 1)
    try:
        put = chan.unary_unary("/etcdserverpb.KV/Put")
        value = b"v" * cfg.value_size
        for i in range(0, cfg.keys, 64):
            await asyncio.gather(
                *(
                    put(pb.PutRequest(key=kv.key(j), value=value).SerializeToString())
                    for j in range(i, min(cfg.keys, i + 64))
                )
            )
    finally:
        await chan.close()


async def _bench(server: SecureServer, cfg: kv.Config) -> list[kv.Result]:
    await _populate(server, cfg)
    results = []
    for workload in cfg.workloads:
        requests = kv.encoded_requests(workload, cfg)
        r = await kv.drive(
            server, workload, requests, cfg.clients[0], cfg.channels, cfg.warmup, cfg.seconds, server.open
        )
        r.server = f"{server.kind} {server.mode}"
        results.append(r)
        print(
            f"  {r.server:<18} {workload:<6} {r.ops_per_s:8.0f} ops/s  p50 {r.p50_ms:6.1f} ms  p99 {r.p99_ms:6.1f} ms"
            f"  server CPU {r.server_cpu_s / r.seconds:4.2f} cores  errors {r.errors}",
            flush=True,
        )
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.secure", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--channels", type=int, default=4)
    p.add_argument("--keys", type=int, default=2000)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--servers", default=",".join(KINDS))
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    modes = [m for m in a.modes.split(",") if m]
    servers = [s for s in a.servers.split(",") if s]
    cfg = kv.Config(
        seconds=a.seconds,
        warmup=a.warmup,
        clients=[a.clients],
        channels=a.channels,
        keys=a.keys,
        workloads=["put", "range"],
    )
    exit_on_sigterm()
    results: list[kv.Result] = []
    with tempfile.TemporaryDirectory(prefix="raftkv-bench-secure-") as tmp:
        pki = Pki(Path(tmp) / "pki", ["127.0.0.1"])
        for mode in modes:
            for kind in servers:
                server = SecureServer(kind, Path(tmp) / kind, mode, pki)
                server.start()
                try:
                    if "auth" in mode:
                        server.setup_auth()
                    results += uvloop.run(_bench(server, cfg))
                finally:
                    server.stop()
    doc = {
        "argv": sys.argv[1:] if argv is None else argv,
        "config": asdict(cfg),
        "servers": {k: version(k) for k in servers},
        "results": [asdict(r) for r in results],
        "machine": kv.machine(),
    }
    path = write_results(a.results_dir, "secure-", doc)
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
