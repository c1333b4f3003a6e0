"""Memory of raftkv and of real etcd members, at rest and holding many keys, measured alike in one run.

    python -m bench.memory                        # three-member clusters, 1,000,000 keys of 256 bytes
    python -m bench.memory --members 1 --keys 20000

For each server in turn (a fresh raftkv, then a fresh etcd: ``--members`` members on free loopback
ports, data in a temp dir, started by ``bench.procs``; one server at a time, each stopped before the
next starts, so neither's load or page cache pressure lands on the other's readings):

1. ``rest``: ``--settle`` seconds after every member agreed on a leader, each member's resident set
   (``VmRSS`` in ``/proc/<pid>/status``) and its peak so far (``VmHWM``);
2. load: ``--keys`` keys (``bench/mem/<8 digits>``) of ``--value-size`` random bytes each, written
   to the leader (the first endpoint) in Txns of ``--txn-ops`` puts (by default 128, etcd's default
   ``--max-txn-ops``, or fewer if the values are so large that a Txn would pass 1,000,000 bytes, as
   ``bench.kv``'s populate does; a Txn of 128 puts of 256 bytes is about 36 KiB, far under the
   1.5 MiB request limit), ``--in-flight`` Txns at a time; progress on stderr every few seconds; the time it took
   and keys/s are recorded;
3. a count of the keys (a linearizable count-only Range on the leader), which must find all of them;
4. ``loaded``: ``--settle`` seconds later, every member's ``VmRSS`` and ``VmHWM`` again (the peak
   now covers the load), and the space its data directory takes on disk (allocated blocks).

Every member holds every key (Raft replicates them), so followers are measured too; members are
listed leader first. Prints a table (per member: RSS and peak at rest and loaded, disk; per server:
the sums over members and the raftkv/etcd ratios) and writes the results to
``bench/results/memory-<UTC timestamp>.json`` (``memory-3members-...`` for clusters). Nothing here
asserts a size.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import uvloop

from bench.kv import machine, open_channels
from bench.procs import KINDS, Cluster, Server, exit_on_sigterm
from bench.results import RESULTS_DIR, members_tag, utc_now, write_results
from proto.etcdserverpb import rpc_pb2 as pb

MIB = 1024 * 1024
PREFIX = b"bench/mem/"
PROGRESS_EVERY = 5.0  # seconds between progress lines while loading
TXN_BYTES = 1_000_000  # the most a loading Txn carries: under both servers' 1.5 MiB request limit


@dataclass
class Config:
    keys: int = 1_000_000
    value_size: int = 256
    members: int = 3  # per server: 1, or a cluster of 3
    txn_ops: int = 128  # puts per Txn (etcd's default --max-txn-ops, fewer for large values)
    in_flight: int = 4  # Txns in flight while loading
    settle: float = 5.0  # seconds to wait before each reading
    servers: list[str] = field(default_factory=lambda: list(KINDS))
    seed: int = 1


@dataclass
class Reading:
    """One member's memory at one moment: bytes, from /proc/<pid>/status."""

    rss: int  # VmRSS
    peak: int  # VmHWM: the largest RSS so far


@dataclass
class Member:
    name: str
    role: str  # "leader" or "follower"
    pid: int
    rest: Reading
    loaded: Reading | None = None
    disk_bytes: int = 0  # blocks allocated under its data directory, once loaded


@dataclass
class Result:
    server: str
    keys: int
    value_size: int
    load_seconds: float
    keys_per_s: float
    keys_counted: int  # keys the count after the load found (must equal keys)
    members: list[Member] = field(default_factory=list)  # leader first

    def total(self, state: str, what: str) -> int:
        """Sum over the members of ``rest``/``loaded`` ``rss``/``peak``."""
        readings = [m.rest if state == "rest" else m.loaded for m in self.members]
        return sum(getattr(r, what) for r in readings if r is not None)


def reading(pid: int) -> Reading:
    """VmRSS and VmHWM of process ``pid`` (Linux /proc; the kernel reports them in kB)."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) * 1024
    return Reading(rss=values["VmRSS"], peak=values["VmHWM"])


def disk_bytes(path: Path) -> int:
    """Space allocated on disk for every file under ``path`` (sparse files count what they use)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # a file removed meanwhile (a compacted WAL segment)
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


def members_of(server: Server | Cluster) -> list[tuple[str, str, int, Path]]:
    """(name, role, pid, data dir) per member, leader first."""
    if isinstance(server, Server):
        return [(server.name, "leader", server.pid, server.data_dir)]
    order = [server.endpoints.index(e) for e in server.member_endpoints]  # member index -> place
    pids = server.pids
    out = [
        (name, "leader" if name == server.leader_name else "follower", pids[i], server.workdir / f"{name}.etcd")
        for i, name in enumerate(server.names)
    ]
    return [m for _, m in sorted(zip(order, out, strict=True), key=lambda pair: pair[0])]


def key(i: int) -> bytes:
    return PREFIX + b"%08d" % i


