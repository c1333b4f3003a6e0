"""Ways to serve etcd's ``KV/Range`` from Python, with nothing behind them, measured alike.

    python -m bench.serving                                   # every option, about 90 s
    python -m bench.serving --options aio-uvloop,aio-generic --seconds 5
    python -m bench.serving --pythons .venv/bin/python,/tmp/grpc185-venv/bin/python   # grpcio versions

Each option is a server process (or several) that answers ``/etcdserverpb.KV/Range`` with one
fixed, small ``RangeResponse`` (a header and one 256-byte key-value, as raftkv answers a read of
one key) and does nothing else, so what is measured is the cost of the serving machinery alone:
the ceiling a member's client front end cannot pass, whatever raftkv does behind it.

Options (``NAME`` or ``NAME-xN`` for N processes sharing one port with ``SO_REUSEPORT``):

- ``aio``: ``grpc.aio`` server on the default asyncio event loop, the generated servicer (the
  request is decoded and the response message encoded by gRPC's protobuf serializers);
- ``aio-uvloop``: the same on uvloop (what raftkv runs today);
- ``aio-generic``: ``grpc.aio`` on uvloop with a generic handler
  (``grpc.method_handlers_generic_handler``) taking and returning raw bytes: the request is not
  decoded, the response is pre-serialized bytes;
- ``aio-generic-decode``: as ``aio-generic``, but the handler decodes the request
  (``RangeRequest.FromString``), as a server must to know which key to read;
- ``aio-generic-default``: ``aio-generic`` on the default asyncio loop;
- ``frontend``: raftkv's own front end (``frontend``: HTTP/2 and gRPC on asyncio Protocols, what
  members serve with) on uvloop; the handler decodes the request and encodes the response message,
  as a member's serializable Range does; ``frontend-default`` is the same on the default loop;
- ``sync-N``: the synchronous ``grpc.server`` with a pool of N threads, generated servicer;
- ``sync-generic-N``: the synchronous server with the raw-bytes generic handler;
- ``...+gc``: ``gc.freeze()`` after start-up and a generation-0 threshold of 50,000 instead of 700
  (every RPC allocates a few dozen objects, so the default runs a young collection every few RPCs);
- ``...+tput``: the channel argument ``grpc.optimization_target=throughput`` (default ``blend``);
- ``...-xN``, e.g. ``aio-generic-x2``: N processes of that option on one port with
  ``grpc.so_reuseport`` (the kernel spreads connections over them), which would let a member use
  both cores for serializable reads. The load generator keeps opening connections until each
  process holds the same number of them (it asks each connection which process answers), as many
  clients would spread them on average.

Every option is driven by ``bench.kv``'s load generator (its serializable-range workload:
``--clients`` closed-loop clients, requests pre-encoded, responses not decoded) for ``--warmup``
then ``--seconds``, one option at a time. ``--pythons`` runs the server processes with other
interpreters (e.g. a throwaway venv with another grpcio; the repository is put on its
``PYTHONPATH``), each option on each interpreter in turn, while the load generator stays in this
process, so only the server's grpcio differs. ``--rounds`` repeats the whole plan and reports,
per option and grpcio, the round in which the rest of the machine used the least CPU (as
``bench.kv --rounds``); the JSON keeps every round. ``--rate R`` paces the clients to offer R
requests/s in all, below every option's ceiling, so each server handles the same load and its CPU
per request is compared like for like (closed-loop saturation also measures how well a server
batches when it falls behind, and is more at the mercy of whatever else runs on the machine).

Prints ops/s, p50/p99 latency, server CPU use and server and client CPU per request, relative to
``aio-uvloop``, and writes ``bench/results/serving-<UTC timestamp>.json``. Nothing is asserted.

    python -m bench.serving serve --option aio-generic --port 2379   # one server process (internal)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import select
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc

from bench.kv import Config, Result, drive, encoded_requests, machine
from bench.procs import exit_on_sigterm, free_port, process_cpu_seconds
from bench.results import RESULTS_DIR, utc_now, write_results
from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc
from proto.mvccpb import kv_pb2

REPO = Path(__file__).resolve().parent.parent
BASELINE = "aio-uvloop"  # how raftkv serves today
DEFAULT_OPTIONS = (
    "frontend",
    "aio",
    "aio-uvloop",
    "aio-generic",
    "aio-generic-decode",
    "sync-4",
    "sync-16",
    "sync-generic-16",
    "aio-generic-x2",
)
BASES = ("aio", "aio-uvloop", "aio-generic", "aio-generic-decode", "aio-generic-default")
INFO_METHOD = "/bench.Serving/Info"
_OPTION = re.compile(
    r"^(?P<base>aio(?:-uvloop|-generic(?:-decode|-default)?)?|sync(?:-generic)?-(?P<threads>\d+)|frontend(?:-default)?)"
    r"(?P<mods>(?:\+(?:gc|tput))*)(?:-x(?P<procs>\d+))?$"
)

# What a member answers to a serializable Range of one key: a header and one 256-byte value.
RESPONSE = pb.RangeResponse(
    header=pb.ResponseHeader(cluster_id=0x6C2B9E3A1F0D4E57, member_id=0x8E9E05C52164694D, revision=10_001, raft_term=2),
    kvs=[
        kv_pb2.KeyValue(
            key=b"bench/key/00004242", value=bytes(range(256)), create_revision=4_243, mod_revision=4_243, version=1
        )
    ],
    count=1,
)
RESPONSE_BYTES = RESPONSE.SerializeToString()


# ---- the server side: one process ----


@dataclass(frozen=True)
class Option:
    name: str
    base: str  # the option without its modifiers and -xN suffix
    processes: int
    threads: int  # sync servers: thread pool size; 0 for grpc.aio
    gc: bool = False  # +gc: gc.freeze() after start-up and a higher generation-0 threshold
    tput: bool = False  # +tput: the channel argument grpc.optimization_target=throughput

    @property
    def server_name(self) -> str:
        """What one server process is given: the option without its -xN suffix."""
        return self.base + ("+gc" if self.gc else "") + ("+tput" if self.tput else "")

    @property
    def sync(self) -> bool:
        return self.base.startswith("sync")

    @property
    def generic(self) -> bool:
        return "generic" in self.base

    @property
    def frontend(self) -> bool:
        return self.base.startswith("frontend")

    @property
    def uvloop(self) -> bool:
        return self.base not in ("aio", "aio-generic-default", "frontend-default") and not self.sync


def parse_option(name: str) -> Option:
    m = _OPTION.match(name)
    if m is None:
        raise ValueError(f"unknown serving option {name!r}")
    base, mods = m.group("base"), m.group("mods").split("+")
    processes = int(m.group("procs") or 1)
    threads = int(m.group("threads") or 0)
    if processes < 1 or (base.startswith("sync") and threads < 1):
        raise ValueError(f"bad serving option {name!r}")
    return Option(name=name, base=base, processes=processes, threads=threads, gc="gc" in mods, tput="tput" in mods)


def server_options(option: Option, reuseport: bool) -> list[tuple[str, int | str]]:
    """raftkv's client-facing server options (kvstore.server.app), except for SO_REUSEPORT."""
    tput: list[tuple[str, int | str]] = [("grpc.optimization_target", "throughput")] if option.tput else []
    return [
        *tput,
        ("grpc.max_receive_message_length", 2 * (1536 * 1024 + 512 * 1024)),
        ("grpc.max_send_message_length", 2**31 - 1),
        ("grpc.max_concurrent_streams", 2**31 - 1),
        ("grpc.so_reuseport", 1 if reuseport else 0),
        ("grpc.http2.min_ping_interval_without_data_ms", 5000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


def _info() -> bytes:
    return json.dumps({"pid": os.getpid(), "grpc": grpc.__version__}).encode()


class SyncServicer(rpc_pb2_grpc.KVServicer):
    def Range(self, request: pb.RangeRequest, context: grpc.ServicerContext) -> pb.RangeResponse:
        return RESPONSE


class AioServicer(rpc_pb2_grpc.KVServicer):
    async def Range(self, request: pb.RangeRequest, context: grpc.aio.ServicerContext) -> pb.RangeResponse:
        return RESPONSE


def _sync_range_raw(request: bytes, context: grpc.ServicerContext) -> bytes:
    return RESPONSE_BYTES


async def _aio_range_raw(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return RESPONSE_BYTES


async def _aio_range_decode(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    pb.RangeRequest.FromString(request)
    return RESPONSE_BYTES


def _sync_info(request: bytes, context: grpc.ServicerContext) -> bytes:
    return _info()


async def _aio_info(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return _info()


def _generic(service: str, method: str, handler: Callable[..., object]) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(service, {method: grpc.unary_unary_rpc_method_handler(handler)})


def serve_sync(option: Option, port: int, reuseport: bool) -> None:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=option.threads), options=server_options(option, reuseport)
    )
    if option.generic:
        server.add_generic_rpc_handlers((_generic("etcdserverpb.KV", "Range", _sync_range_raw),))
    else:
        rpc_pb2_grpc.add_KVServicer_to_server(SyncServicer(), server)
    server.add_generic_rpc_handlers((_generic("bench.Serving", "Info", _sync_info),))
    if not server.add_insecure_port(f"127.0.0.1:{port}"):
        raise SystemExit(f"cannot listen on 127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


async def serve_aio(option: Option, port: int, reuseport: bool) -> None:
    server = grpc.aio.server(options=server_options(option, reuseport))
    if option.base == "aio-generic-decode":
        server.add_generic_rpc_handlers((_generic("etcdserverpb.KV", "Range", _aio_range_decode),))
    elif option.generic:
        server.add_generic_rpc_handlers((_generic("etcdserverpb.KV", "Range", _aio_range_raw),))
    else:
        rpc_pb2_grpc.add_KVServicer_to_server(AioServicer(), server)
    server.add_generic_rpc_handlers((_generic("bench.Serving", "Info", _aio_info),))
    if not server.add_insecure_port(f"127.0.0.1:{port}"):
        raise SystemExit(f"cannot listen on 127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(0)


class _Raw(bytes):
    """Bytes answered as they are (the Info method's JSON)."""

    def SerializeToString(self) -> bytes:
        return bytes(self)


def _frontend_range(request: pb.RangeRequest, call: object) -> pb.RangeResponse:
    return RESPONSE


async def serve_frontend(port: int, reuseport: bool) -> None:
    from frontend.grpc import Kind, Method
    from frontend.server import FrontendServer
    from proto.wire import parser

    methods = {
        "/etcdserverpb.KV/Range": Method(Kind.UNARY, _frontend_range, parser(pb.RangeRequest)),
        INFO_METHOD: Method(Kind.UNARY, lambda request, call: _Raw(_info()), bytes),
    }
    server = FrontendServer(methods)
    await server.listen("127.0.0.1", port, reuse_port=reuseport)
    print("ready", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(0)


def serve(option: Option, port: int, reuseport: bool) -> None:
    if option.gc:
        gc.collect()
        gc.freeze()  # what start-up allocated is never scanned again
        gc.set_threshold(50_000, 20, 100)  # default 700, 10, 10: a young collection every 700 allocations
    if option.sync:
        serve_sync(option, port, reuseport)
    elif option.frontend:
        if option.uvloop:
            import uvloop

            uvloop.run(serve_frontend(port, reuseport))
        else:
            asyncio.run(serve_frontend(port, reuseport))
    elif option.uvloop:
        import uvloop

        uvloop.run(serve_aio(option, port, reuseport))
    else:
        asyncio.run(serve_aio(option, port, reuseport))


# ---- the driver side ----


class Servers:
    """The process(es) of one option on one interpreter; a ``bench.kv.Target`` for the load generator."""

    def __init__(self, option: Option, python: str, log_dir: Path) -> None:
        self.option = option
        self.python = python
        self.port = free_port()
        self.kind = option.name
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.grpc_version = ""

    @property
    def endpoints(self) -> list[str]:
        return [f"127.0.0.1:{self.port}"]

    def cpu_seconds(self) -> float:
        return sum(self.member_cpu_seconds())

    def member_cpu_seconds(self) -> list[float]:
        return [process_cpu_seconds(p.pid) for p in self.procs]

    def start(self, timeout: float = 20.0) -> Servers:
        reuseport = self.option.processes > 1
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        cmd = [self.python, "-m", "bench.serving", "serve", "--option", self.option.server_name]
        cmd += ["--port", str(self.port)]
        if reuseport:
            cmd.append("--reuseport")
        try:
            for i in range(self.option.processes):
                with open(self.log_dir / f"{self.option.name}-{self.port}-{i}.log", "ab") as log:
                    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, cwd=REPO, env=env)
                self.procs.append(proc)
                self._wait_ready(proc, timeout)
            self.grpc_version = self._ask_version()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            logs = "\n".join(p.read_text(errors="replace")[-2000:] for p in sorted(self.log_dir.glob("*.log")))
            raise RuntimeError(f"{self.option.name} server did not start ({self.python}):\n{logs}")

    def _ask_version(self) -> str:
        with grpc.insecure_channel(self.endpoints[0]) as channel:
            info = json.loads(channel.unary_unary(INFO_METHOD)(b"", timeout=5))
        return str(info["grpc"])

    async def open_balanced(self, endpoints: Sequence[str], count: int) -> list[grpc.aio.Channel]:
        """``count`` connections, as evenly spread over the server processes as ``count`` allows."""
        processes = len(self.procs)
        most = -(-count // processes)  # per process
        kept: dict[int, list[grpc.aio.Channel]] = {}
        tries = 0
        while sum(len(c) for c in kept.values()) < count:
            tries += 1
            channel = grpc.aio.insecure_channel(endpoints[0], options=[("grpc.use_local_subchannel_pool", 1)])
            pid = json.loads(await channel.unary_unary(INFO_METHOD)(b"", timeout=10, wait_for_ready=True))["pid"]
            if len(kept.get(pid, [])) < most or tries > 50 * count:
                kept.setdefault(pid, []).append(channel)
            else:
                await channel.close()
        return [c for chans in kept.values() for c in chans]

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.stdout is not None:
                p.stdout.close()
        self.procs = []


@dataclass
class Measurement:
    option: str
    python: str
    grpc: str
    processes: int
    round: int
    result: Result

    @property
    def server_us(self) -> float:
        r = self.result
        return 1e6 * r.server_cpu_s / r.ops if r.ops else float("nan")

    @property
    def client_us(self) -> float:
        r = self.result
        return 1e6 * r.client_cpu_s / r.ops if r.ops else float("nan")


async def measure(servers: Servers, cfg: Config, requests: list[bytes], rate: float | None) -> Result:
    opener = servers.open_balanced if servers.option.processes > 1 else None
    return await drive(
        servers, "srange", requests, cfg.clients[0], cfg.channels, cfg.warmup, cfg.seconds, opener=opener, rate=rate
    )


def run(
    options: list[Option],
    pythons: list[str],
    cfg: Config,
    rounds: int,
    rate: float | None = None,
    log: bool = True,
) -> list[Measurement]:
    import uvloop

    requests = encoded_requests("srange", cfg)
    out: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="raftkv-serving-") as tmp:
        for rnd in range(rounds):
            for option in options:
                for python in pythons:
                    servers = Servers(option, python, Path(tmp)).start()
                    try:
                        result = uvloop.run(measure(servers, cfg, requests, rate))
                    finally:
                        servers.stop()
                    m = Measurement(option.name, python, servers.grpc_version, option.processes, rnd, result)
                    out.append(m)
                    if log:
                        split = "/".join(f"{100 * c / result.seconds:.0f}%" for c in result.member_cpu_s)
                        print(
                            f"  {option.name:<20} grpcio {m.grpc:<7} {result.ops_per_s:>8,.0f} ops/s  "
                            f"p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  "
                            f"server {m.server_us:4.0f} µs/req (cpu {split})  client {m.client_us:4.0f} µs/req  "
                            f"errors {result.errors}",
                            file=sys.stderr,
                            flush=True,
                        )
    return out


# ---- reporting ----


@dataclass
class Row:
    option: str
    grpc: str
    processes: int
    ops_per_s: float
    p50_ms: float
    p99_ms: float
    server_cpu: float  # fraction of one core, summed over the processes
    server_us: float  # server CPU per request
    client_us: float
    other_cpu: float  # fraction of one core used by everything else
    errors: int
    rounds: int
    round: int  # the one reported
    server_us_median: float  # server CPU per request, median over every round


def summarize(ms: list[Measurement]) -> list[Row]:
    """Per (option, grpcio): the round in which the rest of the machine used the least CPU (as bench.kv)."""
    rows = []
    groups: dict[tuple[str, str], list[Measurement]] = {}
    for m in ms:
        groups.setdefault((m.option, m.grpc), []).append(m)
    for (option, version), g in groups.items():
        q = min(g, key=lambda m: m.result.other_cpu_s)
        r = q.result
        rows.append(
            Row(
                option=option,
                grpc=version,
                processes=q.processes,
                ops_per_s=r.ops_per_s,
                p50_ms=r.p50_ms,
                p99_ms=r.p99_ms,
                server_cpu=r.server_cpu_s / r.seconds,
                server_us=q.server_us,
                client_us=q.client_us,
                other_cpu=r.other_cpu_s / r.seconds,
                errors=r.errors,
                rounds=len(g),
                round=q.round,
                server_us_median=statistics.median(m.server_us for m in g),
            )
        )
    return rows


def table(rows: list[Row], cfg: Config, rate: float | None = None) -> str:
    versions = list(dict.fromkeys(r.grpc for r in rows))
    base = {r.grpc: r for r in rows if r.option == BASELINE}
    head = (
        f"{'option':<20} {'grpcio':<7} {'procs':>5} | {'ops/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'srv cpu':>7} "
        f"{'srv µs/req':>10} {'(median)':>8} {'cli µs/req':>10} | {'vs ' + BASELINE + ': ops/s':>21} {'srv µs/req':>10}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        b = base.get(r.grpc)
        rel = f"{r.ops_per_s / b.ops_per_s:>21.2f} {r.server_us / b.server_us:>10.2f}" if b else f"{'-':>21} {'-':>10}"
        lines.append(
            f"{r.option:<20} {r.grpc:<7} {r.processes:>5} | {r.ops_per_s:>7,.0f} {r.p50_ms:>7.2f} {r.p99_ms:>7.2f} "
            f"{100 * r.server_cpu:>6.0f}% {r.server_us:>10.0f} {r.server_us_median:>8.0f} {r.client_us:>10.0f} | {rel}"
        )
    if len(versions) > 1:
        first = versions[0]
        lines.append("")
        head = f"{'option':<20} | " + " | ".join(
            f"{'grpcio ' + v + ' / ' + first + ': ops/s':>30} {'srv µs/req':>10}" for v in versions[1:]
        )
        lines += [head, "-" * len(head)]
        by = {(r.option, r.grpc): r for r in rows}
        for option in dict.fromkeys(r.option for r in rows):
            a = by.get((option, first))
            cells = []
            for v in versions[1:]:
                r = by.get((option, v))
                if a and r:
                    cells.append(f"{r.ops_per_s / a.ops_per_s:>30.2f} {r.server_us / a.server_us:>10.2f}")
                else:
                    cells.append(f"{'-':>30} {'-':>10}")
            lines.append(f"{option:<20} | " + " | ".join(cells))
    others = [r.other_cpu for r in rows]
    lines.append(
        f"({cfg.clients[0]} clients over {cfg.channels} channels{f' offering {rate:,.0f} requests/s' if rate else ''}, "
        f"serializable Range of one key, a fixed 256-byte-value "
        f"response; {cfg.seconds:g} s per option after {cfg.warmup:g} s of warm-up; each row the quietest of "
        f"{rows[0].rounds} round(s), (median) = server µs/req over all rounds; "
        f"srv cpu = the server processes' CPU use, 100% = one core; "
        f"{sum(r.errors for r in rows)} errors; "
        f"other processes on the machine used {100 * sum(others) / len(others):.0f}% on average, "
        f"at most {100 * max(others):.0f}%)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        p = argparse.ArgumentParser(prog="python -m bench.serving serve")
        p.add_argument("--option", required=True)
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--reuseport", action="store_true")
        a = p.parse_args(argv[1:])
        serve(parse_option(a.option), a.port, a.reuseport)
        return 0
    p = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__.split("\n\n")[0])
    d = Config()
    p.add_argument("--options", default=",".join(DEFAULT_OPTIONS), help="comma-separated serving options")
    p.add_argument("--pythons", default=sys.executable, help="comma-separated interpreters to run the servers with")
    p.add_argument("--seconds", type=float, default=d.seconds, help="measured seconds per option")
    p.add_argument("--warmup", type=float, default=d.warmup, help="warm-up seconds before each measurement")
    p.add_argument("--clients", type=int, default=d.clients[0], help="concurrent requests in flight")
    p.add_argument("--channels", type=int, default=d.channels, help="gRPC connections the clients share")
    p.add_argument("--keys", type=int, default=d.keys, help="distinct requests (keys) the clients cycle through")
    p.add_argument("--rounds", type=int, default=1, help="repeat the plan; report each option's quietest round")
    p.add_argument(
        "--rate",
        type=float,
        default=None,
        help="offer this many requests/s in all (paced clients) instead of as many as the server answers",
    )
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON results go")
    a = p.parse_args(argv)
    try:
        options = [parse_option(x) for x in a.options.split(",") if x]
    except ValueError as exc:
        p.error(str(exc))
    pythons = [x for x in a.pythons.split(",") if x]
    if not options or not pythons or a.rounds < 1 or a.clients < 1 or a.channels < 1 or a.seconds <= 0:
        p.error("need options, pythons, and positive --rounds, --clients, --channels, --seconds")
    exit_on_sigterm()
    cfg = Config(seconds=a.seconds, warmup=a.warmup, clients=[a.clients], channels=a.channels, keys=a.keys)
    if a.rate is not None and a.rate <= 0:
        p.error("--rate must be positive")
    ms = run(options, pythons, cfg, a.rounds, a.rate)
    rows = summarize(ms)
    doc = {
        "benchmark": "serving",
        "date": utc_now(),
        "command": "python -m bench.serving " + " ".join(argv),
        "machine": machine(),
        "config": {**asdict(cfg), "rounds": a.rounds, "pythons": pythons, "rate": a.rate},
        "response_bytes": len(RESPONSE_BYTES),
        "summary": [asdict(r) for r in rows],
        "measurements": [{**asdict(m), "server_us_per_req": m.server_us, "client_us_per_req": m.client_us} for m in ms],
    }
    path = write_results(a.results_dir, "serving-", doc)
    print()
    print(table(rows, cfg, a.rate))
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
