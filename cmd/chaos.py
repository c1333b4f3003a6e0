"""``raftkv chaos``: Jepsen-style runs against raftkv or etcd (wiring only; see chaos.runner).

raftkv chaos run --workload register --nemesis kill,partition --time 60 --out runs/reg
raftkv chaos run --workload append --nemesis pause --etcd --out runs/etcd-append
raftkv chaos run --workload register --endpoints 127.0.0.1:2379,... --pids 101,102,103 --nemesis kill
raftkv chaos scenario stale-read --unsafe stale-reads --out runs/stale
raftkv chaos check runs/reg
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

WORKLOADS = ("register", "append", "watch", "lock")


def _csv(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raftkv chaos",
        description="Run a workload against a cluster while faults are injected, then check the history.",
    )
    sub = parser.add_subparsers(dest="verb", required=True)
    run = sub.add_parser(
        "run",
        help="run a workload under faults, check it, write a report",
        description="Starts a local raftkv cluster (or etcd with --etcd, or uses --endpoints), runs the workload for "
        "--time seconds while the nemesis injects faults, heals them, waits for the members to converge, checks the "
        "history and writes DIR/history.jsonl, DIR/verdict.json, DIR/latency.png and, on a violation, "
        "DIR/timeline.html. Exit status: 0 valid, 1 invalid, 2 unknown or aborted.",
        epilog="Nemeses: kill[:leader|one|majority|all|all-leader-last], pause[:leader|one|majority], "
        "partition[:leader|majority|bridge|halves], failpoint[:beforeWALSave|afterWALSave|beforeApply|afterApply], "
        "none. Arguments after -- go to every local member (etcd flags).",
    )
    run.add_argument("--workload", "-w", choices=WORKLOADS, default="register")
    run.add_argument("--nemesis", "-n", default="none", help="comma-separated faults to choose from (default none)")
    run.add_argument("--time", "-t", type=float, default=60.0, help="seconds of workload (default 60)")
    run.add_argument("--concurrency", "-c", type=int, default=10, help="client workers (default 10)")
    run.add_argument(
        "--min-ok",
        type=int,
        default=0,
        help="go on past --time until this many operations completed ok (at most 4 x --time in all)",
    )
    run.add_argument("--rate", type=float, default=200.0, help="operations per second, all workers (0: unpaced)")
    run.add_argument("--out", "-o", type=Path, help="report folder (default chaos-runs/<workload>-<time>)")
    run.add_argument("--endpoints", type=_csv, help="host:port,... of running members instead of a local cluster")
    run.add_argument("--pids", type=lambda s: [int(p) for p in _csv(s)], help="the members' pids, in endpoint order")
    run.add_argument("--etcd", action="store_true", help="start a local etcd 3.4 cluster instead of raftkv")
    run.add_argument("--netns", action="store_true", help="run local raftkv members in network namespaces too")
    run.add_argument(
        "--secure",
        action="store_true",
        help="client and peer TLS with client certificates, and auth enabled (clients as a user limited to the "
        "workload's keys); certificates are made in OUT/pki",
    )
    run.add_argument("--unsafe", metavar="MODE", help="RAFTKV_UNSAFE for local raftkv members (stale-reads, ...)")
    run.add_argument("--seed", type=int, help="seed for the workload and nemesis choices")
    run.add_argument("--interval", type=float, default=5.0, help="mean seconds between faults (default 5)")
    run.add_argument("--fault-duration", type=float, default=5.0, help="mean seconds a fault lasts (default 5)")
    run.add_argument("--op-timeout", type=float, default=5.0, help="client timeout per operation (default 5)")
    run.add_argument("--check-budget", type=float, default=120.0, help="seconds the checker may take (default 120)")
    run.add_argument("--converge-timeout", type=float, default=60.0, help="seconds to wait for recovery (default 60)")
    run.add_argument("--keys", type=int, default=0, help="keys in use at once (workload default when 0)")
    run.add_argument("--ops-per-key", type=int, default=0, help="operations before a key retires (workload default)")
    run.add_argument(
        "--lock-via",
        choices=("client", "service"),
        help="lock workload: take the lock with the client-side recipe (default) or through etcd's Lock service",
    )
    run.add_argument("--no-progress", action="store_true", help="no live progress line")
    run.add_argument("member_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    scen = sub.add_parser(
        "scenario",
        help="run a constructed schedule that makes an anomaly happen on purpose, check it, report",
        description="Starts a local raftkv cluster and runs one scripted schedule of operations and faults "
        "(chaos/scenarios.py): stale-read (meant for --unsafe stale-reads), lost-ack (for --unsafe "
        "ack-before-fsync), lock-stall (a lock used with and without fencing). Against the flawed build the "
        "checker must say invalid, against the safe build valid. Exit status as for run.",
    )
    scen.add_argument("name", choices=("stale-read", "lost-ack", "lock-stall"))
    scen.add_argument("--unsafe", metavar="MODE", help="RAFTKV_UNSAFE for the members (stale-reads, ack-before-fsync)")
    scen.add_argument("--out", "-o", type=Path, help="report folder (default chaos-runs/<name>-<time>)")
    scen.add_argument("--seed", type=int, help="seed for the workload's choices")
    scen.add_argument("--op-timeout", type=float, default=5.0, help="client timeout per operation (default 5)")
    check = sub.add_parser("check", help="check a recorded history again", description="Re-checks DIR/history.jsonl.")
    check.add_argument("dir", type=Path)
    check.add_argument("--workload", "-w", choices=WORKLOADS, help="default: the one in DIR/verdict.json")
    check.add_argument("--check-budget", type=float, default=120.0)
    return parser


def _run(args: argparse.Namespace) -> int:
    from chaos.nemesis import NemesisError, parse
    from chaos.runner import RunConfig, run

    try:
        parse(args.nemesis)
    except NemesisError as exc:
        print(f"raftkv chaos: {exc}", file=sys.stderr)
        return 2
    if args.lock_via and args.workload != "lock":
        print("raftkv chaos: --lock-via is for the lock workload", file=sys.stderr)
        return 2
    if args.pids and not args.endpoints:
        print("raftkv chaos: --pids needs --endpoints", file=sys.stderr)
        return 2
    out = args.out or Path("chaos-runs") / f"{args.workload}-{time.strftime('%Y%m%dT%H%M%S')}"
    extra = args.member_args[1:] if args.member_args[:1] == ["--"] else args.member_args
    cfg = RunConfig(
        workload=args.workload,
        nemesis=args.nemesis,
        time_s=args.time,
        min_ok=args.min_ok,
        concurrency=args.concurrency,
        rate=args.rate,
        out=out,
        endpoints=args.endpoints,
        pids=args.pids,
        etcd=args.etcd,
        netns=True if args.netns else None,
        secure=args.secure,
        seed=args.seed,
        interval=args.interval,
        fault_duration=args.fault_duration,
        op_timeout=args.op_timeout,
        check_budget=args.check_budget,
        converge_timeout=args.converge_timeout,
        keys=args.keys,
        ops_per_key=args.ops_per_key,
        member_args=extra,
        member_env={"RAFTKV_UNSAFE": args.unsafe} if args.unsafe else {},
        progress=False if args.no_progress else None,
        workload_options={"via": args.lock_via} if args.lock_via else {},
    )
    code, _ = run(cfg)
    return code


def _scenario(args: argparse.Namespace) -> int:
    from chaos.runner import RunConfig, run
    from chaos.scenarios import get

    sc = get(args.name)
    out = args.out or Path("chaos-runs") / f"{args.name}-{time.strftime('%Y%m%dT%H%M%S')}"
    cfg = RunConfig(
        workload=sc.workload,
        scenario=sc.name,
        out=out,
        seed=args.seed,
        op_timeout=args.op_timeout,
        member_env={"RAFTKV_UNSAFE": args.unsafe} if args.unsafe else {},
    )
    code, _ = run(cfg)
    return code


def _check(args: argparse.Namespace) -> int:
    from chaos.runner import recheck

    workload = args.workload
    if workload is None:
        try:
            workload = json.loads((args.dir / "verdict.json").read_text())["workload"]
        except (OSError, ValueError, KeyError):
            print(f"raftkv chaos: no workload in {args.dir}/verdict.json: pass --workload", file=sys.stderr)
            return 2
    code, result = recheck(args.dir, workload, args.check_budget)
    print(json.dumps({k: v for k, v in result.items() if k not in ("windows",)}, indent=2, default=str))
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return {"run": _run, "scenario": _scenario, "check": _check}[args.verb](args)


if __name__ == "__main__":
    sys.exit(main())
