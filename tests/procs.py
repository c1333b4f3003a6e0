"""Real processes for integration tests: raftkv members, reference etcd members, etcdctl.

Members are launched by ``chaos.launch`` (the one launcher of member processes, which the chaos
harness, the benchmarks and ``raftkv cluster`` use too). Everything listens on 127.0.0.1 on ports
from ``free_port()`` (``chaos.ports``); data lives in pytest's tmp dirs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc

from chaos.launch import RAFTKV, MemberProcess, member_args
from chaos.ports import free_port

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
_helpers: list[subprocess.Popen[bytes]] = []


def track(proc: subprocess.Popen) -> subprocess.Popen:
    """Registers a helper process (an etcdctl watch, a lock holder) to be killed if the test leaves it running."""
    _helpers.append(proc)
    return proc


def started() -> tuple[set[Process], set[subprocess.Popen[bytes]]]:
    """The Processes and tracked helpers running now (what kill_leftovers is to leave alone)."""
    return set(_running), set(_helpers)


def kill_leftovers(keep: tuple[set[Process], set[subprocess.Popen[bytes]]] = (set(), set())) -> None:
    """Kills every Process started and not stopped, and every tracked helper still running, but those in
    keep (conftest calls it after each test, keeping what ran before the test began: the members of
    module-scoped fixtures, which outlive a test): a test that fails half-way must not leave members or
    clients running into the next test, which they would slow down or talk to."""
    keep_members, keep_helpers = keep
    for p in list(_running):
        if p not in keep_members:
            p.kill()
    for proc in list(_helpers):
        if proc in keep_helpers:
            continue
        _helpers.remove(proc)
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


class Process(MemberProcess):
    """A single-member server process on 127.0.0.1 with a client port (``chaos.launch.MemberProcess``,
    the one launcher); started by start(), stopped by stop() or kill().

    With tls, its client URLs are https:// and tests reach it with those credentials."""

    def __init__(
        self,
        name: str,
        data_dir: Path,
        port: int | None = None,
        env: dict[str, str] | None = None,
        tls: ClientTLS | None = None,
    ) -> None:
        super().__init__(
            name=name,
            host="127.0.0.1",
            client_port=port or free_port(),
            peer_port=free_port(),
            data_dir=data_dir,
            log_path=data_dir.parent / f"{name}.log",
            env=dict(env or {}),
            peer_scheme="http",
        )
        self.tls = tls

    @property
    def tls(self) -> ClientTLS | None:
        return self._tls

    @tls.setter
    def tls(self, value: ClientTLS | None) -> None:
        """Set before start: the client URLs are https:// with it."""
        self._tls = value
        self.scheme = "https" if value is not None else "http"

    @property
    def port(self) -> int:
        return self.client_port

    def channel(self) -> grpc.Channel:
        if self.tls is None:
            return grpc.insecure_channel(self.endpoint)
        return grpc.secure_channel(self.endpoint, self.tls.credentials())

    def command(self) -> list[str]:
        raise NotImplementedError

    def flags(self) -> list[str]:
        """etcd's flags for a cluster of this one member."""
        peer = self.peer_url
        return member_args(self.name, self.data_dir, self.client_url, peer, f"{self.name}={peer}")

    def start(self, wait: bool = True) -> Process:
        self.spawn(self.command(), cwd=self.data_dir.parent)
        _running.add(self)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Waits until the member answers Status and has a leader (a fresh channel each try: no reconnect backoff)."""
        self.wait_status(timeout, leader=True, channel=lambda _endpoint: self.channel())

    def log(self) -> str:
        return self.log_tail(4000)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        code = super().stop(sig, timeout)
        _running.discard(self)
        return 0 if code is None else code

    def kill(self) -> int:
        return self.stop(signal.SIGKILL)


class _ServerMember(Process):
    """A member of one of the two servers, with extra flags after the cluster's."""

    def __init__(
        self,
        name: str,
        data_dir: Path,
        extra: list[str] | None = None,
        port: int | None = None,
        env: dict[str, str] | None = None,
        tls: ClientTLS | None = None,
    ) -> None:
        super().__init__(name, data_dir, port=port, env=env, tls=tls)
        self.extra = extra or []


class RaftkvMember(_ServerMember):
    def command(self) -> list[str]:
        return [*RAFTKV, *self.flags(), *self.extra]


class EtcdMember(_ServerMember):
    def command(self) -> list[str]:
        assert ETCD is not None, "etcd is not installed (apt-get install etcd-server)"
        return [ETCD, *self.flags(), "--log-level=error", *self.extra]


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
