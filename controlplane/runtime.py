"""The node agent's container runtime: each container is a local process in its own process group.

A container's output (stdout and stderr) is appended to ``<root>/pods/<ns>_<pod>_<uid>/<name>.log``
and its process group id is recorded next to it in ``<name>.pid``, so an agent that restarts,
or a test that cleans up, can find and stop processes an earlier agent started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from controlplane.api.meta import Obj


@dataclass
class Process:
    container: str
    popen: subprocess.Popen[bytes]
    started_at: datetime
    log_path: Path
    pid_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid


def exit_code(returncode: int) -> int:
    """A shell's convention, as container runtimes report it: killed by signal N is 128+N (SIGKILL: 137)."""
    return 128 - returncode if returncode < 0 else returncode


def pod_dir_name(pod: Obj) -> str:
    md = pod["metadata"]
    return f"{md['namespace']}_{md['name']}_{md['uid']}"


class ProcessRuntime:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        (self.root / "pods").mkdir(parents=True, exist_ok=True)

    def pod_dir(self, pod: Obj) -> Path:
        return self.root / "pods" / pod_dir_name(pod)

    def start(self, pod: Obj, container: Obj, env: dict[str, str], now: datetime) -> Process:
        """Starts the container's command; raises OSError if it cannot be run."""
        d = self.pod_dir(pod)
        d.mkdir(parents=True, exist_ok=True)
        log_path = d / f"{container['name']}.log"
        argv = [*container.get("command", []), *container.get("args", [])]
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=container.get("workingDir") or d,
                start_new_session=True,  # its own process group: stopped as a whole
                close_fds=True,
            )
        pid_path = d / f"{container['name']}.pid"
        pid_path.write_text(str(popen.pid))
        return Process(container["name"], popen, now, log_path, pid_path)

    @staticmethod
    def poll(p: Process) -> int | None:
        rc = p.popen.poll()
        return None if rc is None else exit_code(rc)

    @staticmethod
    def stop(p: Process, grace: float) -> int:
        """SIGTERM to the process group, SIGKILL after ``grace`` seconds; the whole group goes."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while p.popen.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        rc = p.popen.wait()
        p.pid_path.unlink(missing_ok=True)
        return exit_code(rc)

    @staticmethod
    def kill_group(pid_path: Path) -> None:
        """Kills a recorded process group, the rest of a container whose leader already exited included."""
        with contextlib.suppress(ValueError, OSError):
            os.killpg(int(pid_path.read_text()), signal.SIGKILL)
        pid_path.unlink(missing_ok=True)

    def cleanup_leftovers(self) -> int:
        """Kills every process group an earlier agent recorded under root; returns how many files it found."""
        found = list((self.root / "pods").glob("*/*.pid"))
        for pid_path in found:
            self.kill_group(pid_path)
        return len(found)


def cleanup_tree(root: Path) -> None:
    """For tests and `kube up`: kill every container process recorded under root."""
    for pid_path in Path(root).glob("**/pods/*/*.pid"):
        ProcessRuntime.kill_group(pid_path)
