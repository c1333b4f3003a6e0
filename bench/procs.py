"""Single-member servers for benchmarks: raftkv or etcd, on free loopback ports, data in a temp dir.

Kept apart from ``tests/procs.py`` on purpose: benchmarks are not tests and must not import them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc

from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc

KINDS = ("raftkv", "etcd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One single-member server process of ``kind`` ("raftkv" or "etcd") under ``workdir``."""

    def __init__(self, kind: str, workdir: Path, name: str = "bench") -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown server kind {kind!r} (one of {', '.join(KINDS)})")
        self.kind = kind
        self.name = name
        self.workdir = workdir
        self.data_dir = workdir / f"{kind}.data"
        self.log_path = workdir / f"{kind}.log"
        self.port = free_port()
        self.peer_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        client = f"http://127.0.0.1:{self.port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        common = [
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster={self.name}={peer}",
        ]
        if self.kind == "raftkv":
            return [sys.executable, "-m", "raftkv_cmd.main", "serve", *common]
        etcd = shutil.which("etcd")
        if etcd is None:
            raise RuntimeError("etcd is not installed (apt-get install etcd-server)")
        return [etcd, *common, "--log-level=error"]

    def version(self) -> str:
        if self.kind == "etcd":
            out = subprocess.run([self.command()[0], "--version"], capture_output=True, text=True).stdout
            return out.splitlines()[0].split()[-1] if out else "unknown"
        repo = Path(__file__).resolve().parent.parent
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True)
        return "git " + (rev.stdout.strip() or "unknown") + ("+dirty" if dirty.stdout.strip() else "")

    def start(self, timeout: float = 30.0) -> Server:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, env=os.environ.copy()
            )
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        """Until Status names a leader; a fresh channel per try, so no reconnect backoff delays it."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with grpc.insecure_channel(self.endpoint) as channel:
                    status = rpc_pb2_grpc.MaintenanceStub(channel).Status(pb.StatusRequest(), timeout=1)
                if status.leader:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.kind} not ready on {self.endpoint}:\n{self.log_tail()}")
            time.sleep(0.05)

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far (Linux /proc)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
