"""``etcdctl check perf`` against a fresh three-member raftkv and a fresh three-member etcd, side by side.

    python -m bench.check_perf                # --load=s: 50 clients, 150 puts/s of 1 KiB values, 60 s
    python -m bench.check_perf --load s,m     # and --load=m: 200 clients, 1,000 puts/s

etcd's own cluster qualification check, unchanged: etcdctl 3.4's ``check perf`` writes
rate-limited puts (256-byte keys under ``/etcdctl-check-perf/``, 1 KiB values) for 60 s from many
clients spread over every endpoint, then judges the run: PASS needs no errors, a throughput above
90% of the load's target, no request slower than 0.5 s, and a latency standard deviation under
0.1 s. Before writing it reads the prefix, and afterwards deletes it.

For each load, raftkv runs first and etcd second, each on a fresh cluster (``bench.procs.Cluster``:
three members on free loopback ports, data in a temp dir) that is stopped before the next starts,
so they never share the machine with each other. Prints both verdicts side by side, with the CPU
the three members used (summed) and what everything else on the machine used, and writes
``bench/results/check-perf-<UTC timestamp>.json``.

Exit status: 0 only if raftkv passed every load (with ``--servers etcd`` alone, if etcd did); 1 if
it failed one; 2 for a usage error.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.kv import machine, machine_busy_seconds
from bench.procs import KINDS, Cluster, exit_on_sigterm, version
from bench.results import RESULTS_DIR, utc_now, write_results

LOADS = {  # etcdctl 3.4's checkPerfCfgMap: target puts/s, clients, seconds
    "s": (150, 50, 60),
    "m": (1000, 200, 60),
    "l": (8000, 500, 60),
    "xl": (15000, 1000, 60),
}
PREFIX = "/etcdctl-check-perf/"

_THROUGHPUT = re.compile(r"Throughput (?:is|too low:) (\d+) writes/s")
_SLOWEST = re.compile(r"Slowest request took(?: too long:)? ([0-9.]+)s")
_STDDEV = re.compile(r"Stddev (?:is|too high:) ([0-9.]+)s")


@dataclass
class Verdict:
    """What etcdctl check perf said about one cluster, parsed from its output."""

    passed: bool = False  # the final PASS line, and exit status 0
    throughput: int | None = None  # writes/s, as etcdctl prints it
    throughput_ok: bool | None = None
    slowest_s: float | None = None
    slowest_ok: bool | None = None
    stddev_s: float | None = None
    stddev_ok: bool | None = None
    errors_ok: bool = True  # False on "FAIL: too many errors"
    lines: list[str] = field(default_factory=list)  # the verdict lines, and any error etcdctl printed


def parse(output: str, returncode: int) -> Verdict:
    """Parses etcdctl check perf's output (progress bar redraws, verdict lines, final PASS/FAIL)."""
    v = Verdict()
    lines = [part.strip() for line in output.splitlines() for part in line.split("\r")]
    lines = [line for line in lines if line and "%" not in line]  # drop progress bar frames
    v.lines = lines[-12:]
    for line in lines:
        if m := _THROUGHPUT.search(line):
            v.throughput, v.throughput_ok = int(m.group(1)), line.startswith("PASS")
        elif m := _SLOWEST.search(line):
            v.slowest_s, v.slowest_ok = float(m.group(1)), line.startswith("PASS")
        elif m := _STDDEV.search(line):
            v.stddev_s, v.stddev_ok = float(m.group(1)), line.startswith("PASS")
        elif "too many errors" in line:
            v.errors_ok = False
    v.passed = returncode == 0 and bool(lines) and lines[-1] == "PASS"
    return v


@dataclass
class Run:
    server: str
    load: str
    members: int
    version: str
    seconds: float  # wall time of etcdctl check perf
    returncode: int
    verdict: Verdict
    server_cpu_s: float  # summed over the member processes, during the check
    member_cpu_s: list[float]
    etcdctl_cpu_s: float
    other_cpu_s: float  # everything else on the machine, during the check
    leader: str


def etcdctl_binary() -> str:
    path = shutil.which("etcdctl")
    if path is None:
        raise RuntimeError("etcdctl is not installed (apt-get install etcd-client)")
    return path


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def check(kind: str, load: str, workdir: Path, members: int = 3, log: bool = True) -> Run:
    """Starts a fresh cluster of ``kind``, runs ``etcdctl check perf --load=<load>`` on it, stops it."""
    with Cluster(kind, workdir, size=members) as cluster:
        cmd = [etcdctl_binary(), f"--endpoints={','.join(cluster.endpoints)}", "check", "perf", f"--load={load}"]
        if log:
            print(f"  {kind}: leader {cluster.leader_name}; {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
        env = {**os.environ, "ETCDCTL_API": "3"}
        members0, children0, busy0 = cluster.member_cpu_seconds(), children_cpu_seconds(), machine_busy_seconds()
        t0 = time.monotonic()
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=LOADS[load][2] + 120)
            output, returncode = proc.stdout + proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as exc:
            partial = exc.stdout or b""
            output = partial.decode(errors="replace") if isinstance(partial, bytes) else partial
            output += "\nbench.check_perf: etcdctl timed out"
            returncode = -1
        elapsed = time.monotonic() - t0
        members1, children1, busy1 = cluster.member_cpu_seconds(), children_cpu_seconds(), machine_busy_seconds()
        leader = cluster.leader_name
    member_cpu = [b - a for a, b in zip(members0, members1, strict=True)]
    etcdctl_cpu = children1 - children0
    return Run(
        server=kind,
        load=load,
        members=members,
        version=version(kind),
        seconds=elapsed,
        returncode=returncode,
        verdict=parse(output, returncode),
        server_cpu_s=sum(member_cpu),
        member_cpu_s=member_cpu,
        etcdctl_cpu_s=etcdctl_cpu,
        other_cpu_s=max(0.0, (busy1 - busy0) - sum(member_cpu) - etcdctl_cpu),
        leader=leader,
    )


