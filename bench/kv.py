"""KV throughput and latency of raftkv and of real etcd, measured alike in one run.

    python -m bench.kv --seconds 8 --clients 64 --value-size 256 --workloads put,range,srange
    python -m bench.kv --members 3        # three-member clusters of each

Both servers (a fresh raftkv and a fresh etcd, each of ``--members`` members on free loopback
ports with its data in a temp dir) run for the whole benchmark; each workload runs on one, then
on the other, so a drift of the machine's load hits both alike (an idle server costs well under
1% of a core). The same gRPC load generator, in this process, runs each workload: a warm-up,
then ``--seconds`` of measurement with ``--clients`` requests in flight over ``--channels``
connections (``--clients 64,256``: each workload once per count, a row each), keys spread over
``--keys`` keys. With three members the connections are spread
round-robin over the members' endpoints, leader first (as etcd's own benchmark tool spreads its
connections over several ``--endpoints``), and a server's CPU is the sum over its three member
processes. Workloads:

- ``put``: Put of a ``--value-size`` byte value;
- ``range``: linearizable Range of one key;
- ``srange``: serializable Range of one key;
- ``txn``: compare-and-swap, the loop Kubernetes' ``GuaranteedUpdate`` runs: a Txn that compares
  the key's mod_revision with the one the client last saw, puts a ``--value-size`` byte value if
  it is equal, and else reads the key (and so learns its mod_revision for the next try). Every
  client has a key of its own, so a swap fails only when the client's last answer was lost (its
  first try, at mod_revision 0, fails on a key written before, and is counted in the warm-up);
  successful and failed swaps are counted apart (``cas_failed``).

and, unless ``--single-seconds 0``, Put from a single client (one request in flight), for latency.
Before the reads every key is written once, so each read finds a value. ``--rounds N`` runs the
whole plan N times on the same servers and reports, per workload and server, the round in which
the rest of the machine used the least CPU (a shared machine is rarely quiet for long); the JSON
keeps every round.

The load generator is built to cost the shared CPU as little as possible: requests are encoded
once up front and sent as raw bytes on generic unary-unary methods (responses are not decoded;
errors still arrive as gRPC statuses and are counted; only ``txn``, whose next request depends
on the last answer, encodes a request and decodes the answer each time), each client is one coroutine reusing its
channel, and per request the only work besides the call is two clock reads and one append.

Prints a table (ops/s, p50 and p99 latency, the server's CPU use, raftkv/etcd ratios) and writes
the results to ``bench/results/kv-<UTC timestamp>.json`` (``kv-3members-<UTC timestamp>.json``
for clusters). Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import grpc
import uvloop

from bench.procs import KINDS, Cluster, Server, exit_on_sigterm
from bench.results import RESULTS_DIR, members_tag, utc_now, write_results
from proto.etcdserverpb import rpc_pb2 as pb

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
WORKLOADS = ("put", "range", "srange", "txn")
SINGLE = "put-1"  # the single-client put row
METHODS = {
    "put": "/etcdserverpb.KV/Put",
    "range": "/etcdserverpb.KV/Range",
    "srange": "/etcdserverpb.KV/Range",
    "txn": "/etcdserverpb.KV/Txn",
    SINGLE: "/etcdserverpb.KV/Put",
}
TITLES = {
    "put": "put",
    "range": "range (linearizable)",
    "srange": "range (serializable)",
    "txn": "txn compare-and-swap",
    SINGLE: "put, 1 client",
}


@dataclass
class Config:
    seconds: float = 8.0
    warmup: float = 2.0
    clients: list[int] = field(default_factory=lambda: [64])  # a row per count
    channels: int = 4
    value_size: int = 256
    keys: int = 10_000
    workloads: list[str] = field(default_factory=lambda: list(WORKLOADS))
    single_seconds: float = 8.0
    servers: list[str] = field(default_factory=lambda: list(KINDS))
    seed: int = 1
    members: int = 1  # per server: 1, or a cluster of 3
    rounds: int = 1  # the whole plan this many times; reported: per row, the quietest round


class Target(Protocol):
    """What the load generator needs of a server under test: a ``Server`` or a ``Cluster``."""

    kind: str

    @property
    def endpoints(self) -> list[str]: ...

    def cpu_seconds(self) -> float: ...

    def member_cpu_seconds(self) -> list[float]: ...


@dataclass
class Result:
    workload: str
    server: str
    clients: int
    seconds: float  # length of the measurement window
    ops: int  # successful requests completed inside it
    errors: int
    ops_per_s: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    server_cpu_s: float  # CPU the server process used during the window (all its threads)
    client_cpu_s: float  # CPU this load generator used during the window
    other_cpu_s: float  # CPU everything else on the machine used during the window (noise)
    members: int = 1
    member_cpu_s: list[float] = field(default_factory=list)  # server_cpu_s per member process (leader first)
    round: int = 0
    cas_failed: int = 0  # txn: swaps answered inside the window whose compare failed (counted in ops)


def machine_busy_seconds() -> float:
    """CPU time all cores have spent busy since boot (Linux /proc/stat), to see what else ran."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:9]]
    del ticks[3:5]  # idle, iowait
    return sum(ticks) / CLOCK_TICKS


