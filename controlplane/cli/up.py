"""``raftkv kube up``: the control plane in one command, against a running store cluster.

Starts, as child processes, the controller-manager (two replicas, one leading), the scheduler
and two node agents (node-1, node-2), streams their logs prefixed with their names, and stops
them all on Ctrl-C (agents stop their pods' processes).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from controlplane.cli.common import CliError
from controlplane.runtime import cleanup_tree
from controlplane.store.base import StoreError
from controlplane.store.etcd import EtcdStore, endpoints_from

_COLORS = ("\033[36m", "\033[33m", "\033[35m", "\033[32m", "\033[34m", "\033[31m")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoints", default=None, help="store endpoints (default: $ETCDCTL_ENDPOINTS or 127.0.0.1:2379)")
    p.add_argument("--dir", type=Path, default=Path("kube-data"), help="node agents' pod logs (default ./kube-data)")
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--controller-managers", type=int, default=2)
    p.add_argument("--node-cpu", default="2")
    p.add_argument("--node-memory", default="4Gi")
    p.add_argument("--node-lease-ttl", type=int, default=10)
    p.add_argument("--leader-lease-ttl", type=int, default=15)
    p.add_argument("--restart-backoff", type=float, default=1.0)
    p.add_argument("--resync", type=float, default=30.0)
    p.add_argument("--no-color", action="store_true")


def commands(args: argparse.Namespace, endpoints: str) -> list[tuple[str, list[str]]]:
    base = [sys.executable, "-m", "raftkv_cmd.main", "kube"]
    ep = f"--endpoints={endpoints}"
    out: list[tuple[str, list[str]]] = []
    for i in range(args.controller_managers):
        out.append(
            (
                f"controller-manager-{i + 1}",
                [
                    *base,
                    "controller-manager",
                    ep,
                    f"--id=controller-manager-{i + 1}",
                    f"--leader-lease-ttl={args.leader_lease_ttl}",
                    f"--leader-retry-period={max(args.leader_lease_ttl / 10, 0.2)}",
                    f"--resync={args.resync}",
                ],
            )
        )
    out.append(
        ("scheduler", [*base, "scheduler", ep, "--id=scheduler", "--leader-elect=false", f"--resync={args.resync}"])
    )
    for i in range(args.nodes):
        node = f"node-{i + 1}"
        out.append(
            (
                node,
                [
                    *base,
                    "agent",
                    ep,
                    f"--node-name={node}",
                    f"--dir={(args.dir / node).resolve()}",
                    f"--cpu={args.node_cpu}",
                    f"--memory={args.node_memory}",
                    f"--node-lease-ttl={args.node_lease_ttl}",
                    f"--restart-backoff={args.restart_backoff}",
                ],
            )
        )
    return out


def run(args: argparse.Namespace) -> int:
    endpoints = ",".join(endpoints_from(args.endpoints))
    store = EtcdStore(endpoints, retry_for=10.0)
    try:
        store.health()  # kube-apiserver's own check: a Range of /registry/health
    except StoreError as exc:
        raise CliError(f"cannot reach the store at {endpoints} ({exc}); start one with `raftkv cluster`") from None
    finally:
        store.close()
    color = sys.stdout.isatty() and not args.no_color
    lock = threading.Lock()
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    width = max(len(n) for n, _ in commands(args, endpoints))

    def pump(i: int, name: str, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        prefix = f"{name:>{width}} | "
        if color:
            prefix = f"{_COLORS[i % len(_COLORS)]}{prefix}\033[0m"
        for raw in proc.stdout:
            with lock:
                print(prefix + raw.decode(errors="replace").rstrip("\n"), flush=True)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    args.dir.mkdir(parents=True, exist_ok=True)
    for i, (name, argv) in enumerate(commands(args, endpoints)):
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, env=os.environ
        )
        procs.append((name, proc))
        threading.Thread(target=pump, args=(i, name, proc), daemon=True).start()
    print(
        f"raftkv kube up: {', '.join(n for n, _ in procs)} running against {endpoints}\n"
        f"  raftkv kube get nodes --endpoints={endpoints}\n"
        "Ctrl-C stops them all.",
        flush=True,
    )
    try:
        while not stop.wait(0.5):
            if all(p.poll() is not None for _, p in procs):
                print("raftkv kube up: every component has exited", file=sys.stderr)
                break
    finally:
        for _, p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _, p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        cleanup_tree(args.dir)
    return 0