async def load(server: Server | Cluster, cfg: Config, log: bool = True) -> tuple[float, int]:
    """Writes cfg.keys keys to the leader in Txns; returns (seconds taken, keys then counted)."""
    rng = random.Random(cfg.seed)
    (chan,) = await open_channels(server.endpoints[0], 1)
    try:
        txn = chan.unary_unary(
            "/etcdserverpb.KV/Txn",
            request_serializer=pb.TxnRequest.SerializeToString,
            response_deserializer=pb.TxnResponse.FromString,
        )
        batches = iter(range(0, cfg.keys, cfg.txn_ops))
        written = 0
        t0 = time.perf_counter()
        next_report = t0 + PROGRESS_EVERY

        async def writer() -> None:
            nonlocal written, next_report
            for first in batches:
                last = min(first + cfg.txn_ops, cfg.keys)
                ops = [
                    pb.RequestOp(request_put=pb.PutRequest(key=key(i), value=rng.randbytes(cfg.value_size)))
                    for i in range(first, last)
                ]
                await txn(pb.TxnRequest(success=ops), timeout=60)
                written += last - first
                now = time.perf_counter()
                if log and now >= next_report:
                    next_report = now + PROGRESS_EVERY
                    leader = reading(members_of(server)[0][2])
                    print(
                        f"  {server.kind:<6} {written:>10,}/{cfg.keys:,} keys ({100 * written / cfg.keys:3.0f}%), "
                        f"{written / (now - t0):,.0f} keys/s, {now - t0:.0f} s; leader RSS {leader.rss / MIB:,.0f} MiB",
                        file=sys.stderr,
                        flush=True,
                    )

        await asyncio.gather(*(writer() for _ in range(max(1, cfg.in_flight))))
        seconds = time.perf_counter() - t0
        count = chan.unary_unary(
            "/etcdserverpb.KV/Range",
            request_serializer=pb.RangeRequest.SerializeToString,
            response_deserializer=pb.RangeResponse.FromString,
        )
        counted = await count(pb.RangeRequest(key=PREFIX, range_end=PREFIX[:-1] + b"0", count_only=True), timeout=120)
        return seconds, counted.count
    finally:
        await chan.close(None)


async def measure(server: Server | Cluster, cfg: Config, log: bool = True) -> Result:
    await asyncio.sleep(cfg.settle)
    members = [Member(name, role, pid, reading(pid)) for name, role, pid, _ in members_of(server)]
    if log:
        rest = ", ".join(f"{m.name} ({m.role}) {m.rest.rss / MIB:,.0f} MiB" for m in members)
        print(f"  {server.kind:<6} at rest: {rest}; loading {cfg.keys:,} keys ...", file=sys.stderr, flush=True)
    seconds, counted = await load(server, cfg, log)
    await asyncio.sleep(cfg.settle)
    dirs = {name: data_dir for name, _, _, data_dir in members_of(server)}
    for m in members:
        m.loaded = reading(m.pid)
        m.disk_bytes = disk_bytes(dirs[m.name])
    result = Result(
        server=server.kind,
        keys=cfg.keys,
        value_size=cfg.value_size,
        load_seconds=seconds,
        keys_per_s=cfg.keys / seconds if seconds > 0 else 0.0,
        keys_counted=counted,
        members=members,
    )
    if log:
        loaded = ", ".join(f"{m.name} {m.loaded.rss / MIB:,.0f} MiB" for m in members if m.loaded)
        print(
            f"  {server.kind:<6} loaded in {seconds:.1f} s ({result.keys_per_s:,.0f} keys/s), {counted:,} counted; "
            f"{loaded}",
            file=sys.stderr,
            flush=True,
        )
    return result


def run(cfg: Config, workdir: Path, log: bool = True) -> tuple[list[Result], dict[str, str]]:
    """One server at a time: start it, measure it, stop it (all in one event loop, as grpc.aio wants)."""
    return uvloop.run(run_all(cfg, workdir, log))


async def run_all(cfg: Config, workdir: Path, log: bool = True) -> tuple[list[Result], dict[str, str]]:
    results: list[Result] = []
    versions: dict[str, str] = {}
    for kind in cfg.servers:
        server: Server | Cluster = (
            Server(kind, workdir / kind) if cfg.members == 1 else Cluster(kind, workdir / kind, size=cfg.members)
        )
        versions[kind] = server.version()
        if log:
            what = "" if cfg.members == 1 else f", {cfg.members} members"
            print(f"starting {kind} ({versions[kind]}{what}) ...", file=sys.stderr, flush=True)
        with server:  # starting and stopping block the loop, which has nothing else to do meanwhile
            results.append(await measure(server, cfg, log))
    return results, versions


# ---- reporting ----


def mib(n: int | None) -> str:
    return "-" if n is None else f"{n / MIB:,.1f}"


def ratios(results: list[Result]) -> dict[str, float]:
    """raftkv/etcd: RSS and peak summed over members, at rest and loaded; load time."""
    by = {r.server: r for r in results}
    a, b = by.get("raftkv"), by.get("etcd")
    if a is None or b is None:
        return {}
    out: dict[str, float] = {}
    for state in ("rest", "loaded"):
        for what in ("rss", "peak"):
            if b.total(state, what):
                out[f"{state}_{what}"] = a.total(state, what) / b.total(state, what)
    if b.load_seconds:
        out["load_seconds"] = a.load_seconds / b.load_seconds
    return out


