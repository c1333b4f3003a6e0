"""What serving ``/metrics`` costs raftkv: throughput with and without a scraper, and CPU per scrape.

    python -m bench.metrics --seconds 8 --rounds 3 --interval 1 --workloads put,srange

One fresh single-member raftkv runs ``bench.kv``'s load (the same load generator: ``--clients``
closed-loop gRPC clients) for each workload twice per round: once with nobody scraping and once
with a scraper fetching ``GET /metrics`` every ``--interval`` seconds (Prometheus's default is 15 s;
1 s is fifteen times harsher), in alternating order from round to round, so a drift of the shared
machine's load hits both alike. For each workload it reports the median over rounds of ops/s with
and without scraping and their ratio, and checks that the counters moved with the load:
``etcd_mvcc_put_total`` and ``grpc_server_handled_total{grpc_method="Put",grpc_code="OK"}`` between
the first and last scrape of a put window against the puts the load generator completed meanwhile.

Throughput on a shared 2-core machine varies by a few percent from window to window, more than the
cost measured here; so the benchmark also measures that cost directly: ``--scrapes`` scrapes of an
idle member back to back, the member's CPU time divided by their number (ms of CPU per scrape), and
what that is as a share of the member's CPU per second of load at ``--interval``.

Writes ``bench/results/metrics-<UTC timestamp>.json``. Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import uvloop

from bench.kv import Config, drive, encoded_requests, machine, populate
from bench.procs import Server, exit_on_sigterm
from bench.results import RESULTS_DIR, utc_now, write_results

PUT_OK = 'grpc_server_handled_total{grpc_code="OK",grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"}'


def scrape(port: int) -> tuple[bytes, float]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
        body = resp.read()
    return body, time.perf_counter() - t0


def sample(body: bytes, name: str) -> float:
    m = re.search(rb"^" + re.escape(name.encode()) + rb" (\S+)$", body, re.M)
    return float(m.group(1)) if m else float("nan")


class Scraper(threading.Thread):
    """GET /metrics every interval until stopped; keeps each scrape's time and two counters."""

    def __init__(self, port: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.interval = interval
        self.stop_event = threading.Event()
        self.scrapes: list[tuple[float, float, float, float]] = []  # (when, seconds, puts, put OKs)
        self.size = 0

    def run(self) -> None:
        while not self.stop_event.is_set():
            started = time.perf_counter()
            body, took = scrape(self.port)
            self.size = len(body)
            self.scrapes.append((started, took, sample(body, "etcd_mvcc_put_total"), sample(body, PUT_OK)))
            self.stop_event.wait(max(0.0, self.interval - (time.perf_counter() - started)))


@dataclass
class Window:
    workload: str
    scraping: bool
    round: int
    ops_per_s: float
    server_cpu_s: float
    other_cpu_s: float
    scrapes: int = 0
    scrape_ms_median: float = 0.0
    puts_counted: float = 0.0  # etcd_mvcc_put_total, last scrape minus first
    put_oks_counted: float = 0.0
    puts_done_between: float = 0.0  # what the load generator completed between those scrapes (estimate)


async def window(
    server: Server, workload: str, cfg: Config, requests: list[bytes], interval: float | None, rnd: int
) -> Window:
    scraper = Scraper(server.port, interval) if interval else None
    if scraper is not None:
        scraper.start()
    result = await drive(server, workload, requests, cfg.clients[0], cfg.channels, cfg.warmup, cfg.seconds)
    w = Window(workload, scraper is not None, rnd, result.ops_per_s, result.server_cpu_s, result.other_cpu_s)
    if scraper is not None:
        scraper.stop_event.set()
        scraper.join()
        inside = [s for s in scraper.scrapes if s[0] >= scraper.scrapes[0][0] + cfg.warmup]
        w.scrapes = len(inside)
        w.scrape_ms_median = statistics.median(s[1] for s in inside) * 1000 if inside else 0.0
        if len(inside) >= 2 and workload == "put":
            w.puts_counted = inside[-1][2] - inside[0][2]
            w.put_oks_counted = inside[-1][3] - inside[0][3]
            w.puts_done_between = result.ops_per_s * (inside[-1][0] - inside[0][0])
    return w


def cpu_per_scrape(server: Server, count: int) -> tuple[float, int]:
    """(ms of the member's CPU per scrape, bytes per scrape) over count scrapes of an idle member."""
    scrape(server.port)
    time.sleep(0.5)
    idle0 = server.cpu_seconds()
    time.sleep(2.0)
    idle_rate = (server.cpu_seconds() - idle0) / 2.0  # what the idle member uses anyway
    cpu0 = server.cpu_seconds()
    t0 = time.perf_counter()
    size = 0
    for _ in range(count):
        body, _ = scrape(server.port)
        size = len(body)
    elapsed = time.perf_counter() - t0
    used = server.cpu_seconds() - cpu0 - idle_rate * elapsed
    return used / count * 1000, size


async def run(cfg: Config, workloads: list[str], interval: float, rounds: int, scrapes: int, workdir: Path) -> dict:
    server = Server("raftkv", workdir).start()
    try:
        await populate(server, cfg)
        per_scrape_ms, size = cpu_per_scrape(server, scrapes)
        windows: list[Window] = []
        for rnd in range(rounds):
            for workload in workloads:
                requests = encoded_requests(workload, cfg)
                order = [None, interval] if rnd % 2 == 0 else [interval, None]
                for every in order:
                    w = await window(server, workload, cfg, requests, every, rnd)
                    windows.append(w)
                    print(
                        f"round {rnd} {workload:7s} scraping={'yes' if w.scraping else 'no ':3s} "
                        f"{w.ops_per_s:9.0f} ops/s  server cpu {w.server_cpu_s:5.2f}s  other {w.other_cpu_s:5.2f}s",
                        file=sys.stderr,
                    )
    finally:
        server.stop()
    summary = {}
    for workload in workloads:
        without = [w.ops_per_s for w in windows if w.workload == workload and not w.scraping]
        with_ = [w.ops_per_s for w in windows if w.workload == workload and w.scraping]
        cpu_per_s = statistics.median(
            w.server_cpu_s / cfg.seconds for w in windows if w.workload == workload and not w.scraping
        )
        summary[workload] = {
            "ops_per_s_without": statistics.median(without),
            "ops_per_s_with": statistics.median(with_),
            "ratio_with_to_without": statistics.median(with_) / statistics.median(without),
            "scrape_cpu_share_of_load": per_scrape_ms / 1000 / interval / cpu_per_s,
        }
    return {
        "cpu_ms_per_scrape": per_scrape_ms,
        "bytes_per_scrape": size,
        "cpu_share_of_a_core_at_interval": per_scrape_ms / 1000 / interval,
        "summary": summary,
        "windows": [asdict(w) for w in windows],
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m bench.metrics", description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=8.0, help="measured seconds per window")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--channels", type=int, default=4)
    p.add_argument("--value-size", type=int, default=256)
    p.add_argument("--keys", type=int, default=10_000)
    p.add_argument("--workloads", default="put,srange", help="comma-separated, of put, range, srange")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between scrapes")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--scrapes", type=int, default=200, help="back-to-back scrapes for the CPU per scrape")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = p.parse_args(argv)
    exit_on_sigterm()
    cfg = Config(
        seconds=args.seconds,
        warmup=args.warmup,
        clients=[args.clients],
        channels=args.channels,
        value_size=args.value_size,
        keys=args.keys,
    )
    workloads = [w for w in args.workloads.split(",") if w]
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as tmp:
        out = uvloop.run(run(cfg, workloads, args.interval, args.rounds, args.scrapes, Path(tmp)))
    doc = {
        "benchmark": "metrics",
        "date": utc_now(),
        "command": "python -m bench.metrics " + " ".join(argv),
        "machine": machine(),
        "config": {**asdict(cfg), "interval": args.interval, "rounds": args.rounds, "scrapes": args.scrapes},
        **out,
    }
    print(f"CPU per scrape: {out['cpu_ms_per_scrape']:.2f} ms ({out['bytes_per_scrape']} bytes)")
    for workload, s in out["summary"].items():
        print(
            f"{workload:7s} without {s['ops_per_s_without']:8.0f} ops/s  with a scrape every {args.interval:g}s "
            f"{s['ops_per_s_with']:8.0f} ops/s  ratio {s['ratio_with_to_without']:.3f}  "
            f"scrape CPU / load CPU {s['scrape_cpu_share_of_load'] * 100:.2f}%"
        )
    for w in out["windows"]:
        if w["workload"] == "put" and w["scraping"] and w["puts_done_between"]:
            print(
                f"round {w['round']}: etcd_mvcc_put_total moved {w['puts_counted']:.0f}, Put OK "
                f"{w['put_oks_counted']:.0f}, while about {w['puts_done_between']:.0f} puts completed"
            )
    path = write_results(args.results_dir, "metrics-", doc)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