def key(i: int) -> bytes:
    return b"bench/key/%08d" % i


def cas_key(i: int) -> bytes:
    """Client i's own key in the ``txn`` workload."""
    return b"bench/cas/%06d" % i


def cas_request(k: bytes, mod_revision: int, value: bytes) -> bytes:
    """Put ``value`` if ``k`` was last modified at ``mod_revision``; else read ``k``."""
    return pb.TxnRequest(
        compare=[pb.Compare(result=pb.Compare.EQUAL, target=pb.Compare.MOD, key=k, mod_revision=mod_revision)],
        success=[pb.RequestOp(request_put=pb.PutRequest(key=k, value=value))],
        failure=[pb.RequestOp(request_range=pb.RangeRequest(key=k))],
    ).SerializeToString()


def cas_outcome(raw: bytes) -> tuple[bool, int]:
    """(succeeded, the key's mod_revision now) from a ``cas_request`` answer."""
    resp = pb.TxnResponse.FromString(raw)
    if resp.succeeded:
        return True, resp.header.revision  # the put's revision
    kvs = resp.responses[0].response_range.kvs if resp.responses else []
    return False, kvs[0].mod_revision if kvs else 0


def encoded_requests(workload: str, cfg: Config) -> list[bytes]:
    """Every request the workload sends, encoded once: one per key (``txn``: none, they are built as it goes)."""
    if workload == "txn":
        return []
    if workload in ("put", SINGLE):
        value = random.Random(cfg.seed).randbytes(cfg.value_size)
        return [pb.PutRequest(key=key(i), value=value).SerializeToString() for i in range(cfg.keys)]
    serializable = workload == "srange"
    return [pb.RangeRequest(key=key(i), serializable=serializable).SerializeToString() for i in range(cfg.keys)]


def _stride(n: int) -> int:
    """A step coprime with n, so a client walking the key space by it visits every key."""
    step = max(1, int(n * 0.618))
    while math.gcd(step, n) != 1:
        step += 1
    return step


def percentile(ordered: Sequence[float], q: float) -> float:
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


async def open_channels(endpoint: str | Sequence[str], count: int) -> list[grpc.aio.Channel]:
    """``count`` channels (one connection each), spread round-robin over one or several endpoints."""
    endpoints = [endpoint] if isinstance(endpoint, str) else list(endpoint)
    # a local subchannel pool per channel: otherwise gRPC shares one connection between them
    channels = [
        grpc.aio.insecure_channel(endpoints[i % len(endpoints)], options=[("grpc.use_local_subchannel_pool", 1)])
        for i in range(count)
    ]
    await asyncio.gather(*(asyncio.wait_for(ch.channel_ready(), 10) for ch in channels))
    return channels


Opener = Callable[[Sequence[str], int], Awaitable[list[grpc.aio.Channel]]]


