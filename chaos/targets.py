"""What a chaos run runs against: the members, their endpoints, and the levers on them.

- ``LocalTarget``: a cluster the harness starts itself, raftkv (on per-member loopback
  addresses, which raftkv dials from) or real etcd (one network namespace per member, see
  ``chaos.netns``, because etcd does not choose its source address). Every fault is possible;
  membership changes (``remove_member``, ``wipe``, ``add_member``) on raftkv clusters.
- ``ExternalTarget``: endpoints somebody else started, optionally with their process ids. With
  pids, members can be paused and killed; a killed member is restarted with the command line,
  environment and working directory read from /proc before it was killed. Partitions and
  failpoints need a cluster the harness started.

Members are named m1, m2, ... in endpoint order. Status calls find the leader and tell when the
cluster has converged after the faults are healed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import grpc

from chaos import security
from chaos.cluster import LocalCluster, MemberProcess
from chaos.launch import RAFTKV, etcd_binary
from chaos.netfault import Partitioner
from chaos.netns import NetnsCluster, PrivateNetwork
from chaos.ports import free_port
from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc

FAILPOINTS_VAR = "RAFTKV_FAILPOINTS"


class TargetError(RuntimeError):
    pass


def status(endpoint: str, timeout: float = 1.0) -> pb.StatusResponse | None:
    try:
        with security.channel(endpoint) as ch:
            return rpc_pb2_grpc.MaintenanceStub(ch).Status(pb.StatusRequest(), timeout=timeout)
    except grpc.RpcError:
        return None


class Target:
    kind = "target"
    capabilities: frozenset[str] = frozenset()

    def __init__(self, names: list[str], endpoints: list[str]) -> None:
        self.names = names
        self._endpoints = dict(zip(names, endpoints, strict=True))
        self._ids: dict[int, str] = {}

    # ---- addresses ----

    def endpoint(self, name: str) -> str:
        return self._endpoints[name]

    @property
    def endpoints(self) -> list[str]:
        return [self._endpoints[n] for n in self.names]

    def host(self, name: str) -> str:
        return self.endpoint(name).rsplit(":", 1)[0]

    # ---- lifecycle (local targets only) ----

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    # ---- levers ----

    def running(self, name: str) -> bool:
        raise NotImplementedError

    def kill(self, name: str) -> None:
        raise TargetError(f"{self.kind}: cannot kill members")

    def restart(self, name: str, env: dict[str, str] | None = None, wait: bool = True) -> None:
        raise TargetError(f"{self.kind}: cannot restart members")

    def pause(self, name: str) -> None:
        raise TargetError(f"{self.kind}: cannot pause members")

    def resume(self, name: str) -> None:
        raise TargetError(f"{self.kind}: cannot resume members")

    def partitioner(self) -> Partitioner:
        raise TargetError(f"{self.kind}: cannot partition members")

    def log_path(self, name: str) -> Path | None:
        return None

    # ---- cluster state ----

    def member_name(self, member_id: int) -> str | None:
        if member_id not in self._ids:
            for name in self.names:
                st = status(self.endpoint(name))
                if st is not None:
                    self._ids[st.header.member_id] = name
        return self._ids.get(member_id)

    def leader(self) -> str | None:
        """The member most running members name as leader, or None."""
        votes: dict[int, int] = {}
        for name in self.names:
            if not self.running(name):
                continue
            st = status(self.endpoint(name), timeout=0.5)
            if st is not None and st.leader:
                votes[st.leader] = votes.get(st.leader, 0) + 1
        if not votes:
            return None
        return self.member_name(max(votes, key=lambda k: votes[k]))

    def wait_converged(self, timeout: float = 60.0) -> dict[str, object]:
        """Waits until every member answers, all name the same leader, and all applied the same index."""
        deadline = time.monotonic() + timeout
        last: dict[str, object] = {}
        while True:
            sts = {n: status(self.endpoint(n)) for n in self.names}
            leaders = {s.leader for s in sts.values() if s is not None}
            applied = {s.raftAppliedIndex for s in sts.values() if s is not None}
            revisions = {s.header.revision for s in sts.values() if s is not None}
            last = {
                "answering": sorted(n for n, s in sts.items() if s is not None),
                "leaders": sorted(leaders),
                "applied": sorted(applied),
                "revisions": sorted(revisions),
            }
            agreed = len(leaders) == 1 and 0 not in leaders and len(applied) == 1 and len(revisions) == 1
            if agreed and None not in sts.values():
                return {"converged": True, **last}
            if time.monotonic() > deadline:
                return {"converged": False, **last}
            time.sleep(0.25)


class LocalTarget(Target):
    """A raftkv or etcd cluster started by the harness in ``base_dir``."""

    def __init__(
        self,
        base_dir: Path,
        kind: str = "raftkv",
        size: int = 3,
        member_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        netns: bool | None = None,
        ports: list[tuple[int, int]] | None = None,
    ) -> None:
        self.kind = kind
        self.network: PrivateNetwork | None = None
        netns = kind == "etcd" if netns is None else netns
        if kind == "etcd":
            try:
                command = [etcd_binary(), "--log-level=warn", "--logger=zap"]
            except RuntimeError:
                raise TargetError("etcd not found: install Debian's etcd-server") from None
        elif kind == "raftkv":
            command = list(RAFTKV)
        else:
            raise TargetError(f"unknown local cluster kind {kind!r}")
        if netns:
            self.network = PrivateNetwork(size)
            self.cluster: LocalCluster = NetnsCluster(
                base_dir, self.network, command=command, extra_args=member_args, env=env
            )
        else:
            ports = ports or [(free_port(), free_port()) for _ in range(size)]
            self.cluster = LocalCluster(
                base_dir, size=size, ports=ports, command=command, extra_args=member_args, env=env, distinct_hosts=True
            )
        super().__init__([m.name for m in self.cluster.members], [m.endpoint for m in self.cluster.members])
        self.capabilities = frozenset(
            {"kill", "pause", "partition"} | ({"failpoint", "member"} if kind == "raftkv" else set())
        )
        self._partitioner: Partitioner | None = None
        self._base_env = {m.name: dict(m.env) for m in self.cluster.members}
        self.pki: security.Pki | None = None  # a --secure run's certificates (chaos.runner sets them)

    def start(self, timeout: float = 60.0) -> None:
        if self.network is not None:
            self.network.up()
        try:
            self.cluster.start(timeout=timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        try:
            if self._partitioner is not None:
                with contextlib.suppress(Exception):
                    self._partitioner.heal()
            self.cluster.stop()
        finally:
            if self.network is not None:
                self.network.down()

    def running(self, name: str) -> bool:
        return self.cluster.member(name).running()

    def pid(self, name: str) -> int | None:
        return self.cluster.member(name).pid

    def kill(self, name: str) -> None:
        self.cluster.kill_member(name)

    def restart(self, name: str, env: dict[str, str] | None = None, wait: bool = True) -> None:
        m = self.cluster.member(name)
        if m.running():
            self.cluster.kill_member(name)
        elif m.proc is not None:
            self.cluster.stop_member(name)  # reap an exited process
        m.env = {**self._base_env[name], **(env or {})}
        self.cluster.start_member(name, wait=wait, timeout=30)

    def pause(self, name: str) -> None:
        self.cluster.signal_member(name, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.cluster.signal_member(name, signal.SIGCONT)

    # ---- membership (raftkv) ----

    def _ask(self, avoid: str, call: str, request: object, timeout: float = 60.0) -> object:
        """A Cluster call through any other running member, asked again while the cluster says it cannot
        take it yet (the strict reconfiguration check, no leader, a change in progress)."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for m in self.cluster.members:
                if m.name == avoid or not m.running():
                    continue
                try:
                    # membership changes are for admins when auth is on (--secure): the harness's root
                    admin = self.pki.root if self.pki is not None else None
                    with security.channel(m.endpoint, admin) as ch:
                        return getattr(rpc_pb2_grpc.ClusterStub(ch), call)(request, timeout=10)
                except grpc.RpcError as exc:
                    last = f"{exc.code().name}: {exc.details()}"
                    if exc.code() not in (
                        grpc.StatusCode.UNAVAILABLE,
                        grpc.StatusCode.FAILED_PRECONDITION,
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                    ):
                        raise TargetError(f"{call}: {last}") from None
            time.sleep(0.5)
        raise TargetError(f"{call} not taken within {timeout:.0f}s ({last})")

    def _member_id(self, m: MemberProcess) -> int:
        listed = self._ask(m.name, "MemberList", pb.MemberListRequest())
        for info in listed.members:  # type: ignore[attr-defined]
            if m.peer_url in info.peerURLs:
                return info.ID
        raise TargetError(f"{m.name} ({m.peer_url}) is not a member")

    def remove_member(self, name: str) -> None:
        """Removes a member from the cluster (MemberRemove through another one); it stops by itself."""
        m = self.cluster.member(name)
        self._ask(name, "MemberRemove", pb.MemberRemoveRequest(ID=self._member_id(m)))
        if m.proc is not None:
            try:
                m.proc.wait(30)
            except subprocess.TimeoutExpired:
                raise TargetError(f"{name} still runs 30 s after its removal") from None
            self.cluster.stop_member(name)  # reap it

    def wipe(self, name: str) -> None:
        """Deletes a stopped member's data directory (its disk is lost)."""
        m = self.cluster.member(name)
        if m.running():
            raise TargetError(f"{name} runs: stop it before wiping its data")
        shutil.rmtree(m.data_dir, ignore_errors=True)

    def add_member(self, name: str, wait: bool = True) -> None:
        """Adds the member afresh (MemberAdd: a new id, the same URLs) and starts it with an empty data
        directory, joining the cluster (--initial-cluster-state existing)."""
        m = self.cluster.member(name)
        if m.running() or m.data_dir.exists():
            raise TargetError(f"{name} must be stopped and wiped before it is added again")
        self._ask(name, "MemberAdd", pb.MemberAddRequest(peerURLs=[m.peer_url]))
        m.join = True
        m.env = dict(self._base_env[name])
        self.cluster.start_member(name, wait=wait, timeout=60)

    def partitioner(self) -> Partitioner:
        if self._partitioner is None:
            ports = [m.peer_port for m in self.cluster.members]
            namespaces = self.network.namespaces if self.network is not None else ()
            self._partitioner = Partitioner(ports, namespaces=namespaces)
        return self._partitioner

    def host(self, name: str) -> str:
        return self.cluster.member(name).host

    def log_path(self, name: str) -> Path | None:
        return self.cluster.member(name).log_path


