"""Local clusters of real member processes on 127.0.0.1: start, stop, kill, pause, restart.

Used by ``raftkv cluster`` (the one-command local cluster), by the chaos harness, the benchmarks and
the integration tests. Each member is a ``chaos.launch.MemberProcess``: by default a ``raftkv serve``
child process (``command`` may name another, etcd's) with etcd's flags; its data
lives in ``<base_dir>/<name>.etcd`` and its output goes to ``<base_dir>/<name>.log`` and, when a
sink is given, line by line to the sink prefixed with the member's name. Members added at run
time (``add_process``) join with ``--initial-cluster-state existing``; removed ones are dropped
with ``forget``.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import grpc

from chaos import security
from chaos.launch import RAFTKV, LineSink, MemberProcess, member_args, status

__all__ = ["DEFAULT_PORTS", "LineSink", "LocalCluster", "MemberProcess"]

# The ports etcd's own local-cluster Procfile uses, so muscle memory and scripts carry over.
DEFAULT_PORTS = ((2379, 2380), (22379, 22380), (32379, 32380))


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
        self.command = command or list(RAFTKV)
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
        flags = member_args(m.name, m.data_dir, m.client_url, m.peer_url, self.initial_cluster, self.token, state)
        return [*self.command, *flags, *m.args]

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
        # a session of its own: Ctrl-C in a terminal reaches the launcher, which stops members in order
        m.spawn(self.argv(m), sink=self.sink, new_session=True)
        if wait:
            self.wait_member(m, timeout)
        return m

    def wait_member(self, m: MemberProcess, timeout: float = 30.0) -> None:
        m.wait_status(timeout, channel=security.channel)

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
                    leaders.add(status(m.endpoint, 1.0, security.channel).leader)
                except grpc.RpcError:
                    leaders.add(0)
            if len(leaders) == 1 and 0 not in leaders:
                return leaders.pop()
            if time.monotonic() > deadline:
                raise TimeoutError(f"no agreed leader after {timeout}s (members report {sorted(leaders)})")
            time.sleep(0.1)

    def signal_member(self, name: str, sig: int) -> None:
        self.member(name).send_signal(sig)

    def stop_member(self, name: str, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        return self.member(name).stop(sig, timeout)

    def kill_member(self, name: str) -> int | None:
        return self.stop_member(name, signal.SIGKILL)

    def stop(self) -> None:
        for m in self.members:  # all at once, then each waited for
            m.send_signal(signal.SIGTERM)
            m.send_signal(signal.SIGCONT)  # a paused member must be resumed to act on SIGTERM
        for m in self.members:
            self.stop_member(m.name)