async def drive(
    server: Target,
    workload: str,
    requests: list[bytes],
    clients: int,
    channels: int,
    warmup: float,
    seconds: float,
    opener: Opener | None = None,
    rate: float | None = None,
    value_size: int = 256,
) -> Result:
    """Runs ``clients`` closed-loop clients for warmup + seconds; measures the last ``seconds``.

    Client ``i`` uses channel ``i % channels``; channel ``j`` goes to endpoint ``j % len(endpoints)``
    (or wherever ``opener``, given the endpoints and a count, puts its channels). With ``rate``,
    the clients together offer that many requests per second: each sends one every
    ``clients / rate`` seconds from a random phase (and at once if it is behind), so servers can be
    compared at the same load, below what any of them saturates at. ``txn`` ignores ``requests``
    and runs compare-and-swap loops (``cas_request``) of ``value_size`` byte values, one key per
    client, and cannot be paced (``rate`` raises ``ValueError``).
    """
    if workload == "txn" and rate:
        raise ValueError("the txn workload is closed-loop only")
    chans = await (opener or open_channels)(server.endpoints, min(channels, clients))
    try:
        calls = [ch.unary_unary(METHODS[workload]) for ch in chans]  # bytes in, bytes out
        n = max(1, len(requests))
        step = _stride(n)
        rng = random.Random(clients)
        offsets = [rng.randrange(n) for _ in range(clients)]
        now = time.perf_counter()
        start, end = now + warmup, now + warmup + seconds
        cpu: list[tuple[list[float], float, float]] = []

        async def probe() -> None:
            await asyncio.sleep(max(0.0, start - time.perf_counter()))
            cpu.append((server.member_cpu_seconds(), time.process_time(), machine_busy_seconds()))
            await asyncio.sleep(max(0.0, end - time.perf_counter()))
            cpu.append((server.member_cpu_seconds(), time.process_time(), machine_busy_seconds()))

        interval = clients / rate if rate else 0.0
        phases = [rng.random() * interval for _ in range(clients)]

        async def cas_client(i: int) -> tuple[list[float], int, int]:
            call = calls[i % len(calls)]
            k = cas_key(i)
            latencies: list[float] = []
            record = latencies.append
            perf = time.perf_counter
            errors = failed = 0
            revision = 0
            while True:
                request = cas_request(k, revision, value)
                t0 = perf()
                if t0 >= end:
                    return latencies, errors, failed
                try:
                    raw = await call(request)
                except grpc.aio.AioRpcError:
                    if t0 >= start:
                        errors += 1
                    continue
                t1 = perf()
                succeeded, revision = cas_outcome(raw)
                if start <= t1 < end:
                    record(t1 - t0)
                    if not succeeded:
                        failed += 1

        value = random.Random(clients).randbytes(value_size)

        async def client(i: int) -> tuple[list[float], int, int]:
            call = calls[i % len(calls)]
            k = offsets[i]
            latencies: list[float] = []
            record = latencies.append
            perf = time.perf_counter
            errors = 0
            due = now + phases[i]
            while True:
                if interval:
                    wait = due - perf()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    due += interval
                t0 = perf()
                if t0 >= end:
                    return latencies, errors, 0
                try:
                    await call(requests[k])
                except grpc.aio.AioRpcError:
                    if t0 >= start:
                        errors += 1
                else:
                    t1 = perf()
                    if start <= t1 < end:
                        record(t1 - t0)
                k += step
                if k >= n:
                    k -= n

        probing = asyncio.ensure_future(probe())
        loop = cas_client if workload == "txn" else client
        outcomes = await asyncio.gather(*(loop(i) for i in range(clients)))
        await probing
    finally:
        await asyncio.gather(*(ch.close() for ch in chans))
    latencies = sorted(x for lat, _, _ in outcomes for x in lat)
    errors = sum(e for _, e, _ in outcomes)
    (members0, client0, busy0), (members1, client1, busy1) = cpu
    member_cpu = [b - a for a, b in zip(members0, members1, strict=True)]
    server_cpu = sum(member_cpu)
    ms = 1000.0
    return Result(
        workload=workload,
        server=server.kind,
        clients=clients,
        seconds=seconds,
        ops=len(latencies),
        errors=errors,
        ops_per_s=len(latencies) / seconds,
        p50_ms=percentile(latencies, 0.50) * ms,
        p99_ms=percentile(latencies, 0.99) * ms,
        mean_ms=(sum(latencies) / len(latencies) * ms) if latencies else math.nan,
        max_ms=(latencies[-1] * ms) if latencies else math.nan,
        server_cpu_s=server_cpu,
        client_cpu_s=client1 - client0,
        other_cpu_s=max(0.0, (busy1 - busy0) - server_cpu - (client1 - client0)),
        members=len(member_cpu),
        member_cpu_s=member_cpu,
        cas_failed=sum(f for _, _, f in outcomes),
    )


