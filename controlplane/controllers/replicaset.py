"""The ReplicaSet controller: keeps ``spec.replicas`` active pods of a ReplicaSet, reports status.

Pods belong to a ReplicaSet through their controller ownerReference. Creates and deletes are
guarded by expectations (see expectations.py); pods to delete are chosen as Kubernetes does
(unscheduled, pending, not ready, most restarts, newest first).
"""

from __future__ import annotations

import logging

from controlplane.api import kinds
from controlplane.api.meta import Obj, controller_ref, deep_copy, is_controlled_by, key_of, name, namespace
from controlplane.client import Client
from controlplane.clock import REAL_CLOCK, Clock
from controlplane.controllers.base import Requeue
from controlplane.controllers.expectations import Expectations
from controlplane.controllers.podutil import deletion_rank, is_active, is_available, is_ready, pod_from_template
from controlplane.informer import Informer
from controlplane.store.base import Conflict, NotFound
from controlplane.workqueue import WorkQueue

log = logging.getLogger("controlplane.replicaset")

BURST = 100  # the most pods created or deleted in one sync


class ReplicaSetController:
    name = "replicaset"

    def __init__(
        self, client: Client, rs_informer: Informer, pod_informer: Informer, clock: Clock = REAL_CLOCK
    ) -> None:
        self.client = client
        self.rs_cache = rs_informer.cache
        self.pod_cache = pod_informer.cache
        self.clock = clock
        self.queue = WorkQueue("replicaset", clock)
        self.expectations = Expectations(clock)
        rs_informer.add_handler(self._enqueue, lambda old, new: self._enqueue(new), self._rs_deleted)
        pod_informer.add_handler(self._pod_added, self._pod_updated, self._pod_deleted)

    # ---- event handlers: only enqueue ----

    def _enqueue(self, rs: Obj) -> None:
        self.queue.add(key_of(rs))

    def _rs_deleted(self, rs: Obj) -> None:
        self.expectations.delete(key_of(rs))
        self.queue.add(key_of(rs))

    def _owner_key(self, pod: Obj) -> str | None:
        ref = controller_ref(pod)
        if ref is None or ref.get("kind") != "ReplicaSet":
            return None
        return f"{namespace(pod)}/{ref['name']}"

    def _pod_added(self, pod: Obj) -> None:
        k = self._owner_key(pod)
        if k:
            self.expectations.creation_observed(k)
            self.queue.add(k)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        k = self._owner_key(new)
        if k:
            self.queue.add(k)

    def _pod_deleted(self, pod: Obj) -> None:
        k = self._owner_key(pod)
        if k:
            self.expectations.deletion_observed(k)
            self.queue.add(k)

    # ---- sync ----

    def sync(self, key: str) -> None:
        rs = self.rs_cache.get(key)
        if rs is None:
            self.expectations.delete(key)
            return
        pods = [p for p in self.pod_cache.list(namespace(rs)) if is_controlled_by(p, rs)]
        active = [p for p in pods if is_active(p)]
        err: Exception | None = None
        if self.expectations.satisfied(key) and not rs["metadata"].get("deletionTimestamp"):
            try:
                self._manage_replicas(key, rs, active)
            except (Conflict, NotFound) as exc:
                err = exc
        self._update_status(rs, pods, active)
        if err is not None:
            raise Requeue(str(err))

    def _manage_replicas(self, key: str, rs: Obj, active: list[Obj]) -> None:
        diff = len(active) - rs["spec"].get("replicas", 1)
        if diff < 0:
            n = min(-diff, BURST)
            self.expectations.expect(key, adds=n)
            log.info("%s: creating %d pods (%d active, want %d)", key, n, len(active), rs["spec"]["replicas"])
            for i in range(n):
                try:
                    self.client.create(pod_from_template(rs, rs["spec"]["template"]))
                except Exception:
                    for _ in range(n - i):
                        self.expectations.creation_observed(key)
                    raise
        elif diff > 0:
            victims = sorted(active, key=deletion_rank)[: min(diff, BURST)]
            self.expectations.expect(key, deletes=len(victims))
            log.info(
                "%s: deleting %d pods (%d active, want %d)", key, len(victims), len(active), rs["spec"]["replicas"]
            )
            for pod in victims:
                try:
                    if not self.client.delete(kinds.POD, namespace(pod), name(pod), precondition=pod):
                        self.expectations.deletion_observed(key)
                except Conflict:
                    self.expectations.deletion_observed(key)
                    raise

    def _update_status(self, rs: Obj, pods: list[Obj], active: list[Obj]) -> None:
        tlabels = (rs["spec"].get("template", {}).get("metadata") or {}).get("labels") or {}
        status = {
            **rs.get("status", {}),
            "replicas": len(active),
            "fullyLabeledReplicas": sum(
                1 for p in active if all(p["metadata"].get("labels", {}).get(k) == v for k, v in tlabels.items())
            ),
            "readyReplicas": sum(1 for p in active if is_ready(p)),
            "availableReplicas": sum(1 for p in active if is_available(p)),
            "observedGeneration": rs["metadata"].get("generation", 1),
        }
        if status == rs.get("status"):
            return
        new = deep_copy(rs)
        new["status"] = status
        self.client.update_status(new)
