"""Real processes for the control-plane tests: a three-member store (raftkv or etcd 3.4.23), the
control-plane components as `raftkv kube ...` processes, the CLI, and observation helpers.

Every process runs in its own process group and is stopped in ``close()``, pod processes included.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import grpc

from chaos.cluster import LocalCluster, MemberProcess
from controlplane.api import kinds
from controlplane.api.meta import Obj
from controlplane.client import Client, decode
from controlplane.runtime import cleanup_tree
from controlplane.store.etcd import EtcdStore
from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc
from tests.procs import ETCD, REPO, free_port

T = TypeVar("T")
KUBE = [sys.executable, "-m", "raftkv_cmd.main", "kube"]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def store_cluster(kind: str, base: Path) -> LocalCluster:
    ports = [(free_port(), free_port()) for _ in range(3)]
    if kind == "etcd":
        assert ETCD is not None, "etcd-server must be installed (scripts/test installs it)"
        return LocalCluster(
            base, size=3, ports=ports, command=[ETCD], extra_args=["--log-level=error"], token="cp-etcd"
        )
    return LocalCluster(base, size=3, ports=ports, token="cp-raftkv")


def store_leader(c: LocalCluster, timeout: float = 30.0) -> MemberProcess:
    deadline = time.monotonic() + timeout
    while True:
        lead = c.wait_ready(timeout)
        for m in c.members:
            if not m.running():
                continue
            try:
                with grpc.insecure_channel(m.endpoint) as ch:
                    st = rpc_pb2_grpc.MaintenanceStub(ch).Status(pb.StatusRequest(), timeout=2)
            except grpc.RpcError:
                continue
            if st.header.member_id == lead:
                return m
        assert time.monotonic() < deadline, "no running store leader"
        time.sleep(0.1)


def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 60.0, interval: float = 0.1) -> T:
    """Polls fn until it returns something true; the timeout bounds a hang, keep it generous."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            got = fn()
        except Exception as exc:  # the store may be electing: keep polling
            got, last = None, exc
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last!r})")
        time.sleep(interval)


class ControlPlane:
    """Components as processes against a store cluster; logs under ``base``."""

    def __init__(self, endpoints: str, base: Path) -> None:
        self.endpoints = endpoints
        self.base = base
        self.base.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.store = EtcdStore(endpoints, retry_for=20.0)
        self.client = Client(self.store)

    # ---- components ----

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.base / f"{name}.log", "ab")  # noqa: SIM115 (inherited by the child; closed below)
        p = subprocess.Popen(
            [*KUBE, *args, f"--endpoints={self.endpoints}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=ENV,
            start_new_session=True,
        )
        log.close()
        self.procs[name] = p
        return p

    def start_controller_manager(self, name: str, ttl: int = 3) -> None:
        self.start(
            name,
            "controller-manager",
            f"--id={name}",
            f"--leader-lease-ttl={ttl}",
            "--leader-retry-period=0.2",
            "--resync=10",
        )

    def start_scheduler(self) -> None:
        self.start("scheduler", "scheduler", "--id=scheduler", "--leader-elect=false", "--resync=10")

    def node_dir(self, node: str) -> Path:
        return self.base / node

    def start_agent(self, node: str, ttl: int = 3) -> None:
        self.start(
            node,
            "agent",
            f"--node-name={node}",
            f"--dir={self.node_dir(node)}",
            "--cpu=2",
            "--memory=4Gi",
            f"--node-lease-ttl={ttl}",
            "--sync-period=0.5",
            "--restart-backoff=0.2",
        )

    def kill(self, name: str) -> None:
        """SIGKILL to the component's process group (a crash, not a shutdown)."""
        p = self.procs.pop(name)
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)

    def crash_node(self, node: str) -> None:
        """The node dies: its agent and every process it ran."""
        self.kill(node)
        cleanup_tree(self.node_dir(node))

    def close(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in self.procs.values():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.procs.clear()
        cleanup_tree(self.base)
        self.store.close()

    def logs(self) -> str:
        out = []
        for f in sorted(self.base.glob("*.log")):
            out.append(f"===== {f.name} (tail)\n" + "\n".join(f.read_text(errors="replace").splitlines()[-40:]))
        return "\n".join(out)

    # ---- the CLI ----

    def kube(self, *args: str, check: bool = True, timeout: float = 120, stdin: str | None = None) -> str:
        r = subprocess.run(
            [*KUBE, *args, f"--endpoints={self.endpoints}"],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=ENV,
            timeout=timeout,
            input=stdin,
        )
        if check and r.returncode != 0:
            raise AssertionError(f"raftkv kube {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r.stdout + r.stderr

    # ---- observation ----

    def snapshot(self) -> dict[str, list[Obj]]:
        """Every object, from one Range: a consistent cut of the whole registry."""
        kvs, _ = self.store.list("/registry/")
        out: dict[str, list[Obj]] = {k.kind: [] for k in kinds.ALL}
        for kv in kvs:
            kind, _, _ = kinds.parse_key(kv.key)
            out[kind.kind].append(decode(kv))
        return out

    def pods(self, app: str) -> list[Obj]:
        objs, _ = self.client.list(kinds.POD, "default")
        return [p for p in objs if p["metadata"].get("labels", {}).get("app") == app]
