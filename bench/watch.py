"""Watch event latency and fan-out of raftkv and of real etcd, measured alike in one run.

    python -m bench.watch --rounds 300 --fanout 1,100,1000 --streams 10
    python -m bench.watch --members 3     # three-member clusters of each

For each server (a fresh raftkv and a fresh etcd, single members or with ``--members 3``
three-member clusters, on free loopback ports, measured one after the other so they never share
the CPU while measured):

- ``latency``: one watcher on one key; a single client puts to that key, waits for the event,
  and puts again. Put-to-event latency: from sending the put until its event arrives.
- ``fanout-N``: N watchers on one prefix, spread over ``--streams`` Watch streams (one gRPC
  connection each); one put at a time into the prefix, and the next only once all N watchers got
  its event. Per round: time until the first and until the last watcher had it; the rate is
  events delivered per second while measuring.

The client costs the shared CPU as little as possible: watch responses are not decoded (a round's
events are counted as messages: every message after the put of a round is that round's event),
requests are encoded once, and each stream is read by one coroutine.

Connections: one for the puts, then one per Watch stream, round-robin over the server's
endpoints (``bench.kv.open_channels``). A cluster's endpoints are leader first, so the puts (the
events' writes) go to the leader and the streams spread over the members starting with a
follower: the latency watcher watches on a follower (the event reaches it after the entry is
committed and that follower applied it), and the fan-out streams go to the members in turn
(with 10 streams: 4 on the first follower, 3 on the other, 3 on the leader). A cluster's CPU is
the sum over its members (``member_cpu_s`` has each, leader first).

Prints a table (latency percentiles, delivered events/s, the server's CPU use, raftkv/etcd ratios)
and writes the results to ``bench/results/watch-<UTC timestamp>.json``. Nothing here asserts a
timing. Needs the Watch service wired into raftkv's member.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
import uvloop

from bench.kv import fmt, machine, machine_busy_seconds, open_channels, percentile
from bench.procs import KINDS, Cluster, Server, exit_on_sigterm, started_targets
from bench.results import RESULTS_DIR, members_tag, utc_now, write_results
from proto.etcdserverpb import rpc_pb2 as pb

WATCH = "/etcdserverpb.Watch/Watch"
PUT = "/etcdserverpb.KV/Put"


@dataclass
class Config:
    rounds: int = 300
    warmup_rounds: int = 30
    fanout: list[int] = field(default_factory=lambda: [1, 100, 1000])
    streams: int = 10
    value_size: int = 256
    latency: bool = True
    servers: list[str] = field(default_factory=lambda: list(KINDS))
    members: int = 1  # per server: 1, or a cluster of 3


@dataclass
class Result:
    workload: str
    server: str
    watchers: int
    streams: int
    rounds: int
    seconds: float
    first_p50_ms: float  # put sent -> first watcher's event
    first_p99_ms: float
    last_p50_ms: float  # put sent -> last watcher's event
    last_p99_ms: float
    events_per_s: float  # events delivered per second of measurement
    server_cpu_s: float
    client_cpu_s: float
    other_cpu_s: float
    members: int = 1
    member_cpu_s: list[float] = field(default_factory=list)  # server_cpu_s per member (leader first)

    @property
    def server_cpu_us_per_event(self) -> float:
        return self.server_cpu_s / max(1, self.rounds * self.watchers) * 1e6


class Streams:
    """N watchers over S Watch streams; counts the messages each stream receives (undecoded)."""

    def __init__(self, channels: list[grpc.aio.Channel], watchers: int, key: bytes, range_end: bytes) -> None:
        self.channels = channels
        self.watchers = watchers
        per = [watchers // len(channels) + (1 if i < watchers % len(channels) else 0) for i in range(len(channels))]
        self.per_stream = [n for n in per if n]
        create = pb.WatchRequest(create_request=pb.WatchCreateRequest(key=key, range_end=range_end)).SerializeToString()
        self.received = 0
        self.target = 0
        self.first_at = 0.0
        self.done = asyncio.Event()
        self.calls = []
        for ch, n in zip(channels, self.per_stream, strict=False):
            call = ch.stream_stream(WATCH)(iter([create] * n))  # bytes in, bytes out
            self.calls.append(call)
        self.readers = [asyncio.ensure_future(self._read(call)) for call in self.calls]

    async def _read(self, call: grpc.aio.StreamStreamCall) -> None:
        perf = time.perf_counter
        while True:
            msg = await call.read()
            if msg is grpc.aio.EOF:
                return
            self.received += 1
            if self.received == 1 and self.target:
                self.first_at = perf()
            if self.received >= self.target:
                self.done.set()

    async def expect(self, n: int, timeout: float = 30.0) -> None:
        """Waits until n more messages arrived (counting from the last reset)."""
        self.target = n
        if self.received < n:
            await asyncio.wait_for(self.done.wait(), timeout)

    def reset(self) -> None:
        self.received = 0
        self.first_at = 0.0
        self.done.clear()

    async def close(self) -> None:
        for call in self.calls:
            call.cancel()
        for r in self.readers:
            r.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await r


async def measure(server: Server | Cluster, workload: str, watchers: int, cfg: Config) -> Result:
    streams = 1 if watchers == 1 else max(1, min(cfg.streams, watchers))
    prefix = b"bench/watch/%s/" % workload.encode()
    # channel 0 (the puts) to the first endpoint, a cluster's leader; the streams' round-robin after it
    chans = await open_channels(server.endpoints, streams + 1)
    try:
        put = chans[0].unary_unary(PUT)
        if watchers == 1 and workload == "latency":
            ws = Streams(chans[1:], 1, prefix + b"k", b"")
        else:
            ws = Streams(chans[1:], watchers, prefix, prefix[:-1] + b"0")
        await ws.expect(watchers)  # every created response
        value = b"v" * cfg.value_size
        requests = [
            pb.PutRequest(
                key=prefix + (b"k" if workload == "latency" else b"%06d" % (i % 1000)), value=value
            ).SerializeToString()
            for i in range(cfg.rounds + cfg.warmup_rounds)
        ]
        firsts: list[float] = []
        lasts: list[float] = []
        perf = time.perf_counter
        t_start = cpu0 = None
        for i, req in enumerate(requests):
            if i == cfg.warmup_rounds:
                t_start = perf()
                cpu0 = (server.member_cpu_seconds(), time.process_time(), machine_busy_seconds())
            ws.reset()
            t0 = perf()
            sent = asyncio.ensure_future(put(req, timeout=10))
            await ws.expect(watchers)
            t1 = perf()
            await sent
            if i >= cfg.warmup_rounds:
                firsts.append(ws.first_at - t0)
                lasts.append(t1 - t0)
        seconds = perf() - t_start  # type: ignore[operator]
        cpu1 = (server.member_cpu_seconds(), time.process_time(), machine_busy_seconds())
        await ws.close()
    finally:
        await asyncio.gather(*(ch.close() for ch in chans))
    firsts.sort()
    lasts.sort()
    (m0, c0, b0), (m1, c1, b1) = cpu0, cpu1  # type: ignore[misc]
    member_cpu = [b - a for a, b in zip(m0, m1, strict=True)]
    s0, s1 = 0.0, sum(member_cpu)
    ms = 1000.0
    return Result(
        workload=workload,
        server=server.kind,
        watchers=watchers,
        streams=streams,
        rounds=len(lasts),
        seconds=seconds,
        first_p50_ms=percentile(firsts, 0.5) * ms,
        first_p99_ms=percentile(firsts, 0.99) * ms,
        last_p50_ms=percentile(lasts, 0.5) * ms,
        last_p99_ms=percentile(lasts, 0.99) * ms,
        events_per_s=len(lasts) * watchers / seconds,
        server_cpu_s=s1 - s0,
        client_cpu_s=c1 - c0,
        other_cpu_s=max(0.0, (b1 - b0) - (s1 - s0) - (c1 - c0)),
        members=len(member_cpu),
        member_cpu_s=member_cpu,
    )


def plan(cfg: Config) -> list[tuple[str, int]]:
    out = [("latency", 1)] if cfg.latency else []
    out += [(f"fanout-{n}", n) for n in cfg.fanout]
    return out


async def bench_all(servers: list[Server | Cluster], cfg: Config, log: bool = True) -> list[Result]:
    results = []
    for workload, watchers in plan(cfg):
        for server in servers:
            r = await measure(server, workload, watchers, cfg)
            if log:
                print(
                    f"  {server.kind:<6} {workload:<12} last p50 {r.last_p50_ms:7.2f} ms  p99 {r.last_p99_ms:7.2f} ms  "
                    f"{r.events_per_s:>9,.0f} events/s",
                    file=sys.stderr,
                    flush=True,
                )
            results.append(r)
    return results


def run(cfg: Config, workdir: Path, log: bool = True) -> tuple[list[Result], dict[str, str]]:
    with started_targets(cfg.servers, workdir, cfg.members, log) as (servers, versions):
        return uvloop.run(bench_all(servers, cfg, log)), versions


# ---- reporting ----


def table(results: list[Result], cfg: Config) -> str:
    by = {(r.workload, r.server): r for r in results}
    servers = [s for s in cfg.servers if any(r.server == s for r in results)]
    head = f"{'workload':<13} {'watchers':>8}"
    for s in servers:
        head += f" | {s + ' p50 ms':>13} {'p99 ms':>7} {'events/s':>9} {'cpu':>5}"
    both = "raftkv" in servers and "etcd" in servers
    if both:
        head += f" | {'raftkv/etcd: p50':>16} {'p99':>5} {'events/s':>8}"
    lines = [head, "-" * len(head)]
    for workload, watchers in plan(cfg):
        line = f"{workload:<13} {watchers:>8}"
        for s in servers:
            r = by.get((workload, s))
            if r is None:
                line += f" | {'-':>13} {'-':>7} {'-':>9} {'-':>5}"
                continue
            cpu = f"{100 * r.server_cpu_s / r.seconds:.0f}%"
            line += (
                f" | {fmt(r.last_p50_ms, '.2f'):>13} {fmt(r.last_p99_ms, '.2f'):>7} "
                f"{fmt(r.events_per_s, ',.0f'):>9} {cpu:>5}"
            )
        if both:
            a, b = by.get((workload, "raftkv")), by.get((workload, "etcd"))
            if a and b and b.last_p50_ms and b.last_p99_ms and b.events_per_s:
                line += (
                    f" | {a.last_p50_ms / b.last_p50_ms:>16.2f} {a.last_p99_ms / b.last_p99_ms:>5.2f} "
                    f"{a.events_per_s / b.events_per_s:>8.2f}"
                )
        lines.append(line)
    topology = (
        "single members"
        if cfg.members == 1
        else f"{cfg.members}-member clusters, puts to the leader, streams round-robin over the members"
    )
    lines.append(
        f"({topology}; latency: put sent -> event received by the last watcher; one put in flight; "
        f"{cfg.rounds} rounds after "
        f"{cfg.warmup_rounds} of warm-up; watchers spread over up to {cfg.streams} streams; {cfg.value_size}-byte "
        "values; cpu = the server's CPU use while measuring, summed over its members, 100% = one core)"
    )
    return "\n".join(lines)


def ratios(results: list[Result]) -> dict[str, dict[str, float]]:
    by = {(r.workload, r.server): r for r in results}
    out = {}
    for w in dict.fromkeys(r.workload for r in results):
        a, b = by.get((w, "raftkv")), by.get((w, "etcd"))
        if a and b and b.last_p50_ms and b.last_p99_ms and b.events_per_s:
            out[w] = {
                "last_p50_ms": a.last_p50_ms / b.last_p50_ms,
                "last_p99_ms": a.last_p99_ms / b.last_p99_ms,
                "events_per_s": a.events_per_s / b.events_per_s,
                "server_cpu_per_event": a.server_cpu_us_per_event / max(b.server_cpu_us_per_event, 1e-9),
            }
    return out


def document(cfg: Config, results: list[Result], versions: dict[str, str], argv: list[str]) -> dict[str, object]:
    return {
        "benchmark": "watch",
        "date": utc_now(),
        "command": "python -m bench.watch " + " ".join(argv),
        "machine": machine(),
        "config": asdict(cfg),
        "servers": versions,
        "results": [{**asdict(r), "server_cpu_us_per_event": r.server_cpu_us_per_event} for r in results],
        "ratios": ratios(results),
    }


def parse_args(argv: list[str]) -> tuple[Config, Path]:
    p = argparse.ArgumentParser(prog="python -m bench.watch", description=__doc__.split("\n\n")[0])
    d = Config()
    p.add_argument("--rounds", type=int, default=d.rounds, help="measured puts per workload")
    p.add_argument("--warmup-rounds", type=int, default=d.warmup_rounds, help="puts before measuring")
    p.add_argument("--fanout", default=",".join(map(str, d.fanout)), help="comma-separated watcher counts")
    p.add_argument("--streams", type=int, default=d.streams, help="Watch streams the fan-out watchers share")
    p.add_argument("--value-size", type=int, default=d.value_size, help="bytes per put value")
    p.add_argument("--no-latency", action="store_true", help="skip the single-watcher latency workload")
    p.add_argument("--servers", default=",".join(d.servers), help="comma-separated, of raftkv, etcd")
    p.add_argument(
        "--members", type=int, choices=(1, 3), default=d.members, help="members per server: 1 (default) or 3"
    )
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON results go")
    a = p.parse_args(argv)
    servers = [s for s in a.servers.split(",") if s]
    for s in servers:
        if s not in KINDS:
            p.error(f"unknown server {s!r}")
    try:
        fanout = [int(x) for x in a.fanout.split(",") if x]
    except ValueError:
        p.error("--fanout takes comma-separated integers")
    if a.rounds < 1 or a.warmup_rounds < 0 or a.streams < 1 or a.value_size < 0 or any(n < 1 for n in fanout):
        p.error("--rounds, --streams and --fanout must be positive, --warmup-rounds and --value-size not negative")
    cfg = Config(
        rounds=a.rounds,
        warmup_rounds=a.warmup_rounds,
        fanout=fanout,
        streams=a.streams,
        value_size=a.value_size,
        latency=not a.no_latency,
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
    path = write_results(results_dir, f"watch-{members_tag(cfg.members)}", doc)
    print()
    print(table(results, cfg))
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
