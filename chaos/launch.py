"""The one launcher of member processes: raftkv (``raftkv serve``) or etcd, for the tests, the chaos
harness, the benchmarks and ``raftkv cluster``.

A ``MemberProcess`` is one member: its name, addresses, data directory and log file, and the child
process once started (``spawn``). Output is appended to the log file, and with a sink also handed
over line by line (``raftkv cluster`` prefixes each with the member's name). A member can be waited
for (``wait_status``: until it answers Maintenance/Status, or until it also names a leader),
signalled, paused and resumed, stopped (SIGTERM then, after a timeout, SIGKILL; a paused member is
resumed so that it can act on the signal) and killed, and its CPU time read from /proc.

``member_args`` spells a member's etcd flags, which raftkv takes too; ``RAFTKV`` and ``etcd_binary``
are the two programs. Ports come from ``chaos.ports.free_port`` (the one port allocator) unless a
caller gives fixed ones. Who puts members together: ``chaos.cluster.LocalCluster`` (a cluster),
``tests.procs`` (single members for the integration tests), ``bench.procs`` (servers to measure),
``chaos.targets.ExternalTarget`` (restarting a member it was given by pid).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import grpc

from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc

LineSink = Callable[[str, str], None]  # (member name, line)
ChannelFactory = Callable[[str], grpc.Channel]  # endpoint -> channel

RAFTKV = [sys.executable, "-m", "raftkv_cmd.main", "serve"]
"""The command that runs one raftkv member (etcd's flags follow)."""

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def etcd_binary() -> str:
    """Debian's etcd (the reference the tests and benchmarks compare against)."""
    etcd = shutil.which("etcd")
    if etcd is None:
        raise RuntimeError("etcd is not installed (apt-get install etcd-server)")
    return etcd


def member_args(
    name: str,
    data_dir: Path,
    client_url: str,
    peer_url: str,
    initial_cluster: str,
    token: str = "",
    state: str = "",
) -> list[str]:
    """One member's etcd flags (raftkv takes the same); without token or state they keep etcd's defaults."""
    args = [
        f"--name={name}",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client_url}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster={initial_cluster}",
    ]
    if token:
        args.append(f"--initial-cluster-token={token}")
    if state:
        args.append(f"--initial-cluster-state={state}")
    return args


def insecure_channel(endpoint: str) -> grpc.Channel:
    return grpc.insecure_channel(endpoint)


def status(
    endpoint: str, timeout: float = 1.0, channel: ChannelFactory = insecure_channel, wait_for_ready: bool = False
) -> pb.StatusResponse:
    """Maintenance/Status on a fresh channel, so no reconnect backoff delays a readiness check
    (wait_for_ready: wait for the connection within timeout instead of failing at once)."""
    with channel(endpoint) as ch:
        stub = rpc_pb2_grpc.MaintenanceStub(ch)
        return stub.Status(pb.StatusRequest(), timeout=timeout, wait_for_ready=wait_for_ready)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time process ``pid`` (all its threads) has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass(eq=False)
class MemberProcess:
    """One member: where it listens and keeps its data, and its process once spawned (compared, and
    hashed, by identity: it is one process)."""

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
    proc: subprocess.Popen[bytes] | None = None
    _pump: threading.Thread | None = None
    _log: BinaryIO | None = None

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

    # ---- starting ----

    def spawn(
        self,
        argv: list[str],
        *,
        sink: LineSink | None = None,
        new_session: bool = False,
        cwd: Path | str | None = None,
        env: dict[str, str] | None = None,
        inherit_env: bool = True,
    ) -> subprocess.Popen[bytes]:
        """Starts argv as this member (environment: ours unless not inherit_env, then ``self.env``, then
        env). Output is appended to log_path; with sink, a thread also hands it over line by line.
        new_session puts the member in a session of its own (Ctrl-C in a terminal then reaches only the
        launcher, which stops members in order)."""
        if self.running():
            raise RuntimeError(f"{self.name} is running already")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop, or by the pump)
        full_env = {**(os.environ if inherit_env else {}), **self.env, **(env or {})}
        try:
            proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE if sink is not None else log,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd=cwd,
                start_new_session=new_session,
            )
        except BaseException:
            log.close()
            raise
        self.proc = proc
        if sink is not None:
            self._log = None
            self._pump = threading.Thread(target=self._pump_output, args=(proc, log, sink), daemon=True)
            self._pump.start()
        else:
            self._log = log
            self._pump = None
        return proc

    def _pump_output(self, proc: subprocess.Popen[bytes], log: BinaryIO, sink: LineSink) -> None:
        assert proc.stdout is not None
        with log:
            for raw in proc.stdout:
                log.write(raw)
                log.flush()
                sink(self.name, raw.decode(errors="replace").rstrip("\n"))

    def wait_status(
        self, timeout: float = 30.0, *, leader: bool = False, channel: ChannelFactory = insecure_channel
    ) -> pb.StatusResponse:
        """Until the member answers Status (and with leader, names one); a fresh channel each try, so no
        reconnect backoff. RuntimeError if it exits meanwhile, TimeoutError after timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running():
                code = self.proc.returncode if self.proc is not None else "?"
                raise RuntimeError(f"{self.name} exited with {code}; see {self.log_path}:\n{self.log_tail()}")
            try:
                st = status(self.endpoint, 1.0, channel, wait_for_ready=True)
                if st.leader or not leader:
                    return st
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                what = "not ready (with a leader)" if leader else "did not come up"
                raise TimeoutError(f"{self.name} {what} on {self.endpoint}; see {self.log_path}:\n{self.log_tail()}")
            time.sleep(0.05)

    # ---- signals and stopping ----

    def send_signal(self, sig: int) -> None:
        if self.proc is not None and self.running():
            os.kill(self.proc.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        """Sends sig (resuming a paused member so that it acts on it), waits up to timeout, then SIGKILLs;
        returns the exit code (None if it was never started)."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
            if sig != signal.SIGKILL:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        if self._pump is not None:
            self._pump.join(5)
            self._pump = None
        if self._log is not None:
            self._log.close()
            self._log = None
        self.proc = None
        return code

    def kill(self) -> int | None:
        return self.stop(signal.SIGKILL)

    # ---- looking at it ----

    def cpu_seconds(self) -> float:
        if self.proc is None:
            raise RuntimeError(f"{self.name} is not running")
        return process_cpu_seconds(self.proc.pid)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""