# ---- reporting ----


def _ok(flag: bool | None) -> str:
    return "" if flag is None else ("PASS" if flag else "FAIL")


def side_by_side(runs: list[Run]) -> str:
    """One block per load: a column per server."""
    out = []
    for load in dict.fromkeys(r.load for r in runs):
        cols = [r for r in runs if r.load == load]
        target, clients, seconds = LOADS[load]
        width = 30
        rows = [f"etcdctl check perf --load={load}: {clients} clients, {target:,} puts/s target, {seconds} s"]
        rows.append(f"{'':<44}" + "".join(f"{f'{r.server} ({r.members} members)':<{width}}" for r in cols).rstrip())
        rows.append("-" * (44 + width * len(cols)))

        def row(title: str, cells: list[str]) -> None:
            rows.append((f"{title:<44}" + "".join(f"{c:<{width}}" for c in cells)).rstrip())  # noqa: B023

        row("verdict", ["PASS" if r.verdict.passed else "FAIL" for r in cols])
        row(
            "throughput (> 90% of target)",
            [
                f"{_ok(r.verdict.throughput_ok)} {r.verdict.throughput:,} writes/s"
                if r.verdict.throughput is not None
                else "-"
                for r in cols
            ],
        )
        row(
            "slowest request (<= 0.5 s)",
            [
                f"{_ok(r.verdict.slowest_ok)} {r.verdict.slowest_s:.4f} s" if r.verdict.slowest_s is not None else "-"
                for r in cols
            ],
        )
        row(
            "stddev (<= 0.1 s)",
            [
                f"{_ok(r.verdict.stddev_ok)} {r.verdict.stddev_s:.4f} s" if r.verdict.stddev_s is not None else "-"
                for r in cols
            ],
        )
        row("errors", ["none" if r.verdict.errors_ok else "FAIL: too many" for r in cols])
        row("members' CPU (sum; 100% = one core)", [f"{100 * r.server_cpu_s / r.seconds:.0f}%" for r in cols])
        row("etcdctl's CPU", [f"{100 * r.etcdctl_cpu_s / r.seconds:.0f}%" for r in cols])
        row("other processes' CPU", [f"{100 * r.other_cpu_s / r.seconds:.0f}%" for r in cols])
        out.append("\n".join(rows))
        for r in cols:
            out.append(
                f"{r.server} ({r.version}), etcdctl exit {r.returncode}:\n"
                + "\n".join(f"  {x}" for x in r.verdict.lines)
            )
    return "\n\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m bench.check_perf", description=__doc__.split("\n\n")[0])
    p.add_argument("--load", default="s", help=f"comma-separated etcdctl loads, of {', '.join(LOADS)} (default s)")
    p.add_argument("--servers", default=",".join(KINDS), help="comma-separated, of raftkv, etcd")
    p.add_argument("--members", type=int, default=3, help="members per cluster (default 3)")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON results go")
    a = p.parse_args(argv)
    loads = [x for x in a.load.split(",") if x]
    servers = [x for x in a.servers.split(",") if x]
    if not loads or any(x not in LOADS for x in loads):
        p.error(f"--load takes {', '.join(LOADS)}")
    if not servers or any(x not in KINDS for x in servers):
        p.error("--servers takes raftkv, etcd")
    if a.members < 1:
        p.error("--members must be positive")
    exit_on_sigterm()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="raftkv-check-perf-") as tmp:
        for load in loads:
            for kind in servers:
                print(f"check perf --load={load} on {a.members} {kind} members ...", file=sys.stderr, flush=True)
                runs.append(check(kind, load, Path(tmp) / f"{kind}-{load}", a.members))
    doc = {
        "benchmark": "check-perf",
        "date": utc_now(),
        "command": "python -m bench.check_perf " + " ".join(argv),
        "machine": machine(),
        "etcdctl": subprocess.run([etcdctl_binary(), "version"], capture_output=True, text=True).stdout.split("\n")[0],
        "runs": [asdict(r) for r in runs],
    }
    path = write_results(a.results_dir, "check-perf-", doc)
    print()
    print(side_by_side(runs))
    print(f"\nresults: {path}")
    judged = [r for r in runs if r.server == "raftkv"] or runs
    return 0 if all(r.verdict.passed for r in judged) else 1


if __name__ == "__main__":
    sys.exit(main())
