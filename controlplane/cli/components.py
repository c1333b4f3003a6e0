"""The long-running components as commands: ``raftkv kube controller-manager | scheduler | agent``.

Each runs until SIGTERM or SIGINT, then stops cleanly: a leader releases its lock (so a standby
takes over at once), an agent stops the processes of its pods.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path

from controlplane.agent import AgentConfig, NodeAgent
from controlplane.manager import ManagerConfig, run_controllers, run_scheduler, run_with_leader_election
from controlplane.store.etcd import EtcdStore, endpoints_from


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s.%(msecs)03d %(levelname).1s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _bool(s: str) -> bool:
    return s.lower() in ("1", "true", "yes")


def add_manager_arguments(p: argparse.ArgumentParser, default_lock: str) -> None:
    p.add_argument("--endpoints", default=None, help="store endpoints (default: $ETCDCTL_ENDPOINTS or 127.0.0.1:2379)")
    p.add_argument("--id", default=f"{socket.gethostname()}-{os.getpid()}", help="identity in leader election")
    p.add_argument("--leader-elect", default="true", type=_bool, help="run only while holding the lock (default true)")
    p.add_argument("--leader-elect-lock", default=default_lock)
    p.add_argument("--leader-lease-ttl", type=int, default=15, help="seconds (default 15)")
    p.add_argument("--leader-retry-period", type=float, default=2.0, help="seconds between campaigns (default 2)")
    p.add_argument("--resync", type=float, default=30.0, help="informer resync period in seconds (default 30)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--pod-eviction-timeout", type=float, default=0.0, help="seconds a node is NotReady before eviction")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def _manager_config(args: argparse.Namespace) -> ManagerConfig:
    return ManagerConfig(
        identity=args.id,
        leader_elect=args.leader_elect,
        lease_ttl=args.leader_lease_ttl,
        retry_period=args.leader_retry_period,
        resync=args.resync,
        workers=args.workers,
        eviction_timeout=args.pod_eviction_timeout,
    )


def run_controller_manager(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    stop = _stop_on_signals()
    store = EtcdStore(endpoints_from(args.endpoints))
    try:
        run_with_leader_election(store, _manager_config(args), args.leader_elect_lock, run_controllers, stop)
    finally:
        store.close()
    return 0


def run_scheduler_cmd(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    stop = _stop_on_signals()
    store = EtcdStore(endpoints_from(args.endpoints))
    try:
        run_with_leader_election(store, _manager_config(args), args.leader_elect_lock, run_scheduler, stop)
    finally:
        store.close()
    return 0


def add_agent_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoints", default=None, help="store endpoints (default: $ETCDCTL_ENDPOINTS or 127.0.0.1:2379)")
    p.add_argument("--node-name", required=True)
    p.add_argument("--dir", type=Path, default=None, help="where pod logs and state live (default ./kube-data/NODE)")
    p.add_argument("--cpu", default="4", help="allocatable cpu (default 4)")
    p.add_argument("--memory", default="8Gi", help="allocatable memory (default 8Gi)")
    p.add_argument("--max-pods", type=int, default=110)
    p.add_argument("--node-labels", default="", help="k=v,k2=v2")
    p.add_argument("--node-lease-ttl", type=int, default=10, help="heartbeat lease TTL in seconds (default 10)")
    p.add_argument("--sync-period", type=float, default=1.0, help="seconds between full pod syncs (default 1)")
    p.add_argument("--restart-backoff", type=float, default=1.0, help="first restart delay in seconds, doubling")
    p.add_argument("--restart-backoff-cap", type=float, default=60.0)
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def run_agent(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    stop = _stop_on_signals()
    labels = dict(kv.split("=", 1) for kv in args.node_labels.split(",") if "=" in kv)
    cfg = AgentConfig(
        node_name=args.node_name,
        root=(args.dir or Path("kube-data") / args.node_name).resolve(),
        cpu=args.cpu,
        memory=args.memory,
        pods=args.max_pods,
        labels=labels,
        lease_ttl=args.node_lease_ttl,
        sync_period=args.sync_period,
        restart_backoff=args.restart_backoff,
        restart_backoff_cap=args.restart_backoff_cap,
    )
    store = EtcdStore(endpoints_from(args.endpoints))
    try:
        NodeAgent(store, cfg).run(stop)
    finally:
        store.close()
    return 0
