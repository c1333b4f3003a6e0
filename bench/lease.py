"""Lease keep-alive throughput of raftkv and of real etcd, measured alike in one run.

    python -m bench.lease --seconds 8 --leases 10000 --streams 64 --workloads keepalive,grant,ttl
    python -m bench.lease --members 3     # three-member clusters of each

Both servers (fresh raftkv and etcd from ``bench.procs``: single members, or with ``--members 3``
three-member clusters) run for the whole benchmark and each workload runs on one, then on the
other. Before the first workload
``--leases`` leases are granted on each server (TTL ``--ttl``, long enough not to expire).

- ``keepalive``: ``--streams`` LeaseKeepAlive streams over ``--channels`` connections, each a
  closed loop (send one renewal, wait for its answer, next) walking its share of the leases, as
  many clients each keeping their leases alive do;
- ``keepalive-1``: one stream, one renewal in flight (latency; skipped with ``--single-seconds 0``);
- ``grant``: LeaseGrant through the log, ``--streams`` calls in flight (each grant adds a lease);
- ``ttl``: LeaseTimeToLive of one lease, ``--streams`` calls in flight.

Renewals are what a large fleet of clients (Kubernetes node leases, sessions, locks) sends all the
time; on raftkv they are answered by the leader's lessor without touching the log.

Connections: the streams (or calls) share ``--channels`` connections, round-robin over the
server's endpoints (``bench.kv.open_channels``; default 4, or 2 per member with several). A
cluster's endpoints are leader first, so the leases are granted on the leader, the one-stream row
talks to the leader, and the ``--streams`` streams spread over every member: stream i on channel
i mod channels, channel j to member j mod 3. A follower forwards keep-alives and time-to-live to
the leader (etcd over its peer URL, raftkv over the leader's client URL), and grants go through
the log from any member, as each server does it. A cluster's CPU is the sum over its members
(``member_cpu_s`` has each, leader first).

Prints a table (ops/s, p50 and p99 latency, the server's CPU use, raftkv/etcd ratios) and writes the
results to ``bench/results/lease-<UTC timestamp>.json``. Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
import uvloop

from bench.kv import fmt, machine, machine_busy_seconds, open_channels, percentile, ratios
from bench.procs import KINDS, Cluster, Server, exit_on_sigterm, started_targets
from bench.results import RESULTS_DIR, members_tag, utc_now, write_results
from proto.etcdserverpb import rpc_pb2 as pb

WORKLOADS = ("keepalive", "grant", "ttl")
SINGLE = "keepalive-1"
TITLES = {
    "keepalive": "keep-alive",
    SINGLE: "keep-alive, 1 stream",
    "grant": "grant",
    "ttl": "time-to-live",
}
KEEPALIVE = "/etcdserverpb.Lease/LeaseKeepAlive"
GRANT = "/etcdserverpb.Lease/LeaseGrant"
TTL = "/etcdserverpb.Lease/LeaseTimeToLive"


@dataclass
class Config:
    seconds: float = 8.0
    warmup: float = 2.0
    leases: int = 10_000
    ttl: int = 600
    streams: int = 64
    channels: int = 4
    workloads: list[str] = field(default_factory=lambda: list(WORKLOADS))
    single_seconds: float = 8.0
    servers: list[str] = field(default_factory=lambda: list(KINDS))
    members: int = 1  # per server: 1, or a cluster of 3


@dataclass
class Result:
    workload: str
    server: str
    streams: int
    seconds: float
    ops: int
    errors: int
    ops_per_s: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    server_cpu_s: float
    client_cpu_s: float
    other_cpu_s: float
    expired_answers: int = 0  # keep-alives answered with TTL 0 (a lease lost: should stay 0)
    members: int = 1
    member_cpu_s: list[float] = field(default_factory=list)  # server_cpu_s per member (leader first)


async def grant_leases(server: Server | Cluster, cfg: Config) -> list[int]:
    """Grants cfg.leases leases on the first endpoint (a cluster's leader), 256 calls in flight; returns their ids."""
    (chan,) = await open_channels(server.endpoint, 1)
    try:
        grant = chan.unary_unary(
            GRANT,
            request_serializer=pb.LeaseGrantRequest.SerializeToString,
            response_deserializer=pb.LeaseGrantResponse.FromString,
        )
        ids: list[int] = []
        for first in range(0, cfg.leases, 256):
            n = min(256, cfg.leases - first)
            resps = await asyncio.gather(*(grant(pb.LeaseGrantRequest(TTL=cfg.ttl), timeout=60) for _ in range(n)))
            ids.extend(r.ID for r in resps)
        return ids
    finally:
        await chan.close()


Client = Callable[[int, float, float, list[float]], Awaitable[tuple[int, int]]]


async def measure(
    server: Server | Cluster, workload: str, streams: int, warmup: float, seconds: float, client: Client
) -> Result:
    """Runs `streams` closed-loop clients for warmup + seconds and measures the last `seconds`."""
    now = time.perf_counter()
    start, end = now + warmup, now + warmup + seconds
    cpu: list[tuple[list[float], float, float]] = []

    async def probe() -> None:
        await asyncio.sleep(max(0.0, start - time.perf_counter()))
        cpu.append((server.member_cpu_seconds(), time.process_time(), machine_busy_seconds()))
        await asyncio.sleep(max(0.0, end - time.perf_counter()))
        cpu.append((server.member_cpu_seconds(), time.process_time(), machine_busy_seconds()))

    lists: list[list[float]] = [[] for _ in range(streams)]
    probing = asyncio.ensure_future(probe())
    outcomes = await asyncio.gather(*(client(i, start, end, lists[i]) for i in range(streams)))
    await probing
    latencies = sorted(x for lat in lists for x in lat)
    (members0, client0, busy0), (members1, client1, busy1) = cpu
    member_cpu = [b - a for a, b in zip(members0, members1, strict=True)]
    server0, server1 = 0.0, sum(member_cpu)
    ms = 1000.0
    return Result(
        workload=workload,
        server=server.kind,
        streams=streams,
        seconds=seconds,
        ops=len(latencies),
        errors=sum(e for e, _ in outcomes),
        ops_per_s=len(latencies) / seconds,
        p50_ms=percentile(latencies, 0.50) * ms,
        p99_ms=percentile(latencies, 0.99) * ms,
        mean_ms=(sum(latencies) / len(latencies) * ms) if latencies else math.nan,
        max_ms=(latencies[-1] * ms) if latencies else math.nan,
        server_cpu_s=server1 - server0,
        client_cpu_s=client1 - client0,
        other_cpu_s=max(0.0, (busy1 - busy0) - (server1 - server0) - (client1 - client0)),
        expired_answers=sum(x for _, x in outcomes),
        members=len(member_cpu),
        member_cpu_s=member_cpu,
    )


async def run_workload(server: Server | Cluster, workload: str, ids: list[int], cfg: Config) -> Result:
    streams = 1 if workload == SINGLE else cfg.streams
    seconds = cfg.single_seconds if workload == SINGLE else cfg.seconds
    chans = await open_channels(server.endpoints, min(cfg.channels, streams))
    try:
        if workload in ("keepalive", SINGLE):
            requests = [pb.LeaseKeepAliveRequest(ID=i).SerializeToString() for i in ids]

            async def client(i: int, start: float, end: float, latencies: list[float]) -> tuple[int, int]:
                call = chans[i % len(chans)].stream_stream(KEEPALIVE)()
                mine = requests[i::streams] or requests
                record, perf = latencies.append, time.perf_counter
                errors = expired = k = 0
                try:
                    while True:
                        t0 = perf()
                        if t0 >= end:
                            return errors, expired
                        await call.write(mine[k])
                        raw = await call.read()
                        t1 = perf()
                        if start <= t1 < end:
                            record(t1 - t0)
                            if pb.LeaseKeepAliveResponse.FromString(raw).TTL <= 0:
                                expired += 1
                        k = (k + 1) % len(mine)
                except grpc.aio.AioRpcError:
                    return errors + 1, expired
                finally:
                    call.cancel()

        else:
            method = GRANT if workload == "grant" else TTL
            body = (
                pb.LeaseGrantRequest(TTL=cfg.ttl).SerializeToString()
                if workload == "grant"
                else pb.LeaseTimeToLiveRequest(ID=ids[0]).SerializeToString()
            )
            calls = [ch.unary_unary(method) for ch in chans]

            async def client(i: int, start: float, end: float, latencies: list[float]) -> tuple[int, int]:
                call = calls[i % len(calls)]
                record, perf = latencies.append, time.perf_counter
                errors = 0
                while True:
                    t0 = perf()
                    if t0 >= end:
                        return errors, 0
                    try:
                        await call(body)
                    except grpc.aio.AioRpcError:
                        if t0 >= start:
                            errors += 1
                        continue
                    t1 = perf()
                    if start <= t1 < end:
                        record(t1 - t0)

        return await measure(server, workload, streams, cfg.warmup, seconds, client)
    finally:
        await asyncio.gather(*(ch.close() for ch in chans))


async def bench_all(servers: list[Server | Cluster], cfg: Config, log: bool = True) -> list[Result]:
    ids = await asyncio.gather(*(grant_leases(server, cfg) for server in servers))
    plan = list(cfg.workloads)
    if cfg.single_seconds > 0 and "keepalive" in plan:
        plan.insert(plan.index("keepalive") + 1, SINGLE)
    results = []
    for workload in plan:
        for server, leases in zip(servers, ids, strict=True):
            result = await run_workload(server, workload, leases, cfg)
            if log:
                print(
                    f"  {server.kind:<6} {TITLES[workload]:<21} {result.ops_per_s:>9,.0f} ops/s  "
                    f"p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms  errors {result.errors}",
                    file=sys.stderr,
                    flush=True,
                )
            results.append(result)
    return results


def run(cfg: Config, workdir: Path, log: bool = True) -> tuple[list[Result], dict[str, str]]:
    with started_targets(cfg.servers, workdir, cfg.members, log) as (servers, versions):
        return uvloop.run(bench_all(servers, cfg, log)), versions


# ---- reporting ----


def table(results: list[Result], cfg: Config) -> str:
    by = {(r.workload, r.server): r for r in results}
    servers = [s for s in cfg.servers if any(r.server == s for r in results)]
    head = f"{'workload':<21} {'streams':>7}"
    for s in servers:
        head += f" | {s + ' ops/s':>13} {'p50 ms':>7} {'p99 ms':>7} {'cpu':>5}"
    ratio = "raftkv" in servers and "etcd" in servers
    if ratio:
        head += f" | {'raftkv/etcd: ops/s':>18} {'p50':>5} {'p99':>5}"
    lines = [head, "-" * len(head)]
    for w in dict.fromkeys(r.workload for r in results):
        first = next(r for r in results if r.workload == w)
        line = f"{TITLES[w]:<21} {first.streams:>7}"
        for s in servers:
            r = by.get((w, s))
            if r is None:
                line += f" | {'-':>13} {'-':>7} {'-':>7} {'-':>5}"
                continue
            cpu = f"{100 * r.server_cpu_s / r.seconds:.0f}%"
            line += f" | {fmt(r.ops_per_s, ',.0f'):>13} {fmt(r.p50_ms, '.2f'):>7} {fmt(r.p99_ms, '.2f'):>7} {cpu:>5}"
        if ratio:
            a, b = by.get((w, "raftkv")), by.get((w, "etcd"))
            if a and b and b.ops_per_s and b.p50_ms and b.p99_ms:
                line += f" | {a.ops_per_s / b.ops_per_s:>18.2f} {a.p50_ms / b.p50_ms:>5.2f} {a.p99_ms / b.p99_ms:>5.2f}"
        lines.append(line)
    errors = sum(r.errors for r in results)
    expired = sum(r.expired_answers for r in results)
    others = [100 * r.other_cpu_s / r.seconds for r in results]
    topology = (
        "single members"
        if cfg.members == 1
        else f"{cfg.members}-member clusters, channels round-robin over the members, leader first"
    )
    lines.append(
        f"({topology}; {cfg.leases:,} leases of TTL {cfg.ttl} s, {cfg.streams} streams over {cfg.channels} channels, "
        f"{cfg.seconds:g} s per workload after {cfg.warmup:g} s of warm-up; cpu = the server's CPU use summed "
        "over its members, "
        f"100% = one core; {errors} errors; {expired} keep-alives answered TTL 0; other processes on the machine "
        f"used {sum(others) / len(others):.0f}% on average, at most {max(others):.0f}%)"
    )
    return "\n".join(lines)


def document(cfg: Config, results: list[Result], versions: dict[str, str], argv: list[str]) -> dict[str, object]:
    return {
        "benchmark": "lease",
        "date": utc_now(),
        "command": "python -m bench.lease " + " ".join(argv),
        "machine": machine(),
        "config": asdict(cfg),
        "servers": versions,
        "results": [asdict(r) for r in results],
        "ratios": ratios(results),
    }


def parse_args(argv: list[str]) -> tuple[Config, Path]:
    p = argparse.ArgumentParser(prog="python -m bench.lease", description=__doc__.split("\n\n")[0])
    d = Config()
    p.add_argument("--seconds", type=float, default=d.seconds, help="measured seconds per workload")
    p.add_argument("--warmup", type=float, default=d.warmup, help="warm-up seconds before each measurement")
    p.add_argument("--leases", type=int, default=d.leases, help="leases granted before the workloads")
    p.add_argument("--ttl", type=int, default=d.ttl, help="their TTL in seconds")
    p.add_argument("--streams", type=int, default=d.streams, help="keep-alive streams (or calls) in flight")
    p.add_argument(
        "--channels",
        type=int,
        default=None,
        help=f"gRPC connections the streams share (default {d.channels}, or 2 per member with several members)",
    )
    p.add_argument("--workloads", default=",".join(d.workloads), help=f"comma-separated, of {', '.join(WORKLOADS)}")
    p.add_argument(
        "--single-seconds", type=float, default=None, help="seconds of the one-stream keep-alive row (0 skips it)"
    )
    p.add_argument("--servers", default=",".join(d.servers), help="comma-separated, of raftkv, etcd")
    p.add_argument(
        "--members", type=int, choices=(1, 3), default=d.members, help="members per server: 1 (default) or 3"
    )
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON results go")
    a = p.parse_args(argv)
    workloads = [w for w in a.workloads.split(",") if w]
    servers = [s for s in a.servers.split(",") if s]
    for w in workloads:
        if w not in WORKLOADS:
            p.error(f"unknown workload {w!r}")
    for s in servers:
        if s not in KINDS:
            p.error(f"unknown server {s!r}")
    if a.channels is None:
        a.channels = d.channels if a.members == 1 else 2 * a.members
    if a.leases < 1 or a.streams < 1 or a.channels < 1 or a.seconds <= 0 or a.warmup < 0 or a.ttl < 1:
        p.error("--leases, --streams, --channels, --ttl and --seconds must be positive, --warmup not negative")
    cfg = Config(
        seconds=a.seconds,
        warmup=a.warmup,
        leases=a.leases,
        ttl=a.ttl,
        streams=a.streams,
        channels=a.channels,
        workloads=workloads,
        single_seconds=a.seconds if a.single_seconds is None else a.single_seconds,
        servers=servers,
        members=a.members,
    )
    return cfg, a.results_dir


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cfg, results_dir = parse_args(argv)
    exit_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="raftkv-bench-") as tmp:
        results, versions = run(cfg, Path(tmp))
    doc = document(cfg, results, versions, argv)
    path = write_results(results_dir, f"lease-{members_tag(cfg.members)}", doc)
    print()
    print(table(results, cfg))
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
