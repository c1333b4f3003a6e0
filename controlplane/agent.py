"""The node agent, a small kubelet.

- Registers its Node (capacity, allocatable, labels, Ready) and heartbeats through a lease:
  ``/registry/leases/kube-node-lease/<node>`` is attached to an etcd lease of ``lease_ttl``
  seconds that the agent keeps alive every ttl/3. If the agent stops, the store deletes the
  key when the TTL runs out and the node lifecycle controller marks the Node NotReady.
- Runs each pod bound to it (``spec.nodeName``) as local processes, one per container, through
  ``runtime.ProcessRuntime``: own process group, the container's env, output to a log file.
- Restarts exited containers per ``restartPolicy`` (Always, OnFailure, Never) with a doubling
  back-off (CrashLoopBackOff), counting ``restartCount``.
- Reports status: phase, containerStatuses (state, lastState, ready, restartCount and a
  ``containerID`` of ``process://<pid>``), the Initialized/ContainersReady/Ready conditions.
- Stops the processes of pods that are deleted, or no longer bound to it.

It is level-triggered too: pod events and process exits enqueue a pod key; ``sync_pod(key)``
compares the pod in the cache with what runs locally and converges.
"""

from __future__ import annotations

import logging
import os
import platform
import threading
from dataclasses import dataclass, field
from pathlib import Path

from controlplane.api import kinds
from controlplane.api.meta import Obj, deep_copy, deleting, get_condition, key_of, name, set_condition, uid
from controlplane.client import Client, decode, retry_on_conflict
from controlplane.clock import REAL_CLOCK, Clock, rfc3339
from controlplane.controllers.base import process_next
from controlplane.controllers.nodelifecycle import NODE_LEASE_NAMESPACE
from controlplane.informer import Informer
from controlplane.runtime import Process, ProcessRuntime
from controlplane.store.base import AlreadyExists, Conflict, Store, StoreError
from controlplane.workqueue import WorkQueue

log = logging.getLogger("controlplane.agent")

VERSION = "raftkv-agent/0.1.0"
LOG_DIR_ANNOTATION = "raftkv.io/pod-log-dir"


@dataclass
class AgentConfig:
    node_name: str
    root: Path
    cpu: str = "4"
    memory: str = "8Gi"
    pods: int = 110
    labels: dict[str, str] = field(default_factory=dict)
    lease_ttl: int = 10
    sync_period: float = 1.0
    restart_backoff: float = 1.0
    restart_backoff_cap: float = 60.0
    grace_cap: float = 10.0  # at most this long between SIGTERM and SIGKILL, whatever the pod asks


@dataclass
class ContainerState:
    spec: Obj
    proc: Process | None = None
    restart_count: int = 0
    starts: int = 0
    last_terminated: Obj | None = None
    next_start: float = 0.0
    waiting: tuple[str, str] = ("ContainerCreating", "")
    done: bool = False


@dataclass
class LocalPod:
    uid: str
    pod: Obj
    containers: dict[str, ContainerState]