async def populate(server: Target, cfg: Config) -> None:
    """Writes every key once (in txns of up to 128 puts, under the request size limit)."""
    value = random.Random(cfg.seed).randbytes(cfg.value_size)
    per_txn = max(1, min(128, 1_000_000 // (cfg.value_size + 64)))
    (chan,) = await open_channels(server.endpoints[0], 1)
    try:
        txn = chan.unary_unary(
            "/etcdserverpb.KV/Txn",
            request_serializer=pb.TxnRequest.SerializeToString,
            response_deserializer=pb.TxnResponse.FromString,
        )
        for first in range(0, cfg.keys, per_txn):
            ops = [
                pb.RequestOp(request_put=pb.PutRequest(key=key(i), value=value))
                for i in range(first, min(first + per_txn, cfg.keys))
            ]
            await txn(pb.TxnRequest(success=ops), timeout=30)
    finally:
        await chan.close()


async def bench_all(servers: Sequence[Target], cfg: Config, log: bool = True) -> list[Result]:
    """Each workload on each server in turn, so a slow drift of the machine's load hits both alike."""
    results = []
    plan = [(w, clients, cfg.seconds) for w in cfg.workloads for clients in cfg.clients]
    if cfg.single_seconds > 0:
        plan.append((SINGLE, 1, cfg.single_seconds))
    populated = False
    for rnd in range(cfg.rounds):
        for workload, clients, seconds in plan:
            if workload in ("range", "srange") and not populated:
                await asyncio.gather(*(populate(server, cfg) for server in servers))
                populated = True
            requests = encoded_requests(workload, cfg)
            for server in servers:
                result = await drive(
                    server,
                    workload,
                    requests,
                    clients,
                    cfg.channels,
                    cfg.warmup,
                    seconds,
                    value_size=cfg.value_size,
                )
                result.round = rnd
                if log:
                    failed = f"  cas failed {result.cas_failed}" if workload == "txn" else ""
                    print(
                        f"  {server.kind:<6} {TITLES[workload]:<21} {clients:>4} clients "
                        f"{result.ops_per_s:>9,.0f} ops/s  "
                        f"p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms  errors {result.errors}{failed}  "
                        f"other cpu {100 * result.other_cpu_s / result.seconds:.0f}%",
                        file=sys.stderr,
                        flush=True,
                    )
                results.append(result)
    return results


def quietest(results: list[Result]) -> list[Result]:
    """Per workload, client count and server, the round in which the rest of the machine used the least CPU."""
    best: dict[tuple[str, int, str], Result] = {}
    for r in results:
        key = (r.workload, r.clients, r.server)
        if key not in best or r.other_cpu_s < best[key].other_cpu_s:
            best[key] = r
    return list(best.values())  # in the order of the plan (dicts keep the first insertion's place)


def run(cfg: Config, workdir: Path, log: bool = True) -> tuple[list[Result], dict[str, str]]:
    """Starts every server (idle ones cost well under 1% of a core), then runs the workloads."""
    results, versions, _ = run_with_topology(cfg, workdir, log)
    return results, versions


def run_with_topology(
    cfg: Config, workdir: Path, log: bool = True
) -> tuple[list[Result], dict[str, str], dict[str, dict[str, object]]]:
    """``run``, also returning per server its members' endpoints (leader first) and the leader's name."""
    with contextlib.ExitStack() as stack:
        servers: list[Server | Cluster] = []
        versions: dict[str, str] = {}
        topology: dict[str, dict[str, object]] = {}
        for kind in cfg.servers:
            server: Server | Cluster
            if cfg.members == 1:
                server = Server(kind, workdir / kind)
            else:
                server = Cluster(kind, workdir / kind, size=cfg.members)
            versions[kind] = server.version()
            if log:
                what = "" if cfg.members == 1 else f", {cfg.members} members"
                print(f"starting {kind} ({versions[kind]}{what}) ...", file=sys.stderr, flush=True)
            servers.append(stack.enter_context(server))
            topology[kind] = {
                "members": cfg.members,
                "endpoints": server.endpoints,
                "leader": server.leader_name if isinstance(server, Cluster) else server.name,
            }
            if log and isinstance(server, Cluster):
                print(f"  leader {server.leader_name}; endpoints {', '.join(server.endpoints)}", file=sys.stderr)
        return uvloop.run(bench_all(servers, cfg, log)), versions, topology


# ---- reporting ----


def fmt(x: float, spec: str) -> str:
    """A table cell: "-" for a missing value."""
    return "-" if x is None or math.isnan(x) else format(x, spec)


def rows(results: list[Result]) -> list[tuple[str, int]]:
    """The table's rows: (workload, clients) in the order of the plan."""
    return list(dict.fromkeys((r.workload, r.clients) for r in results))


def table(results: list[Result], cfg: Config) -> str:
    by = {(r.workload, r.clients, r.server): r for r in results}
    servers = [s for s in cfg.servers if any(r.server == s for r in results)]
    head = f"{'workload':<21} {'clients':>7}"
    for s in servers:
        head += f" | {s + ' ops/s':>13} {'p50 ms':>7} {'p99 ms':>7} {'cpu':>5}"
    ratio = "raftkv" in servers and "etcd" in servers
    if ratio:
        head += f" | {'raftkv/etcd: ops/s':>18} {'p50':>5} {'p99':>5}"
    lines = [head, "-" * len(head)]
    for w, clients in rows(results):
        line = f"{TITLES[w]:<21} {clients:>7}"
        for s in servers:
            r = by.get((w, clients, s))
            if r is None:
                line += f" | {'-':>13} {'-':>7} {'-':>7} {'-':>5}"
                continue
            cpu = f"{100 * r.server_cpu_s / r.seconds:.0f}%"
            line += f" | {fmt(r.ops_per_s, ',.0f'):>13} {fmt(r.p50_ms, '.2f'):>7} {fmt(r.p99_ms, '.2f'):>7} {cpu:>5}"
        if ratio:
            a, b = by.get((w, clients, "raftkv")), by.get((w, clients, "etcd"))
            if a and b and b.ops_per_s and b.p50_ms and b.p99_ms:
                line += f" | {a.ops_per_s / b.ops_per_s:>18.2f} {a.p50_ms / b.p50_ms:>5.2f} {a.p99_ms / b.p99_ms:>5.2f}"
        lines.append(line)
    errors = sum(r.errors for r in results)
    swaps = [r for r in results if r.workload == "txn"]
    cas = ""
    if swaps:
        cas = "; compare-and-swap: " + ", ".join(
            f"{r.server} {r.clients} clients {r.ops - r.cas_failed:,} swapped, {r.cas_failed:,} failed" for r in swaps
        )
    others = [100 * r.other_cpu_s / r.seconds for r in results]
    rounds = "" if cfg.rounds == 1 else f"; each row the quietest of {cfg.rounds} rounds"
    if cfg.members == 1:
        topology, whose = "single members", "the server's CPU use"
    else:
        topology = f"{cfg.members}-member clusters, channels round-robin over the members, leader first"
        whose = f"the server's CPU use summed over its {cfg.members} member processes"
    lines.append(
        f"({topology}; {','.join(map(str, cfg.clients))} clients over {cfg.channels} channels, "
        f"{cfg.value_size}-byte values, "
        f"{cfg.keys:,} keys, {cfg.seconds:g} s per workload after {cfg.warmup:g} s of warm-up{rounds}; cpu = {whose}, "
        f"100% = one core; {errors} errors; other processes on the machine used {sum(others) / len(others):.0f}% "
        f"on average, at most {max(others):.0f}%{cas})"
    )
    return "\n".join(lines)


def row_ratios(results: list[Result]) -> list[dict[str, object]]:
    """raftkv/etcd per row (workload and client count): ops/s, p50 and p99."""
    by = {(r.workload, r.clients, r.server): r for r in results}
    out: list[dict[str, object]] = []
    for w, clients in rows(results):
        a, b = by.get((w, clients, "raftkv")), by.get((w, clients, "etcd"))
        if a and b and b.ops_per_s:
            out.append(
                {
                    "workload": w,
                    "clients": clients,
                    "ops_per_s": a.ops_per_s / b.ops_per_s,
                    "p50_ms": a.p50_ms / b.p50_ms if b.p50_ms else math.nan,
                    "p99_ms": a.p99_ms / b.p99_ms if b.p99_ms else math.nan,
                }
            )
    return out


def ratios(results: list[Result]) -> dict[str, dict[str, float]]:
    by = {(r.workload, r.server): r for r in results}
    out = {}
    for w in dict.fromkeys(r.workload for r in results):
        a, b = by.get((w, "raftkv")), by.get((w, "etcd"))
        if a and b and b.ops_per_s:
            out[w] = {
                "ops_per_s": a.ops_per_s / b.ops_per_s,
                "p50_ms": a.p50_ms / b.p50_ms if b.p50_ms else math.nan,
                "p99_ms": a.p99_ms / b.p99_ms if b.p99_ms else math.nan,
            }
    return out


def machine() -> dict[str, object]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
    }


def document(
    cfg: Config,
    results: list[Result],
    versions: dict[str, str],
    argv: list[str],
    topology: dict[str, dict[str, object]] | None = None,
) -> dict[str, object]:
    """The JSON document; with several rounds, ``results`` holds the quietest and ``all_results`` every one."""
    reported = quietest(results)
    doc: dict[str, object] = {
        "benchmark": "kv",
        "date": utc_now(),
        "command": "python -m bench.kv " + " ".join(argv),
        "machine": machine(),
        "config": asdict(cfg),
        "servers": versions,
        "results": [asdict(r) for r in reported],
        "ratios": row_ratios(reported),
    }
    if len(reported) != len(results):
        doc["all_results"] = [asdict(r) for r in results]
    if topology is not None:
        doc["topology"] = topology
    return doc


def parse_args(argv: list[str]) -> tuple[Config, Path]:
    p = argparse.ArgumentParser(prog="python -m bench.kv", description=__doc__.split("\n\n")[0])
    d = Config()
    p.add_argument("--seconds", type=float, default=d.seconds, help="measured seconds per workload")
    p.add_argument("--warmup", type=float, default=d.warmup, help="warm-up seconds before each measurement")
    p.add_argument(
        "--clients",
        default=",".join(map(str, d.clients)),
        help="concurrent requests in flight; comma-separated (64,256) for a row per count",
    )
    p.add_argument(
        "--channels",
        type=int,
        default=None,
        help=f"gRPC connections the clients share (default {d.channels}, or 2 per member with several members)",
    )
    p.add_argument("--value-size", type=int, default=d.value_size, help="bytes per put value")
    p.add_argument("--keys", type=int, default=d.keys, help="size of the key space")
    p.add_argument("--workloads", default=",".join(d.workloads), help=f"comma-separated, of {', '.join(WORKLOADS)}")
    p.add_argument(
        "--single-seconds",
        type=float,
        default=None,
        help="measured seconds of the single-client put row (default: --seconds; 0 skips it)",
    )
    p.add_argument("--servers", default=",".join(d.servers), help="comma-separated, of raftkv, etcd")
    p.add_argument(
        "--members",
        type=int,
        choices=(1, 3),
        default=d.members,
        help="members per server: 1 (default) or a three-member cluster",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=d.rounds,
        help="run the whole plan this many times; each row shows the round the rest of the machine was quietest",
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
    try:
        clients = [int(x) for x in a.clients.split(",") if x]
    except ValueError:
        p.error("--clients takes comma-separated integers")
    if not clients or len(set(clients)) != len(clients):
        p.error("--clients needs at least one count, each once")
    if a.channels is None:
        a.channels = d.channels if a.members == 1 else 2 * a.members
    if a.rounds < 1:
        p.error("--rounds must be positive")
    if min(clients) < 1 or a.channels < 1 or a.keys < 1 or a.seconds <= 0 or a.warmup < 0 or a.value_size < 0:
        p.error("--clients, --channels, --keys and --seconds must be positive, --warmup and --value-size not negative")
    cfg = Config(
        seconds=a.seconds,
        warmup=a.warmup,
        clients=clients,
        channels=a.channels,
        value_size=a.value_size,
        keys=a.keys,
        workloads=workloads,
        single_seconds=a.seconds if a.single_seconds is None else a.single_seconds,
        servers=servers,
        members=a.members,
        rounds=a.rounds,
    )
    return cfg, a.results_dir


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cfg, results_dir = parse_args(argv)
    exit_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="raftkv-bench-") as tmp:
        results, versions, topology = run_with_topology(cfg, Path(tmp))
    doc = document(cfg, results, versions, argv, topology)
    path = write_results(results_dir, f"kv-{members_tag(cfg.members)}", doc)
    print()
    print(table(quietest(results), cfg))
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