class _Captured:
    """How to start a process again: its argv, environment and working directory from /proc."""

    def __init__(self, pid: int) -> None:
        proc = Path(f"/proc/{pid}")
        self.argv = [a.decode() for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
        env = {}
        for item in (proc / "environ").read_bytes().split(b"\0"):
            k, sep, v = item.decode(errors="replace").partition("=")
            if sep:
                env[k] = v
        self.env = env
        self.cwd = os.readlink(proc / "cwd")


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process pid listens on (its sockets, looked up in its network namespace)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            link = os.readlink(fd)
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # state LISTEN, and one of pid's sockets
                    ports.add(int(fields[1].rpartition(":")[2], 16))
    return ports


class ExternalTarget(Target):
    """Endpoints of a running cluster; with pids, members can be paused, killed and restarted."""

    kind = "external"

    def __init__(self, endpoints: list[str], pids: list[int] | None = None, log_dir: Path | None = None) -> None:
        names = [f"m{i + 1}" for i in range(len(endpoints))]
        super().__init__(names, endpoints)
        self.pids: dict[str, int] = {}
        self._captured: dict[str, _Captured] = {}
        self._procs: dict[str, MemberProcess] = {}  # members restarted here (chaos.launch)
        self.log_dir = log_dir
        if pids:
            if len(pids) != len(endpoints):
                raise TargetError(
                    f"{len(endpoints)} endpoints but {len(pids)} pids: give one pid per endpoint, in order"
                )
            for name, endpoint, pid in zip(names, endpoints, pids, strict=True):
                self.pids[name] = pid
                try:
                    self._captured[name] = _Captured(pid)
                    ports = listening_ports(pid)
                except OSError as exc:
                    raise TargetError(f"cannot read /proc/{pid}: {exc}") from None
                port = int(endpoint.rpartition(":")[2])
                if port not in ports:
                    # killing and restarting the wrong process (a wrapper shell, say) would be a mess
                    raise TargetError(
                        f"pid {pid} ({' '.join(self._captured[name].argv)[:80]}) does not listen on port {port} "
                        f"of {endpoint}: give the member processes' own pids, in endpoint order"
                    )
            self.capabilities = frozenset({"kill", "pause"})

    def running(self, name: str) -> bool:
        pid = self.pids.get(name)
        if pid is None:
            return True  # not ours to know: assume so
        restarted = self._procs.get(name)
        if restarted is not None:
            return restarted.running()
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                return False
        return True

    def _pid(self, name: str) -> int:
        if name not in self.pids:
            raise TargetError(f"no pid for {name}: pass --pids to kill or pause members")
        return self.pids[name]

    def kill(self, name: str) -> None:
        pid = self._pid(name)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        restarted = self._procs.get(name)
        if restarted is not None and restarted.proc is not None:
            restarted.proc.wait(10)
        else:
            deadline = time.monotonic() + 10
            while self.running(name) and time.monotonic() < deadline:
                time.sleep(0.05)

    def restart(self, name: str, env: dict[str, str] | None = None, wait: bool = True) -> None:
        cap = self._captured.get(name)
        if cap is None:
            raise TargetError(f"cannot restart {name}: its pid was not given")
        if self.running(name):
            self.kill(name)
        host, _, port = self.endpoint(name).rpartition(":")
        log_path = self.log_dir / f"{name}.log" if self.log_dir else Path(os.devnull)
        member = MemberProcess(name, host, int(port), 0, Path(cap.cwd), log_path)
        # its own environment and directory, as captured from /proc: not ours
        member.spawn(cap.argv, env={**cap.env, **(env or {})}, inherit_env=False, cwd=cap.cwd, new_session=True)
        self._procs[name] = member
        self.pids[name] = member.pid or 0
        if wait:
            try:
                member.wait_status(30.0, channel=security.channel)
            except RuntimeError:
                code = member.proc.returncode if member.proc is not None else "?"
                raise TargetError(f"{name} exited with {code} after restart") from None
            except TimeoutError:
                raise TargetError(f"{name} did not answer within 30 s of its restart") from None

    def pause(self, name: str) -> None:
        os.kill(self._pid(name), signal.SIGSTOP)

    def resume(self, name: str) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._pid(name), signal.SIGCONT)

    def stop(self) -> None:
        """Leaves the cluster running, resumed, with every member it killed restarted."""
        for name in self.pids:
            with contextlib.suppress(TargetError, OSError):
                self.resume(name)