def table(results: list[Result], cfg: Config) -> str:
    head = (
        f"{'server':<7} {'member':<7} {'role':<9} | {'rest RSS MiB':>12} {'peak':>8} | "
        f"{'loaded RSS MiB':>14} {'peak':>8} {'disk MiB':>9}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        for m in r.members:
            loaded = m.loaded
            lines.append(
                f"{r.server:<7} {m.name:<7} {m.role:<9} | {mib(m.rest.rss):>12} {mib(m.rest.peak):>8} | "
                f"{mib(loaded.rss if loaded else None):>14} {mib(loaded.peak if loaded else None):>8} "
                f"{mib(m.disk_bytes):>9}"
            )
        if len(r.members) > 1:
            lines.append(
                f"{r.server:<7} {'all':<7} {'':<9} | "
                f"{mib(r.total('rest', 'rss')):>12} {mib(r.total('rest', 'peak')):>8} | "
                f"{mib(r.total('loaded', 'rss')):>14} {mib(r.total('loaded', 'peak')):>8} "
                f"{mib(sum(m.disk_bytes for m in r.members)):>9}"
            )
    lines.append("")
    for r in results:
        lines.append(
            f"{r.server:<7} loaded {r.keys:,} keys in {r.load_seconds:.1f} s ({r.keys_per_s:,.0f} keys/s); "
            f"{r.keys_counted:,} counted"
        )
    rat = ratios(results)
    if rat:
        lines.append(
            "raftkv/etcd (summed over members): "
            + ", ".join(f"{name.replace('_', ' ')} {value:.2f}" for name, value in rat.items())
        )
    topology = "single members" if cfg.members == 1 else f"{cfg.members}-member clusters, leader first"
    lines.append(
        f"({topology}; {cfg.keys:,} keys of {cfg.value_size} bytes written to the leader in Txns of "
        f"{cfg.txn_ops} puts, {cfg.in_flight} in flight; readings {cfg.settle:g} s after start and after the "
        "load; RSS = VmRSS, peak = VmHWM, disk = blocks allocated under the member's data directory)"
    )
    return "\n".join(lines)


def document(cfg: Config, results: list[Result], versions: dict[str, str], argv: list[str]) -> dict[str, object]:
    return {
        "benchmark": "memory",
        "date": utc_now(),
        "command": "python -m bench.memory " + " ".join(argv),
        "machine": machine(),
        "config": asdict(cfg),
        "servers": versions,
        "results": [asdict(r) for r in results],
        "ratios": ratios(results),
    }


def parse_args(argv: list[str]) -> tuple[Config, Path]:
    p = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n\n")[0])
    d = Config()
    p.add_argument("--keys", type=int, default=d.keys, help=f"keys to write (default {d.keys:,})")
    p.add_argument("--value-size", type=int, default=d.value_size, help="bytes per value")
    p.add_argument(
        "--members", type=int, choices=(1, 3), default=d.members, help="members per server: 3 (default) or 1"
    )
    p.add_argument(
        "--txn-ops",
        type=int,
        default=None,
        help=f"puts per Txn while loading (default {d.txn_ops}, fewer for big values)",
    )
    p.add_argument("--in-flight", type=int, default=d.in_flight, help="Txns in flight while loading")
    p.add_argument("--settle", type=float, default=d.settle, help="seconds to wait before each reading")
    p.add_argument("--servers", default=",".join(d.servers), help="comma-separated, of raftkv, etcd")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON results go")
    a = p.parse_args(argv)
    servers = [s for s in a.servers.split(",") if s]
    for s in servers:
        if s not in KINDS:
            p.error(f"unknown server {s!r}")
    if not servers:
        p.error("--servers needs at least one server")
    per_put = a.value_size + 64  # value, key and framing
    if a.txn_ops is None:
        a.txn_ops = max(1, min(d.txn_ops, TXN_BYTES // per_put))
    elif a.txn_ops * per_put > TXN_BYTES:
        p.error(f"--txn-ops {a.txn_ops} of {a.value_size}-byte values would pass {TXN_BYTES:,} bytes a Txn")
    if a.keys < 1 or a.txn_ops < 1 or a.in_flight < 1 or a.value_size < 0 or a.settle < 0:
        p.error("--keys, --txn-ops and --in-flight must be positive, --value-size and --settle not negative")
    cfg = Config(
        keys=a.keys,
        value_size=a.value_size,
        members=a.members,
        txn_ops=a.txn_ops,
        in_flight=a.in_flight,
        settle=a.settle,
        servers=servers,
    )
    return cfg, a.results_dir


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cfg, results_dir = parse_args(argv)
    exit_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="raftkv-bench-") as tmp:
        results, versions = run(cfg, Path(tmp))
    doc = document(cfg, results, versions, argv)
    path = write_results(results_dir, f"memory-{members_tag(cfg.members)}", doc)
    print()
    print(table(results, cfg))
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
