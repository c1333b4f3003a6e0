"""``raftkv cluster``: a local three-member cluster in one command (wiring only; see chaos.cluster)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

_COLORS = ("\033[36m", "\033[33m", "\033[35m", "\033[32m", "\033[34m")


def _human(line: str) -> str:
    """One JSON log record as a short human line; anything else unchanged."""
    try:
        rec = json.loads(line)
    except ValueError:
        return line
    if not isinstance(rec, dict) or "msg" not in rec:
        return line
    skip = {"ts", "level", "logger", "msg", "member"}
    extras = " ".join(f"{k}={v}" for k, v in rec.items() if k not in skip)
    return f"{rec.get('ts', '')[11:23]} {rec.get('level', ''):<5} {rec['msg']}" + (f"  {extras}" if extras else "")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=Path, default=Path("raftkv-data"), help="where member data and logs live")
    parser.add_argument("--size", type=int, default=3, choices=(1, 3, 5), help="number of members")
    parser.add_argument("--base-port", type=int, default=0, help="client ports base, +1 peer (default: etcd's ports)")
    parser.add_argument("--no-color", action="store_true")


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from chaos.cluster import DEFAULT_PORTS, LocalCluster

    size = args.size
    if args.base_port:
        ports = [(args.base_port + 10 * i, args.base_port + 10 * i + 1) for i in range(size)]
    else:
        ports = list(DEFAULT_PORTS[:size]) + [(42379 + 10000 * i, 42380 + 10000 * i) for i in range(size - 3)]
    color = sys.stdout.isatty() and not args.no_color
    lock = threading.Lock()

    def sink(name: str, line: str) -> None:
        prefix = f"{name:>3} | "
        if color:
            prefix = f"{_COLORS[int(name[1:]) % len(_COLORS)]}{prefix}\033[0m"
        with lock:
            print(prefix + _human(line), flush=True)

    cluster = LocalCluster(args.dir.resolve(), size=size, ports=ports[:size], extra_args=extra, sink=sink)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"raftkv cluster: starting {size} members, data in {cluster.base_dir}", flush=True)
    try:
        cluster.start(wait=True, timeout=60)
    except (RuntimeError, TimeoutError) as exc:
        print(f"raftkv cluster: {exc}", file=sys.stderr)
        cluster.stop()
        return 1
    print(
        f"\nraftkv cluster is up. Endpoints: {cluster.endpoints}\n"
        f"  ETCDCTL_API=3 etcdctl --endpoints={cluster.endpoints} put foo bar\n"
        f"  ETCDCTL_API=3 etcdctl --endpoints={cluster.endpoints} endpoint status -w table\n"
        "Ctrl-C stops every member cleanly; run the same command again to restart with the data intact.\n",
        flush=True,
    )
    while not stop.wait(0.5):
        dead = [m.name for m in cluster.members if not m.running()]
        if len(dead) == size:
            print("raftkv cluster: every member has exited", file=sys.stderr)
            break
    print("\nraftkv cluster: stopping members", flush=True)
    cluster.stop()
    return 0
