"""The scheduler: binds each pending pod to a Ready node, or says why it cannot.

Filters (a node must pass all): Ready and not unschedulable; ``nodeSelector`` matches the node's
labels; the pod's cpu and memory requests fit in allocatable minus what the pods already on the
node request (and the pod count fits). Score: fewest pods of the same owner on the node
(spreading), then the least requested cpu+memory share, then the name. Binding sets spec.nodeName
and the PodScheduled condition in one conditional write. A pod that fits nowhere gets
PodScheduled=False, reason Unschedulable, with kubectl's "0/2 nodes are available: ..." message,
and is retried with backoff and whenever a node changes.

Pods bound by this scheduler but not yet seen bound in the cache are *assumed* on their node,
so two pods scheduled back to back do not both take the same free capacity.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

from controlplane.api import quantity
from controlplane.api.meta import (
    Obj,
    condition_true,
    controller_ref,
    deep_copy,
    deleting,
    get_condition,
    key_of,
    labels,
    name,
    set_condition,
    uid,
)
from controlplane.client import Client
from controlplane.clock import REAL_CLOCK, Clock, rfc3339
from controlplane.controllers.base import Requeue
from controlplane.informer import Informer
from controlplane.workqueue import MaxOf, WorkQueue, default_rate_limiter

log = logging.getLogger("controlplane.scheduler")

SCHEDULER_NAME = "default-scheduler"


def node_ready(node: Obj) -> bool:
    return condition_true(node, "Ready") and not node.get("spec", {}).get("unschedulable")


def allocatable(node: Obj) -> tuple[int, int, int]:
    a = node.get("status", {}).get("allocatable") or node.get("status", {}).get("capacity") or {}
    return quantity.cpu_millis(a.get("cpu", 0)), quantity.memory_bytes(a.get("memory", 0)), int(a.get("pods", 110))


def needs_scheduling(pod: Obj) -> bool:
    spec = pod.get("spec", {})
    return (
        not spec.get("nodeName")
        and not deleting(pod)
        and spec.get("schedulerName", SCHEDULER_NAME) == SCHEDULER_NAME
        and pod.get("status", {}).get("phase") not in ("Succeeded", "Failed")
    )


class Scheduler:
    name = "scheduler"

    def __init__(
        self,
        client: Client,
        pod_informer: Informer,
        node_informer: Informer,
        clock: Clock = REAL_CLOCK,
        rate_limiter: MaxOf | None = None,
    ) -> None:
        self.client = client
        self.pod_cache = pod_informer.cache
        self.node_cache = node_informer.cache
        self.clock = clock
        self.queue = WorkQueue("scheduler", clock, rate_limiter or default_rate_limiter(clock, base=0.1, cap=10.0))
        self._assumed: dict[str, tuple[str, Obj, float]] = {}  # pod uid -> (node, pod, when)
        self._unschedulable: set[str] = set()
        self._lock = threading.Lock()
        pod_informer.add_handler(self._pod_event, lambda o, n: self._pod_event(n), self._pod_deleted)
        node_informer.add_handler(self._node_event, lambda o, n: self._node_event(n), self._node_event)

    # ---- handlers ----

    def _pod_event(self, pod: Obj) -> None:
        if needs_scheduling(pod):
            self.queue.add(key_of(pod))
        else:
            with self._lock:
                self._assumed.pop(uid(pod), None)

    def _pod_deleted(self, pod: Obj) -> None:
        with self._lock:
            self._assumed.pop(uid(pod), None)
            self._unschedulable.discard(key_of(pod))

    def _node_event(self, node: Obj) -> None:
        with self._lock:
            retry = list(self._unschedulable)
        for k in retry:
            self.queue.add(k)

    # ---- the algorithm ----

    def _usage(self) -> dict[str, list[Obj]]:
        """Pods per node: bound in the cache, plus the ones we assumed."""
        per: dict[str, list[Obj]] = {}
        seen = set()
        for p in self.pod_cache.list():
            node = p.get("spec", {}).get("nodeName")
            if node and p.get("status", {}).get("phase") not in ("Succeeded", "Failed"):
                per.setdefault(node, []).append(p)
                seen.add(uid(p))
        now = self.clock.monotonic()
        with self._lock:
            for pod_uid, (node, p, when) in list(self._assumed.items()):
                if now - when > 30:
                    del self._assumed[pod_uid]
                elif pod_uid not in seen:
                    per.setdefault(node, []).append(p)
        return per

    def schedule(self, pod: Obj) -> tuple[str | None, str]:
        """(node name, "") or (None, why not), without writing anything."""
        nodes = sorted(self.node_cache.list(), key=name)
        if not nodes:
            return None, "0/0 nodes are available: no nodes registered."
        usage = self._usage()
        cpu, mem = quantity.pod_requests(pod)
        selector = pod.get("spec", {}).get("nodeSelector") or {}
        reasons: Counter[str] = Counter()
        fits: list[Obj] = []
        for node in nodes:
            if not condition_true(node, "Ready"):
                reasons["node(s) were not ready"] += 1
                continue
            if node.get("spec", {}).get("unschedulable"):
                reasons["node(s) were unschedulable"] += 1
                continue
            nl = labels(node)
            if any(nl.get(k) != v for k, v in selector.items()):
                reasons["node(s) didn't match Pod's node affinity/selector"] += 1
                continue
            acpu, amem, apods = allocatable(node)
            on = usage.get(name(node), [])
            ucpu = sum(quantity.pod_requests(p)[0] for p in on)
            umem = sum(quantity.pod_requests(p)[1] for p in on)
            bad = False
            if ucpu + cpu > acpu:
                reasons["Insufficient cpu"] += 1
                bad = True
            if umem + mem > amem:
                reasons["Insufficient memory"] += 1
                bad = True
            if len(on) + 1 > apods:
                reasons["Too many pods"] += 1
                bad = True
            if not bad:
                fits.append(node)
        if not fits:
            detail = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items(), key=lambda x: x[0]))
            return None, f"0/{len(nodes)} nodes are available: {detail}."
        owner = (controller_ref(pod) or {}).get("uid")

        def score(node: Obj) -> tuple:
            on = usage.get(name(node), [])
            same = sum(1 for p in on if owner and (controller_ref(p) or {}).get("uid") == owner)
            acpu, amem, _ = allocatable(node)
            ucpu = sum(quantity.pod_requests(p)[0] for p in on) + cpu
            umem = sum(quantity.pod_requests(p)[1] for p in on) + mem
            share = (ucpu / acpu if acpu else 1.0) + (umem / amem if amem else 1.0)
            return (same, round(share, 6), len(on), name(node))

        return name(min(fits, key=score)), ""

    def sync(self, key: str) -> None:
        pod = self.pod_cache.get(key)
        if pod is None or not needs_scheduling(pod):
            with self._lock:
                self._unschedulable.discard(key)
            return
        with self._lock:
            if uid(pod) in self._assumed:
                return  # bound already; the cache has not caught up
        node, why = self.schedule(pod)
        now = rfc3339(self.clock.now())
        if node is None:
            with self._lock:
                self._unschedulable.add(key)
            cond = get_condition(pod, "PodScheduled")
            if cond is None or cond.get("message") != why:
                p2 = deep_copy(pod)
                set_condition(
                    p2, {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": why}, now
                )
                p2["status"].setdefault("phase", "Pending")
                self.client.update_status(p2)
                log.info("pod %s is unschedulable: %s", key, why)
            raise Requeue(why)
        bound = self.client.bind(
            pod, node, {"type": "PodScheduled", "status": "True", "lastTransitionTime": now, "lastProbeTime": None}
        )
        with self._lock:
            self._assumed[uid(pod)] = (node, bound, self.clock.monotonic())
            self._unschedulable.discard(key)
        log.info("bound pod %s to %s", key, node)
