"""The Deployment controller: rollouts modelled the way Kubernetes models them.

A Deployment owns ReplicaSets, one per distinct pod template, named ``<deployment>-<hash>`` with
a ``pod-template-hash`` label and a ``deployment.kubernetes.io/revision`` annotation. The
ReplicaSet whose template equals the Deployment's is the *new* one; the others are *old*.
Rolling back (``rollout undo``) puts an old template back into the Deployment, so that old
ReplicaSet becomes new again and gets the next revision.

- RollingUpdate: scale the new ReplicaSet up while the total stays within replicas + maxSurge,
  scale old ones down while the available pods stay at or above replicas - maxUnavailable
  (k8s' reconcileNewReplicaSet / reconcileOldReplicaSets). Availability is counted from the
  pod cache, capped by each ReplicaSet's spec.replicas, so a scale-down already issued is never
  counted as available twice; a sync whose cache predates this controller's own last write to a
  ReplicaSet waits for the cache instead of acting on it.
- Recreate: scale every old ReplicaSet to 0, wait until their pods are gone, then scale up the new.
- Scaling is the same arithmetic with a new replica count; old ReplicaSets at 0 beyond
  revisionHistoryLimit are deleted; status carries replicas, updatedReplicas, readyReplicas,
  availableReplicas, unavailableReplicas, observedGeneration and the Available/Progressing conditions.
"""

from __future__ import annotations

import logging
import threading

from controlplane.api import kinds
from controlplane.api.meta import (
    Obj,
    controller_ref,
    deep_copy,
    deleting,
    is_controlled_by,
    key_of,
    name,
    namespace,
    set_annotation,
    uid,
)
from controlplane.client import Client
from controlplane.clock import REAL_CLOCK, Clock, rfc3339
from controlplane.controllers import deployutil as du
from controlplane.controllers.base import Requeue
from controlplane.controllers.podutil import is_active, is_available
from controlplane.informer import Informer
from controlplane.store.base import AlreadyExists
from controlplane.workqueue import WorkQueue

log = logging.getLogger("controlplane.deployment")


