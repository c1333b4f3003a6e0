"""Servers for benchmarks: raftkv or etcd, one member or a cluster, on free loopback ports, data in a temp dir.

Every member is launched by ``chaos.launch`` (the one launcher of member processes, which the tests,
the chaos harness and ``raftkv cluster`` use too). ``Server`` is a single-member server; ``Cluster``
is a cluster of ``size`` members (three, as in production) through ``chaos.cluster.LocalCluster``:
raftkv's, or etcd's (the same flags, the etcd binary as the command). Both kinds
of object offer what a benchmark needs: ``kind``, ``endpoints`` (a cluster's leader first, once
started), ``cpu_seconds()`` (summed over every member process) and ``member_cpu_seconds()``.

Kept apart from ``tests/procs.py`` on purpose: benchmarks are not tests and must not import them.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc

from chaos.cluster import LocalCluster
from chaos.launch import RAFTKV, MemberProcess, etcd_binary, member_args, process_cpu_seconds, status
from chaos.ports import free_port
from proto.etcdserverpb import rpc_pb2 as pb

__all__ = [
    "KINDS",
    "Cluster",
    "Server",
    "etcd_binary",
    "exit_on_sigterm",
    "free_port",
    "free_ports",
    "member_command",
    "process_cpu_seconds",
    "started_servers",
    "status",
    "version",
]

KINDS = ("raftkv", "etcd")


def exit_on_sigterm() -> None:
    """Makes SIGTERM raise SystemExit in the main thread, so ``with`` blocks stop the servers they started.

    Cluster members run in sessions of their own (``LocalCluster``), so nothing else would stop them.
    """

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def version(kind: str) -> str:
    """etcd's version, or raftkv's git revision (``+dirty`` with uncommitted changes to tracked files)."""
    if kind == "etcd":
        out = subprocess.run([etcd_binary(), "--version"], capture_output=True, text=True).stdout
        return out.splitlines()[0].split()[-1] if out else "unknown"
    repo = Path(__file__).resolve().parent.parent
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True)
    return "git " + (rev.stdout.strip() or "unknown") + ("+dirty" if dirty.stdout.strip() else "")


def member_command(
    kind: str, name: str, data_dir: Path, client_port: int, peer_port: int, initial_cluster: str, token: str = ""
) -> list[str]:
    """The command line of one member of ``kind``, with etcd's flags (raftkv takes the same).

    Without ``token`` the cluster token and state are left at their defaults (a single member).
    """
    client = f"http://127.0.0.1:{client_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    common = member_args(name, data_dir, client, peer, initial_cluster, token, "new" if token else "")
    if kind == "raftkv":
        return [*RAFTKV, *common]
    return [etcd_binary(), *common, "--log-level=error"]


class Server:
    """One single-member server process of ``kind`` ("raftkv" or "etcd") under ``workdir``."""

    size = 1

    def __init__(self, kind: str, workdir: Path, name: str = "bench") -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown server kind {kind!r} (one of {', '.join(KINDS)})")
        self.kind = kind
        self.name = name
        self.workdir = workdir
        self.data_dir = workdir / f"{kind}.data"
        self.log_path = workdir / f"{kind}.log"
        self.port, self.peer_port = free_ports(2)
        self.member = MemberProcess(name, "127.0.0.1", self.port, self.peer_port, self.data_dir, self.log_path)

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.member.proc

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def endpoints(self) -> list[str]:
        return [self.endpoint]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        peer = f"http://127.0.0.1:{self.peer_port}"
        return member_command(self.kind, self.name, self.data_dir, self.port, self.peer_port, f"{self.name}={peer}")

    def version(self) -> str:
        return version(self.kind)

    def start(self, timeout: float = 30.0) -> Server:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.member.spawn(self.command(), cwd=self.workdir)
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        """Until Status names a leader."""
        self.member.wait_status(timeout, leader=True)

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far (Linux /proc)."""
        return process_cpu_seconds(self.pid)

    def member_cpu_seconds(self) -> list[float]:
        return [self.cpu_seconds()]

    def log_tail(self, chars: int = 4000) -> str:
        return self.member.log_tail(chars)

    def stop(self, timeout: float = 15.0) -> None:
        self.member.stop(signal.SIGTERM, timeout)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Cluster:
    """A fresh cluster of ``size`` members of ``kind`` under ``workdir``, on free loopback ports.

    Members are started by ``chaos.cluster.LocalCluster`` (given free ports, so nothing clashes with
    a cluster on etcd's default ports), etcd's with the etcd binary as the command and the same
    flags. Once every member answers and all agree on a leader,
    ``endpoints`` lists the leader's client endpoint first, then the followers' in member order:
    so a single connection (the single-client row) goes to the leader on both kinds of cluster,
    and connections spread round-robin over the endpoints give every member the same share.
    """

    def __init__(self, kind: str, workdir: Path, size: int = 3) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown server kind {kind!r} (one of {', '.join(KINDS)})")
        if size < 1:
            raise ValueError("a cluster needs at least one member")
        self.kind = kind
        self.size = size
        self.workdir = workdir
        self.token = f"{kind}-bench"
        ports = free_ports(2 * size)
        self.port_pairs = [(ports[2 * i], ports[2 * i + 1]) for i in range(size)]
        self.names = [f"m{i + 1}" for i in range(size)]
        self.leader_name = ""
        self._order = list(range(size))  # member indexes, leader first once started
        self._local: LocalCluster | None = None

    # ---- addresses and processes ----

    @property
    def member_endpoints(self) -> list[str]:
        """Client endpoints in member order (m1, m2, ...)."""
        return [f"127.0.0.1:{client}" for client, _ in self.port_pairs]

    @property
    def endpoints(self) -> list[str]:
        """Client endpoints, the leader's first (once started)."""
        member = self.member_endpoints
        return [member[i] for i in self._order]

    @property
    def endpoint(self) -> str:
        return self.endpoints[0]

    @property
    def initial_cluster(self) -> str:
        return ",".join(
            f"{n}=http://127.0.0.1:{peer}" for n, (_, peer) in zip(self.names, self.port_pairs, strict=True)
        )

    @property
    def pids(self) -> list[int]:
        """Member process ids in member order."""
        if self._local is None:
            return []
        return [m.pid for m in self._local.members if m.pid is not None]

    def log_path(self, i: int) -> Path:
        return self.workdir / f"{self.names[i]}.log"

    def version(self) -> str:
        return version(self.kind)

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far, summed over every member process."""
        return sum(self.member_cpu_seconds())

    def member_cpu_seconds(self) -> list[float]:
        """Per member process, in the order of ``endpoints`` (the leader's first)."""
        pids = self.pids
        return [process_cpu_seconds(pids[i]) for i in self._order]

    def log_tail(self, chars: int = 2000) -> str:
        tails = []
        for i, name in enumerate(self.names):
            with contextlib.suppress(OSError):
                tails.append(f"--- {name}:\n" + self.log_path(i).read_text(errors="replace")[-chars:])
        return "\n".join(tails)

    # ---- lifecycle ----

    def start(self, timeout: float = 60.0) -> Cluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        # members log to <workdir>/m<i>.log, as log_path says, and keep their data in <workdir>/m<i>.etcd
        if self.kind == "raftkv":
            local = LocalCluster(self.workdir, size=self.size, ports=list(self.port_pairs), token=self.token)
        else:
            local = LocalCluster(
                self.workdir,
                size=self.size,
                ports=list(self.port_pairs),
                token=self.token,
                command=[etcd_binary()],
                extra_args=["--log-level=error"],
            )
        self._local = local
        local.start(wait=False)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _running(self) -> list[bool]:
        if self._local is None:
            return []
        return [m.running() for m in self._local.members]

    def _wait_ready(self, timeout: float) -> None:
        """Until every member answers Status and all name the same leader; then orders endpoints leader first."""
        deadline = time.monotonic() + timeout
        while True:
            if not all(self._running()):
                raise RuntimeError(f"a {self.kind} member exited during start:\n{self.log_tail()}")
            statuses: list[pb.StatusResponse | None] = []
            for endpoint in self.member_endpoints:
                try:
                    statuses.append(status(endpoint))
                except grpc.RpcError:
                    statuses.append(None)
            leaders = {s.leader if s is not None else 0 for s in statuses}
            if len(leaders) == 1 and 0 not in leaders:
                (leader,) = leaders
                ids = [s.header.member_id for s in statuses if s is not None]
                if leader in ids:
                    first = ids.index(leader)
                    self._order = [first] + [i for i in range(self.size) if i != first]
                    self.leader_name = self.names[first]
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.kind} cluster has no agreed leader after {timeout:g} s:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self, timeout: float = 15.0) -> None:
        if self._local is not None:
            self._local.stop()
            self._local = None

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def started_servers(kinds: list[str], workdir: Path, log: bool = True) -> Iterator[tuple[list[Server], dict[str, str]]]:
    """Fresh single members of each kind, up for the whole block: (servers, kind -> version)."""
    with contextlib.ExitStack() as stack:
        servers = []
        versions: dict[str, str] = {}
        for kind in kinds:
            server = Server(kind, workdir / kind)
            versions[kind] = server.version()
            if log:
                print(f"starting {kind} ({versions[kind]}) ...", file=sys.stderr, flush=True)
            servers.append(stack.enter_context(server))
        yield servers, versions
