"""The garbage collector: deletes objects whose every owner (by ownerReferences uid) is gone.

Deleting a Deployment orphans its ReplicaSets, which are collected, which orphans their pods,
which are collected: Kubernetes' background cascading deletion. An owner missing from the
cache is confirmed with a read before its dependents are deleted (it may just be newer than
the cache), and the dependent is deleted only at the version that was checked.
"""

from __future__ import annotations

import logging

from controlplane.api import kinds
from controlplane.api.meta import Obj, key_of, namespace, owner_references, uid
from controlplane.client import Client
from controlplane.clock import REAL_CLOCK, Clock
from controlplane.informer import Informer
from controlplane.workqueue import WorkQueue

log = logging.getLogger("controlplane.gc")


class GarbageCollector:
    name = "garbagecollector"

    def __init__(self, client: Client, informers: dict[str, Informer], clock: Clock = REAL_CLOCK) -> None:
        """informers: by kind name, for every kind that can own or be owned (Deployment, ReplicaSet, Pod)."""
        self.client = client
        self.informers = informers
        self.clock = clock
        self.queue = WorkQueue("garbagecollector", clock)
        for kind_name, inf in informers.items():
            inf.add_handler(
                lambda o, k=kind_name: self._maybe_dependent(k, o),
                lambda old, new, k=kind_name: self._maybe_dependent(k, new),
                lambda o, k=kind_name: self._owner_deleted(k, o),
            )

    def _maybe_dependent(self, kind_name: str, obj: Obj) -> None:
        if owner_references(obj):
            self.queue.add(f"{kind_name}|{key_of(obj)}")

    def _owner_deleted(self, kind_name: str, owner: Obj) -> None:
        owner_uid = uid(owner)
        for k, inf in self.informers.items():
            for obj in inf.cache.list(namespace(owner) or None):
                if any(r.get("uid") == owner_uid for r in owner_references(obj)):
                    self.queue.add(f"{k}|{key_of(obj)}")

    def _owner_exists(self, ns: str, ref: Obj) -> bool:
        kind = kinds.BY_KIND.get(ref.get("kind", ""))
        if kind is None:
            return True  # a kind we do not know: never collect on its account
        inf = self.informers.get(kind.kind)
        cached = inf.cache.get_by(ns if kind.namespaced else None, ref["name"]) if inf is not None else None
        if cached is not None and uid(cached) == ref.get("uid"):
            return True
        live = self.client.try_get(kind, ns if kind.namespaced else None, ref["name"])
        return live is not None and uid(live) == ref.get("uid")

    def sync(self, key: str) -> None:
        kind_name, obj_key = key.split("|", 1)
        inf = self.informers[kind_name]
        obj = inf.cache.get(obj_key)
        if obj is None or not owner_references(obj):
            return
        ns = namespace(obj)
        if any(self._owner_exists(ns, ref) for ref in owner_references(obj)):
            return
        log.info("%s %s: every owner is gone; deleting it", kind_name, obj_key)
        kind = kinds.BY_KIND[kind_name]
        self.client.delete(kind, ns or None, obj["metadata"]["name"], precondition=obj)