class DeploymentController:
    name = "deployment"

    def __init__(
        self,
        client: Client,
        d_informer: Informer,
        rs_informer: Informer,
        pod_informer: Informer,
        clock: Clock = REAL_CLOCK,
    ) -> None:
        self.client = client
        self.d_cache = d_informer.cache
        self.rs_cache = rs_informer.cache
        self.pod_cache = pod_informer.cache
        self.clock = clock
        self.queue = WorkQueue("deployment", clock)
        self._written: dict[str, int] = {}  # ReplicaSet uid -> mod_revision of our last write to it
        self._lock = threading.Lock()
        d_informer.add_handler(self._enqueue, lambda old, new: self._enqueue(new), self._enqueue)
        rs_informer.add_handler(self._rs_event, lambda old, new: self._rs_event(new), self._rs_event)
        pod_informer.add_handler(self._pod_event, lambda old, new: self._pod_event(new), self._pod_event)

    # ---- handlers ----

    def _enqueue(self, d: Obj) -> None:
        self.queue.add(key_of(d))

    def _rs_event(self, rs: Obj) -> None:
        ref = controller_ref(rs)
        if ref is not None and ref.get("kind") == "Deployment":
            self.queue.add(f"{namespace(rs)}/{ref['name']}")

    def _pod_event(self, pod: Obj) -> None:
        ref = controller_ref(pod)
        if ref is None or ref.get("kind") != "ReplicaSet":
            return
        rs = self.rs_cache.get_by(namespace(pod), ref["name"])
        if rs is not None:
            self._rs_event(rs)

    # ---- sync ----

    def sync(self, key: str) -> None:
        d = self.d_cache.get(key)
        if d is None or deleting(d):
            return
        rses = [rs for rs in self.rs_cache.list(namespace(d)) if is_controlled_by(rs, d)]
        with self._lock:
            for rs in rses:
                if int(rs["metadata"]["resourceVersion"]) < self._written.get(uid(rs), 0):
                    raise Requeue(f"cache of {name(rs)} predates our last write", after=0.05)
        if d["spec"].get("paused"):
            new = du.find_new(d, rses)
            self._sync_status(d, new, [rs for rs in rses if rs is not new])
            return
        if (d["spec"].get("strategy") or {}).get("type") == "Recreate":
            self._rollout_recreate(d, rses)
        else:
            self._rollout_rolling(d, rses)

    # ---- ReplicaSets ----

    def _new_and_old(self, d: Obj, rses: list[Obj], create: bool) -> tuple[Obj | None, list[Obj], Obj]:
        """(new ReplicaSet or None, old ones, the Deployment as last written)."""
        new = du.find_new(d, rses)
        old = [rs for rs in rses if rs is not new]
        next_rev = du.max_revision(old) + 1
        if new is not None:
            if du.revision(new) < next_rev:  # an old template came back (rollback): it becomes the latest revision
                rs = deep_copy(new)
                set_annotation(rs, du.REVISION, str(next_rev))
                if du.CHANGE_CAUSE in (d["metadata"].get("annotations") or {}):
                    set_annotation(rs, du.CHANGE_CAUSE, d["metadata"]["annotations"][du.CHANGE_CAUSE])
                new = self._write_rs(rs)
            return new, old, self._set_revision(d, du.revision(new))
        if not create:
            return None, old, d
        collisions = (d.get("status") or {}).get("collisionCount", 0)
        h = du.template_hash(d["spec"]["template"], collisions)
        rs = du.new_replica_set(d, h, next_rev)
        try:
            new = self.client.create(rs)
            log.info("%s: created ReplicaSet %s (revision %d)", key_of(d), name(new), next_rev)
        except AlreadyExists:
            live = self.client.try_get(kinds.REPLICA_SET, namespace(d), name(rs))
            if (
                live is None
                or not is_controlled_by(live, d)
                or not du.equal_ignore_hash(live["spec"]["template"], d["spec"]["template"])
            ):
                st = deep_copy(d)
                st.setdefault("status", {})["collisionCount"] = collisions + 1
                self.client.update_status(st)
                raise Requeue(f"hash collision on {name(rs)}") from None
            raise Requeue(f"{name(rs)} exists but is not in the cache yet", after=0.05) from None
        with self._lock:
            self._written[uid(new)] = int(new["metadata"]["resourceVersion"])
        return new, old, self._set_revision(d, next_rev)

    def _set_revision(self, d: Obj, rev: int) -> Obj:
        if du.revision(d) == rev:
            return d
        d2 = deep_copy(d)
        set_annotation(d2, du.REVISION, str(rev))
        return self.client.update(d2)

    def _write_rs(self, rs: Obj) -> Obj:
        out = self.client.update(rs)
        with self._lock:
            self._written[uid(out)] = int(out["metadata"]["resourceVersion"])
        return out

    def _scale(self, d: Obj, rs: Obj, n: int) -> Obj:
        log.info("%s: scaling ReplicaSet %s from %d to %d", key_of(d), name(rs), du.replicas(rs), n)
        rs2 = deep_copy(rs)
        rs2["spec"]["replicas"] = n
        return self._write_rs(rs2)

    def _available(self, rs: Obj | None) -> int:
        """Pods of rs that are available now and will stay so: capped by its spec.replicas."""
        if rs is None:
            return 0
        ready = sum(
            1
            for p in self.pod_cache.list(namespace(rs))
            if is_controlled_by(p, rs) and is_active(p) and is_available(p)
        )
        return min(ready, du.replicas(rs))

    # ---- strategies ----

    def _rollout_rolling(self, d: Obj, rses: list[Obj]) -> None:
        new, old, d = self._new_and_old(d, rses, create=True)
        assert new is not None
        if self._reconcile_new(d, new, old) or self._reconcile_old(d, new, old):
            self._sync_status(d, new, old)
            return
        want = d["spec"].get("replicas", 1)
        if du.replicas(new) == want and self._available(new) == want and all(du.replicas(rs) == 0 for rs in old):
            self._cleanup(d, old)
        self._sync_status(d, new, old)

    def _reconcile_new(self, d: Obj, new: Obj, old: list[Obj]) -> bool:
        want = d["spec"].get("replicas", 1)
        cur = du.replicas(new)
        if cur == want:
            return False
        if cur > want:
            self._scale(d, new, want)
            return True
        surge, _ = du.surge_and_unavailable(d)
        total = cur + sum(du.replicas(rs) for rs in old)
        room = want + surge - total
        if room <= 0:
            return False
        self._scale(d, new, cur + min(room, want - cur))
        return True

    def _reconcile_old(self, d: Obj, new: Obj, old: list[Obj]) -> bool:
        if sum(du.replicas(rs) for rs in old) == 0:
            return False
        want = d["spec"].get("replicas", 1)
        _, max_unavailable = du.surge_and_unavailable(d)
        min_available = want - max_unavailable
        all_count = du.replicas(new) + sum(du.replicas(rs) for rs in old)
        new_unavailable = du.replicas(new) - self._available(new)
        max_scaled_down = all_count - min_available - new_unavailable
        if max_scaled_down <= 0:
            return False
        by_age = sorted(old, key=lambda rs: (rs["metadata"].get("creationTimestamp", ""), name(rs)))
        scaled = 0
        # First the old pods that are not available anyway (they cost no availability).
        for i, rs in enumerate(by_age):
            if scaled >= max_scaled_down:
                break
            unhealthy = du.replicas(rs) - self._available(rs)
            if unhealthy <= 0:
                continue
            n = min(max_scaled_down - scaled, unhealthy)
            by_age[i] = self._scale(d, rs, du.replicas(rs) - n)
            scaled += n
        # Then available ones, while availability stays >= replicas - maxUnavailable.
        available = self._available(new) + sum(self._available(rs) for rs in by_age)
        budget = available - min_available
        for i, rs in enumerate(by_age):
            if budget <= 0:
                break
            if du.replicas(rs) == 0:
                continue
            n = min(du.replicas(rs), budget)
            by_age[i] = self._scale(d, rs, du.replicas(rs) - n)
            budget -= n
            scaled += n
        return scaled > 0

    def _rollout_recreate(self, d: Obj, rses: list[Obj]) -> None:
        new, old, d = self._new_and_old(d, rses, create=False)
        scaled = False
        for rs in old:
            if du.replicas(rs) > 0:
                self._scale(d, rs, 0)
                scaled = True
        if scaled:
            self._sync_status(d, new, old)
            return
        old_uids = {uid(rs) for rs in old}
        if any(
            (controller_ref(p) or {}).get("uid") in old_uids and is_active(p) for p in self.pod_cache.list(namespace(d))
        ):
            self._sync_status(d, new, old)
            return  # pod deletions requeue us
        if new is None:
            new, old, d = self._new_and_old(d, rses, create=True)
            assert new is not None
        want = d["spec"].get("replicas", 1)
        if du.replicas(new) != want:
            new = self._scale(d, new, want)
        elif self._available(new) == want:
            self._cleanup(d, old)
        self._sync_status(d, new, old)

    def _cleanup(self, d: Obj, old: list[Obj]) -> None:
        limit = d["spec"].get("revisionHistoryLimit", 10)
        dead = [rs for rs in old if du.replicas(rs) == 0 and du.status_of(rs, "replicas") == 0 and not deleting(rs)]
        dead.sort(key=du.revision)
        for rs in dead[: max(0, len(dead) - limit)]:
            log.info("%s: deleting old ReplicaSet %s (revision %d)", key_of(d), name(rs), du.revision(rs))
            self.client.delete(kinds.REPLICA_SET, namespace(rs), name(rs), precondition=rs)

    # ---- status ----

    def _sync_status(self, d: Obj, new: Obj | None, old: list[Obj]) -> None:
        all_rs = ([new] if new is not None else []) + old
        want = d["spec"].get("replicas", 1)
        total = sum(du.status_of(rs, "replicas") for rs in all_rs)
        available = sum(du.status_of(rs, "availableReplicas") for rs in all_rs)
        _, max_unavailable = du.surge_and_unavailable(d)
        st = deep_copy(d.get("status") or {})
        st.update(
            {
                "observedGeneration": d["metadata"].get("generation", 1),
                "replicas": total,
                "updatedReplicas": du.status_of(new, "replicas"),
                "readyReplicas": sum(du.status_of(rs, "readyReplicas") for rs in all_rs),
                "availableReplicas": available,
                "unavailableReplicas": max(total - available, 0),
            }
        )
        probe = {"metadata": d["metadata"], "spec": d["spec"], "status": st}
        complete = du.rollout_complete(probe) and all(du.status_of(rs, "replicas") == 0 for rs in old)
        conds = [
            {
                "type": "Available",
                "status": "True" if available >= want - max_unavailable else "False",
                "reason": "MinimumReplicasAvailable"
                if available >= want - max_unavailable
                else "MinimumReplicasUnavailable",
                "message": "Deployment has minimum availability."
                if available >= want - max_unavailable
                else "Deployment does not have minimum availability.",
            },
            {
                "type": "Progressing",
                "status": "True",
                "reason": "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
                "message": f'ReplicaSet "{name(new)}" has successfully progressed.'
                if complete
                else f'ReplicaSet "{name(new) if new else "?"}" is progressing.',
            },
        ]
        now = rfc3339(self.clock.now())
        old_conds = {c["type"]: c for c in st.get("conditions") or []}
        new_conds = []
        for c in conds:
            prev = old_conds.get(c["type"])
            if prev is not None and all(prev.get(k) == c[k] for k in ("status", "reason", "message")):
                new_conds.append(prev)
            else:
                transition = (
                    prev["lastTransitionTime"] if prev is not None and prev.get("status") == c["status"] else now
                )
                new_conds.append({**c, "lastUpdateTime": now, "lastTransitionTime": transition})
        st["conditions"] = new_conds
        if st == d.get("status"):
            return
        d2 = deep_copy(d)
        d2["status"] = st
        self.client.update_status(d2)