class NodeAgent:
    def __init__(self, store: Store, cfg: AgentConfig, clock: Clock = REAL_CLOCK) -> None:
        self.store = store
        self.cfg = cfg
        self.clock = clock
        self.client = Client(store, clock)
        self.runtime = ProcessRuntime(cfg.root)
        self.pod_informer = Informer(store, kinds.POD, clock, resync=30.0)
        self.queue = WorkQueue("agent", clock)
        self.name = f"agent-{cfg.node_name}"
        self.pods: dict[str, LocalPod] = {}
        self._lock = threading.Lock()
        self.lease_id = 0
        self.pod_informer.add_handler(self._pod_event, lambda o, n: self._pod_event(n), self._pod_event)

    # ---- events ----

    def _pod_event(self, pod: Obj) -> None:
        k = key_of(pod)
        with self._lock:
            local = k in self.pods
        if local or pod.get("spec", {}).get("nodeName") == self.cfg.node_name:
            self.queue.add(k)

    # ---- node registration and heartbeat ----

    @property
    def lease_key(self) -> str:
        return kinds.LEASE.key(NODE_LEASE_NAMESPACE, self.cfg.node_name)

    def _node_object(self) -> Obj:
        alloc = {"cpu": self.cfg.cpu, "memory": self.cfg.memory, "pods": str(self.cfg.pods)}
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.cfg.node_name,
                "labels": {
                    "kubernetes.io/hostname": self.cfg.node_name,
                    "kubernetes.io/os": "linux",
                    **self.cfg.labels,
                },
                "annotations": {LOG_DIR_ANNOTATION: str(self.runtime.root / "pods")},
            },
            "spec": {},
            "status": {
                "capacity": dict(alloc),
                "allocatable": dict(alloc),
                "addresses": [
                    {"type": "InternalIP", "address": "127.0.0.1"},
                    {"type": "Hostname", "address": self.cfg.node_name},
                ],
                "nodeInfo": {
                    "kubeletVersion": VERSION,
                    "operatingSystem": "linux",
                    "architecture": platform.machine(),
                },
            },
        }

    def _ready_condition(self) -> Obj:
        return {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "kubelet is posting ready status",
        }

    def register_node(self) -> None:
        """Creates the Node, or brings an existing one's labels, capacity and Ready condition up to date."""
        want = self._node_object()
        now = rfc3339(self.clock.now())

        def attempt() -> Obj | None:
            cur = self.client.try_get(kinds.NODE, None, self.cfg.node_name)
            if cur is None:
                obj = deep_copy(want)
                set_condition(obj, self._ready_condition(), now, heartbeat=True)
                try:
                    return self.client.create(obj)
                except AlreadyExists:
                    raise Conflict("node created concurrently") from None
            if any(cur["metadata"].get(f) != want["metadata"][f] for f in ("labels", "annotations")):
                upd = deep_copy(cur)
                upd["metadata"]["labels"] = want["metadata"]["labels"]
                upd["metadata"]["annotations"] = want["metadata"]["annotations"]
                cur = self.client.update(upd)
            st = deep_copy(cur)
            st["status"].update({k: v for k, v in want["status"].items()})
            set_condition(st, self._ready_condition(), now)
            if st["status"] != cur.get("status"):
                return self.client.update_status(st)
            return cur

        retry_on_conflict(attempt)

    def heartbeat_once(self) -> None:
        """Renews the node lease; if it is gone (or never was), takes a new one and re-registers."""
        within = max(self.cfg.lease_ttl / 3, 0.5)
        if self.lease_id and self.store.keepalive(self.lease_id, within=within) > 0:
            # Bounded like the renewal: a read stuck on a member whose leader just died must not hold
            # up the next renewal for longer than the lease lives (it fails; the next beat retries).
            kv = self.store.get(kinds.NODE.key(None, self.cfg.node_name), within=within)
            node = decode(kv) if kv is not None else None
            ready = get_condition(node, "Ready") if node is not None else None
            if ready is None or ready.get("status") != "True":
                self.register_node()
            return
        self.lease_id = self.store.grant_lease(self.cfg.lease_ttl)
        now = rfc3339(self.clock.now())
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.cfg.node_name, "namespace": NODE_LEASE_NAMESPACE},
            "spec": {
                "holderIdentity": self.cfg.node_name,
                "leaseDurationSeconds": self.cfg.lease_ttl,
                "acquireTime": now,
                "renewTime": now,
            },
        }
        old = self.store.get(self.lease_key)
        if old is not None and old.lease:
            self.store.revoke_lease(old.lease)  # a previous run of this agent: its lease ends now
        elif old is not None:
            self.store.delete(self.lease_key)
        self.client.create(lease, lease=self.lease_id)
        log.info("node %s: heartbeat lease %x (ttl %ds)", self.cfg.node_name, self.lease_id, self.cfg.lease_ttl)
        self.register_node()

    def _heartbeat_loop(self, stop: threading.Event) -> None:
        period = max(self.cfg.lease_ttl / 3, 0.2)
        while not stop.is_set():
            wait = period
            try:
                self.heartbeat_once()
            except StoreError as exc:
                log.warning("node %s: heartbeat failed: %s", self.cfg.node_name, exc)
                wait = 0.1  # try again at once (on the next endpoint): the lease is running out
            except Exception:
                log.exception("node %s: heartbeat failed", self.cfg.node_name)
            self.clock.wait(stop, wait)

    # ---- pods ----

    def _env(self, pod: Obj, c: Obj) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "HOSTNAME": name(pod),
                "POD_NAME": name(pod),
                "POD_NAMESPACE": pod["metadata"]["namespace"],
                "POD_UID": uid(pod),
                "NODE_NAME": self.cfg.node_name,
            }
        )
        for e in c.get("env") or []:
            env[e["name"]] = e.get("value", "")
        return env

    def _stop_local(self, key: str, local: LocalPod) -> None:
        grace = min(float(local.pod["spec"].get("terminationGracePeriodSeconds", 30)), self.cfg.grace_cap)
        for cs in local.containers.values():
            if cs.proc is not None:
                self.runtime.stop(cs.proc, grace)
                cs.proc = None
        log.info("node %s: stopped pod %s", self.cfg.node_name, key)

    def sync(self, key: str) -> None:
        pod = self.pod_informer.cache.get(key)
        mine = pod is not None and pod["spec"].get("nodeName") == self.cfg.node_name and not deleting(pod)
        with self._lock:
            local = self.pods.get(key)
        if local is not None and (not mine or local.uid != uid(pod)):  # type: ignore[arg-type]
            self._stop_local(key, local)
            with self._lock:
                self.pods.pop(key, None)
            local = None
        if not mine or pod is None:
            return
        if local is None:
            if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                return  # finished before this agent (re)started: nothing to run again
            prior = {
                cs["name"]: cs.get("restartCount", 0) for cs in pod.get("status", {}).get("containerStatuses") or []
            }
            local = LocalPod(
                uid(pod),
                pod,
                {
                    c["name"]: ContainerState(c, restart_count=prior.get(c["name"], 0))
                    for c in pod["spec"]["containers"]
                },
            )
            with self._lock:
                self.pods[key] = local
        local.pod = pod
        wake = self._converge(pod, local)
        self._report(pod, local)
        if wake is not None:
            self.queue.add_after(key, wake)

    def _converge(self, pod: Obj, local: LocalPod) -> float | None:
        """Starts, reaps and restarts containers; returns when to look again for a back-off, if any."""
        now = self.clock.monotonic()
        wake: float | None = None
        policy = pod["spec"].get("restartPolicy", "Always")
        for cs in local.containers.values():
            if cs.proc is not None:
                rc = self.runtime.poll(cs.proc)
                if rc is None:
                    continue
                finished = self.clock.now()
                ran = (finished - cs.proc.started_at).total_seconds()
                cs.last_terminated = {
                    "exitCode": rc,
                    "reason": "Completed" if rc == 0 else "Error",
                    "startedAt": rfc3339(cs.proc.started_at),
                    "finishedAt": rfc3339(finished),
                    "containerID": f"process://{cs.proc.pid}",
                }
                self.runtime.kill_group(cs.proc.pid_path)  # what the container left running in its group goes too
                cs.proc = None
                log.info(
                    "node %s: pod %s container %s exited with %d", self.cfg.node_name, key_of(pod), cs.spec["name"], rc
                )
                restart = policy == "Always" or (policy == "OnFailure" and rc != 0)
                if not restart:
                    cs.done = True
                    continue
                if ran > 2 * self.cfg.restart_backoff_cap:
                    cs.starts = 0  # it ran long enough: back-off starts over
                delay = min(self.cfg.restart_backoff * 2 ** max(cs.starts - 1, 0), self.cfg.restart_backoff_cap)
                cs.next_start = now + delay
                cs.waiting = ("CrashLoopBackOff", f"back-off {delay:g}s restarting failed container={cs.spec['name']}")
            if cs.done:
                continue
            if now < cs.next_start:
                wake = min(wake or 1e9, cs.next_start - now)
                continue
            try:
                cs.proc = self.runtime.start(pod, cs.spec, self._env(pod, cs.spec), self.clock.now())
            except OSError as exc:
                delay = min(self.cfg.restart_backoff * 2**cs.starts, self.cfg.restart_backoff_cap)
                cs.starts += 1
                cs.next_start = now + delay
                cs.waiting = ("RunContainerError", f"cannot run {cs.spec.get('command')}: {exc}")
                wake = min(wake or 1e9, delay)
                continue
            if cs.last_terminated is not None:
                cs.restart_count += 1
            cs.starts += 1
            log.info(
                "node %s: pod %s container %s started (pid %d)",
                self.cfg.node_name,
                key_of(pod),
                cs.spec["name"],
                cs.proc.pid,
            )
        return wake

    def _container_status(self, cs: ContainerState) -> Obj:
        st: Obj = {
            "name": cs.spec["name"],
            "image": cs.spec.get("image", ""),
            "restartCount": cs.restart_count,
            "ready": cs.proc is not None,
            "started": cs.proc is not None,
        }
        if cs.proc is not None:
            st["state"] = {"running": {"startedAt": rfc3339(cs.proc.started_at)}}
            st["containerID"] = f"process://{cs.proc.pid}"
        elif cs.done and cs.last_terminated is not None:
            st["state"] = {"terminated": cs.last_terminated}
        else:
            reason, message = cs.waiting
            st["state"] = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        st["lastState"] = {"terminated": cs.last_terminated} if cs.last_terminated and not cs.done else {}
        return st

    def _report(self, pod: Obj, local: LocalPod) -> None:
        statuses = [self._container_status(local.containers[c["name"]]) for c in pod["spec"]["containers"]]
        all_running = all(s["ready"] for s in statuses)
        states = list(local.containers.values())
        if all(cs.done for cs in states):
            phase = "Succeeded" if all((cs.last_terminated or {}).get("exitCode") == 0 for cs in states) else "Failed"
        elif any(cs.proc is not None or cs.last_terminated is not None for cs in states):
            phase = "Running"
        else:
            phase = "Pending"
        now = rfc3339(self.clock.now())
        new = deep_copy(pod)
        st = new.setdefault("status", {})
        st.update(
            {
                "phase": phase,
                "hostIP": "127.0.0.1",
                "podIP": "127.0.0.1",
                "containerStatuses": statuses,
            }
        )
        st.setdefault("startTime", now)
        ready = "True" if all_running and phase == "Running" else "False"
        set_condition(new, {"type": "Initialized", "status": "True"}, now)
        set_condition(new, {"type": "ContainersReady", "status": ready}, now)
        set_condition(new, {"type": "Ready", "status": ready}, now)
        if new.get("status") == pod.get("status"):
            return
        self.client.update_status(new)

    def _poll_loop(self, stop: threading.Event) -> None:
        """Notices exited processes quickly and re-syncs every local pod each sync_period."""
        last_full = 0.0
        while not self.clock.wait(stop, min(0.1, self.cfg.sync_period)):
            full = self.clock.monotonic() - last_full >= self.cfg.sync_period
            if full:
                last_full = self.clock.monotonic()
            with self._lock:
                items = list(self.pods.items())
            for k, local in items:
                if full or any(
                    cs.proc is not None and cs.proc.popen.poll() is not None for cs in local.containers.values()
                ):
                    self.queue.add(k)

    # ---- lifecycle ----

    def run(self, stop: threading.Event, workers: int = 2) -> None:
        leftovers = self.runtime.cleanup_leftovers()
        if leftovers:
            log.info("node %s: stopped %d processes left by an earlier agent", self.cfg.node_name, leftovers)
        threads = [threading.Thread(target=self._heartbeat_loop, args=(stop,), name="heartbeat", daemon=True)]
        threads[0].start()
        self.pod_informer.start(stop)
        while not self.pod_informer.synced.wait(0.1):
            if stop.is_set():
                return
        for i in range(workers):
            t = threading.Thread(target=self._worker, args=(stop,), name=f"agent-{i}", daemon=True)
            t.start()
            threads.append(t)
        poller = threading.Thread(target=self._poll_loop, args=(stop,), name="agent-poll", daemon=True)
        poller.start()
        stop.wait()
        self.queue.shutdown()
        self.pod_informer.stop()
        for t in threads[1:]:
            t.join(5)
        self.shutdown()

    def _worker(self, stop: threading.Event) -> None:
        while not stop.is_set():
            process_next(self, timeout=0.2)

    def shutdown(self) -> None:
        """Stops every local pod (an agent going away takes its processes with it)."""
        with self._lock:
            items = list(self.pods.items())
            self.pods.clear()
        for k, local in items:
            self._stop_local(k, local)
