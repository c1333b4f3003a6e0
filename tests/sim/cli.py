"""The command line of the whole-member simulation.

    python -m tests.sim --seed 42 -v                 # replay one seed, printing its events
    python -m tests.sim --seed 42 --bug stale-reads  # the same with a flaw injected
    python -m tests.sim --seeds 10000 --jobs 2       # seeds 0..9999 on two processes
    python -m tests.sim --seeds 300 --start 5000 --bug lost-catch-up --first   # stop at the first failure
    python -m tests.sim --table --seeds 300 --jobs 2   # every injected bug on seeds 0..299: tests/sim/README.md's table

A failing seed prints its violation, the one-line command that replays it and a minimal trace.
Exit status: 0 when every seed passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
import warnings
from dataclasses import dataclass

from tests.sim.bugs import BUGS
from tests.sim.run import SimOptions, Simulation, SimulationFailed


@dataclass
class Outcome:
    seed: int
    failure: str | None
    seconds: float
    digest: str = ""
    virtual: float = 0.0


def options(args: argparse.Namespace) -> SimOptions:
    return SimOptions(members=args.members, chaos_time=args.time, bug=args.bug, verbose=args.verbose)


def run_one(seed: int, opts: SimOptions) -> Outcome:
    t0 = time.perf_counter()
    sim = Simulation(seed, opts)
    try:
        digest = sim.run()
    except SimulationFailed as exc:
        return Outcome(seed, str(exc), time.perf_counter() - t0, virtual=sim.loop.now)
    return Outcome(seed, None, time.perf_counter() - t0, digest, sim.loop.now)


def _worker(job: tuple[int, SimOptions]) -> Outcome:
    return run_one(*job)


def main(argv: list[str] | None = None) -> int:
    # the coroutines of a killed process's tasks that never ran are dropped with their run, and may
    # be collected during a later one
    warnings.filterwarnings("ignore", "coroutine .* was never awaited", RuntimeWarning)
    p = argparse.ArgumentParser(prog="python -m tests.sim", description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, help="run one seed")
    p.add_argument("--seeds", type=int, default=0, help="run this many seeds")
    p.add_argument("--start", type=int, default=0, help="the first seed of --seeds")
    p.add_argument("--jobs", type=int, default=1, help="processes for --seeds")
    p.add_argument("--members", type=int, default=3)
    p.add_argument("--time", type=float, default=SimOptions.chaos_time, help="virtual seconds of faults")
    p.add_argument("--bug", default="", choices=["", *BUGS], help="inject a known flaw")
    p.add_argument("--first", action="store_true", help="with --seeds: stop at the first failing seed")
    p.add_argument("-v", "--verbose", action="store_true", help="print every event of the run")
    p.add_argument("--table", action="store_true", help="run every injected bug on --seeds seeds; print a table")
    a = p.parse_args(argv)
    if a.table:
        return table(a)
    if a.seed is not None:
        sim = Simulation(a.seed, options(a))
        t0 = time.perf_counter()
        try:
            digest = sim.run()
        except SimulationFailed as exc:
            print(f"FAIL {exc}")
            return 1
        print(
            f"seed {a.seed}: ok in {time.perf_counter() - t0:.2f}s ({sim.loop.now:.1f} virtual), trace {digest}, "
            f"faults {sim.faults.counts}, checked {sim.stats}"
        )
        return 0
    n = a.seeds or 100
    jobs = [(seed, options(a)) for seed in range(a.start, a.start + n)]
    t0 = time.perf_counter()
    failures = 0
    done = 0
    if a.jobs > 1:
        pool = multiprocessing.get_context("fork").Pool(a.jobs)
        results = pool.imap(_worker, jobs, chunksize=4)
    else:
        pool = None
        results = map(_worker, jobs)
    try:
        for out in results:
            done += 1
            if out.failure is not None:
                failures += 1
                print(f"FAIL {out.failure}", flush=True)
                if a.first:
                    break
            if done % 50 == 0 or done == n:
                print(f"{done}/{n} seeds, {failures} failed, {time.perf_counter() - t0:.0f}s", flush=True)
    finally:
        if pool is not None:
            pool.terminate()
    print(f"seeds {a.start}..{a.start + done - 1}: {failures} failed in {time.perf_counter() - t0:.1f}s", flush=True)
    return 1 if failures else 0


def sweep(seeds: range, opts: SimOptions, jobs: int) -> list[Outcome]:
    """Every seed's outcome, in seed order."""
    work = [(seed, opts) for seed in seeds]
    if jobs <= 1:
        return [_worker(w) for w in work]
    pool = multiprocessing.get_context("fork").Pool(jobs)
    try:
        return list(pool.imap(_worker, work, chunksize=4))
    finally:
        pool.terminate()


def table(a: argparse.Namespace) -> int:
    """Markdown: each injected bug, its first failing seed, how many of the seeds catch it, what was seen."""
    n = a.seeds or 300
    seeds = range(a.start, a.start + n)
    print(
        f"| injected bug | first failing seed | seeds failing of {n} ({a.start}..{a.start + n - 1}) | first violation |"
    )
    print("| --- | --- | --- | --- |")
    missed = 0
    for bug in BUGS:
        t0 = time.perf_counter()
        outs = sweep(seeds, SimOptions(members=a.members, chaos_time=a.time, bug=bug), a.jobs)
        failed = [o for o in outs if o.failure is not None]
        if not failed:
            missed += 1
            print(f"| `{bug}` | none | 0 | ({time.perf_counter() - t0:.0f}s) |", flush=True)
            continue
        first = failed[0]
        assert first.failure is not None
        what = first.failure.splitlines()[0].split(": ", 1)[1][:110].replace("|", "/")
        print(
            f"| `{bug}` | {first.seed} | {len(failed)} | {what} ({time.perf_counter() - t0:.0f}s) |",
            flush=True,
        )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
