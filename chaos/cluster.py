"""Local clusters of real member processes on 127.0.0.1: start, stop, kill, pause, restart.

Used by ``raftkv cluster`` (the one-command local cluster), by the chaos harness and by the
integration tests. Each member is a ``raftkv serve`` child process with etcd's flags; its data
lives in ``<base_dir>/<name>.etcd`` and its output goes to ``<base_dir>/<name>.log`` and, when a
sink is given, line by line to the sink prefixed with the member's name. Members added at run
time (``add_process``) join with ``--initial-cluster-state existing``; removed ones are dropped
with ``forget``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from chaos import security
from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc

LineSink = Callable[[str, str], None]  # (member name, line)

# The ports etcd's own local-cluster Procfile uses, so muscle memory and scripts carry over.
DEFAULT_PORTS = ((2379, 2380), (22379, 22380), (32379, 32380))


@dataclass
class MemberProcess:
    name: str
    host: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    join: bool = False  # a member added at run time: its first start joins (--initial-cluster-state existing)
    scheme: str = "http"  # https for a member with TLS (chaos.security)
    peer_scheme: str = ""  # the peer URLs' scheme when it is not the client URLs'
    proc: subprocess.Popen | None = None
    _pump: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"{self.peer_scheme or self.scheme}://{self.host}:{self.peer_port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class LocalCluster:
    def __init__(
        self,
        base_dir: Path,
        size: int = 3,
        ports: list[tuple[int, int]] | None = None,
        token: str = "raftkv-local",
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        sink: LineSink | None = None,
        command: list[str] | None = None,
        distinct_hosts: bool = False,
    ) -> None:
        """distinct_hosts puts member i on 127.0.0.(i+1), so packet filters can partition them."""
        self.base_dir = Path(base_dir)
        ports = ports or list(DEFAULT_PORTS[:size])
        if len(ports) != size:
            raise ValueError(f"{size} members need {size} port pairs, got {len(ports)}")
        self.token = token
        self.sink = sink
        self.command = command or [sys.executable, "-m", "raftkv_cmd.main", "serve"]
        self.members = [
            MemberProcess(
                name=f"m{i + 1}",
                host=f"127.0.0.{i + 1}" if distinct_hosts else "127.0.0.1",
                client_port=cp,
                peer_port=pp,
                data_dir=self.base_dir / f"m{i + 1}.etcd",
                log_path=self.base_dir / f"m{i + 1}.log",
                args=list(extra_args or []),
                env=dict(env or {}),
            )
            for i, (cp, pp) in enumerate(ports)
        ]

    # ---- addresses ----

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    @property
    def endpoints(self) -> str:
        """The form etcdctl's --endpoints takes."""
        return ",".join(m.endpoint for m in self.members)

    def member(self, name: str) -> MemberProcess:
        for m in self.members:
            if m.name == name:
                return m
        raise KeyError(name)

    # ---- lifecycle ----

    def add_process(self, name: str, client_port: int, peer_port: int) -> MemberProcess:
        """A new member process (not started) for a member added at run time (etcdctl member add): its
        first start joins the cluster. --initial-cluster lists every process of the cluster."""
        if any(m.name == name for m in self.members):
            raise ValueError(f"{name} is already a member process")
        base = self.members[0]
        m = MemberProcess(
            name=name,
            host=base.host,
            client_port=client_port,
            peer_port=peer_port,
            data_dir=self.base_dir / f"{name}.etcd",
            log_path=self.base_dir / f"{name}.log",
            args=list(base.args),
            env=dict(base.env),
            scheme=base.scheme,
            peer_scheme=base.peer_scheme,
            join=True,
        )
        self.members.append(m)
        return m

    def forget(self, name: str) -> MemberProcess:
        """Drops a member process that was removed from the cluster (it must have stopped)."""
        m = self.member(name)
        if m.running():
            raise RuntimeError(f"{name} still runs")
        self.members.remove(m)
        return m

    def argv(self, m: MemberProcess) -> list[str]:
        state = "existing" if m.join or (m.data_dir / "member").exists() else "new"
        return [
            *self.command,
            f"--name={m.name}",
            f"--data-dir={m.data_dir}",
            f"--listen-client-urls={m.client_url}",
            f"--advertise-client-urls={m.client_url}",
            f"--listen-peer-urls={m.peer_url}",
            f"--initial-advertise-peer-urls={m.peer_url}",
            f"--initial-cluster={self.initial_cluster}",
            f"--initial-cluster-token={self.token}",
            f"--initial-cluster-state={state}",
            *m.args,
        ]

    def start(self, wait: bool = True, timeout: float = 30.0) -> None:
        """Starts every member; if they do not all come up, stops the ones that did and raises."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        try:
            for m in self.members:
                self.start_member(m.name, wait=False)
            if wait:
                self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def start_member(self, name: str, wait: bool = True, timeout: float = 30.0) -> MemberProcess:
        m = self.member(name)
        if m.running():
            return m
        log = open(m.log_path, "ab")  # noqa: SIM115 (owned by the pump thread)
        m.proc = subprocess.Popen(
            self.argv(m),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **m.env},
            start_new_session=True,  # Ctrl-C in a terminal reaches the launcher, which stops members in order
        )
        m._pump = threading.Thread(target=self._pump_output, args=(m, m.proc, log), daemon=True)
        m._pump.start()
        if wait:
            self.wait_member(m, timeout)
        return m

    def _pump_output(self, m: MemberProcess, proc: subprocess.Popen, log: object) -> None:
        assert proc.stdout is not None
        with log:  # type: ignore[attr-defined]
            for raw in proc.stdout:
                log.write(raw)  # type: ignore[attr-defined]
                log.flush()  # type: ignore[attr-defined]
                if self.sink is not None:
                    self.sink(m.name, raw.decode(errors="replace").rstrip("\n"))

    def wait_member(self, m: MemberProcess, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not m.running():
                raise RuntimeError(f"{m.name} exited with {m.proc.returncode if m.proc else '?'}; see {m.log_path}")
            try:
                with security.channel(m.endpoint) as ch:
                    rpc_pb2_grpc.MaintenanceStub(ch).Status(pb.StatusRequest(), timeout=1, wait_for_ready=True)
                return
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{m.name} did not come up on {m.endpoint}; see {m.log_path}") from None
                time.sleep(0.05)

    def wait_ready(self, timeout: float = 30.0) -> int:
        """Waits for every running member to answer and for them to agree on a leader; returns its id."""
        deadline = time.monotonic() + timeout
        for m in self.members:
            if m.running():
                self.wait_member(m, max(1.0, deadline - time.monotonic()))
        while True:
            leaders = set()
            for m in self.members:
                if not m.running():
                    continue
                try:
                    with security.channel(m.endpoint) as ch:
                        st = rpc_pb2_grpc.MaintenanceStub(ch).Status(pb.StatusRequest(), timeout=1)
                    leaders.add(st.leader)
                except grpc.RpcError:
                    leaders.add(0)
            if len(leaders) == 1 and 0 not in leaders:
                return leaders.pop()
            if time.monotonic() > deadline:
                raise TimeoutError(f"no agreed leader after {timeout}s (members report {sorted(leaders)})")
            time.sleep(0.1)

    def signal_member(self, name: str, sig: int) -> None:
        m = self.member(name)
        if m.running():
            os.kill(m.proc.pid, sig)  # type: ignore[union-attr]

    def stop_member(self, name: str, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        m = self.member(name)
        if m.proc is None:
            return None
        if m.proc.poll() is None:
            with_cont = sig != signal.SIGKILL
            m.proc.send_signal(sig)
            if with_cont:  # a paused member must be resumed to act on SIGTERM
                os.kill(m.proc.pid, signal.SIGCONT)
        try:
            code = m.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            m.proc.kill()
            code = m.proc.wait()
        if m._pump is not None:
            m._pump.join(5)
        m.proc = None
        return code

    def kill_member(self, name: str) -> int | None:
        return self.stop_member(name, signal.SIGKILL)

    def stop(self) -> None:
        for m in self.members:
            if m.running():
                m.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
                os.kill(m.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
        for m in self.members:
            self.stop_member(m.name)
