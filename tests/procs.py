"""Real processes for integration tests: raftkv members, reference etcd members, etcdctl.

Everything listens on 127.0.0.1 on ports from ``free_port()``; data lives in pytest's tmp dirs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc

from chaos.ports import free_port
from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc

REPO = Path(__file__).resolve().parent.parent
ETCD = shutil.which("etcd")
ETCDCTL = shutil.which("etcdctl")


T = TypeVar("T")


def wait_for(what: str, cond: Callable[[], T], timeout: float = 60.0, interval: float = 0.05) -> T:
    """Polls ``cond`` until it returns something true and returns that; fails naming ``what`` after
    ``timeout`` seconds. The timeout bounds a hang, it is not a speed requirement: keep it generous, so
    that a slow, loaded machine only makes the test take longer."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


_running: set[Process] = set()
_helpers: list[subprocess.Popen] = []


def track(proc: subprocess.Popen) -> subprocess.Popen:
    """Registers a helper process (an etcdctl watch, a lock holder) to be killed if the test leaves it running."""
    _helpers.append(proc)
    return proc


def running() -> tuple[frozenset[Process], int]:
    """What is running now: the Processes, and how many helpers are tracked (for ``kill_leftovers``)."""
    return frozenset(_running), len(_helpers)


def kill_leftovers(before: tuple[frozenset[Process], int] = (frozenset(), 0)) -> None:
    """Kills every Process started and not stopped since ``before``, and every helper tracked since
    then that still runs (conftest calls it after each test with what ran when the test began): a
    test that fails half-way must not leave members or clients running into the next test, which
    they would slow down or talk to. What a wider-scoped fixture started before the test (a module's
    shared cluster) is left alone: its fixture stops it."""
    kept, helpers = before
    for p in list(_running - kept):
        p.kill()
    while len(_helpers) > helpers:
        proc = _helpers.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@dataclass(frozen=True)
class ClientTLS:
    """How a test client talks TLS to a member: the CA to trust, and a client certificate (optional)."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes(),
            private_key=self.key.read_bytes() if self.key else None,
            certificate_chain=self.cert.read_bytes() if self.cert else None,
        )

    def etcdctl_args(self) -> list[str]:
        args = [f"--cacert={self.ca}"]
        if self.cert and self.key:
            args += [f"--cert={self.cert}", f"--key={self.key}"]
        return args


class Process:
    """A server process with a client port; started by start(), stopped by stop() or kill().

    With tls, its client URLs are https:// and tests reach it with those credentials."""

    def __init__(
        self,
        name: str,
        data_dir: Path,
        port: int | None = None,
        env: dict[str, str] | None = None,
        tls: ClientTLS | None = None,
    ) -> None:
        self.name = name
        self.data_dir = data_dir
        self.port = port or free_port()
        self.peer_port = free_port()
        self.env = env or {}
        self.tls = tls
        self.proc: subprocess.Popen | None = None
        self.log_path = data_dir.parent / f"{name}.log"

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def client_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def channel(self) -> grpc.Channel:
        if self.tls is None:
            return grpc.insecure_channel(self.endpoint)
        return grpc.secure_channel(self.endpoint, self.tls.credentials())

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self, wait: bool = True) -> Process:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            self.command(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            cwd=self.data_dir.parent,
        )
        _running.add(self)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Waits until the member answers Status and has a leader (a fresh channel each try: no reconnect backoff)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with self.channel() as channel:
                    st = rpc_pb2_grpc.MaintenanceStub(channel).Status(
                        pb.StatusRequest(), timeout=1, wait_for_ready=True
                    )
                if st.leader:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not ready (with a leader) on {self.endpoint}:\n{self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._log.close()
        self.proc = None
        _running.discard(self)
        return code

    def kill(self) -> int:
        return self.stop(signal.SIGKILL)


class RaftkvMember(Process):
    def __init__(self, name: str, data_dir: Path, extra: list[str] | None = None, **kw: object) -> None:
        super().__init__(name, data_dir, **kw)  # type: ignore[arg-type]
        self.extra = extra or []

    def command(self) -> list[str]:
        url = self.client_url
        peer = f"http://127.0.0.1:{self.peer_port}"
        return [
            sys.executable,
            "-m",
            "raftkv_cmd.main",
            "serve",
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={url}",
            f"--advertise-client-urls={url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster={self.name}={peer}",
            *self.extra,
        ]


class EtcdMember(Process):
    def __init__(self, name: str, data_dir: Path, extra: list[str] | None = None, **kw: object) -> None:
        super().__init__(name, data_dir, **kw)  # type: ignore[arg-type]
        self.extra = extra or []

    def command(self) -> list[str]:
        assert ETCD is not None, "etcd is not installed (apt-get install etcd-server)"
        url = self.client_url
        peer = f"http://127.0.0.1:{self.peer_port}"
        return [
            ETCD,
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={url}",
            f"--advertise-client-urls={url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster={self.name}={peer}",
            "--log-level=error",
            *self.extra,
        ]


# etcdctl's own deadlines, generous: they bound a hang; a busy machine must only make a command slower
ETCDCTL_TIMEOUTS = ("--command-timeout=30s", "--dial-timeout=10s")


def etcdctl(
    endpoint: str, *args: str, stdin: str | None = None, check: bool = False, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    assert ETCDCTL is not None, "etcdctl is not installed (apt-get install etcd-client)"
    result = subprocess.run(
        [ETCDCTL, f"--endpoints={endpoint}", *ETCDCTL_TIMEOUTS, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, "ETCDCTL_API": "3"},
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"etcdctl {' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result
