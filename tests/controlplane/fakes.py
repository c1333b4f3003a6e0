"""Objects and a fake environment for controller unit tests: a FakeStore, a FakeClock, informers
whose caches are refreshed by hand (``pump``), as client-go's controller tests fill indexers."""

from __future__ import annotations

import copy
import random

from controlplane.api import kinds
from controlplane.api.meta import Obj, new_controller_ref
from controlplane.client import Client
from controlplane.clock import FakeClock
from controlplane.informer import Informer
from controlplane.store.fake import FakeStore


def pod_template(version: str = "v1", app: str = "web") -> Obj:
    return {
        "metadata": {"labels": {"app": app}},
        "spec": {
            "containers": [
                {
                    "name": "web",
                    "command": ["sleep", "1000"],
                    "env": [{"name": "VERSION", "value": version}],
                    "resources": {"requests": {"cpu": "100m", "memory": "32Mi"}},
                }
            ]
        },
    }


def deployment(
    name: str = "web", replicas: int = 3, version: str = "v1", surge: object = 1, unavailable: object = 1
) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}},
            "template": pod_template(version, name),
        },
    }


def node(name: str, cpu: str = "2", memory: str = "4Gi", ready: bool = True, labels: dict | None = None) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        "spec": {},
        "status": {
            "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True" if ready else "Unknown"}],
        },
    }


def pod(name: str, owner: Obj | None = None, node_name: str = "", ready: bool = False, cpu: str = "100m") -> Obj:
    p: Obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "containers": [{"name": "c", "command": ["sleep", "1"], "resources": {"requests": {"cpu": cpu}}}],
            **({"nodeName": node_name} if node_name else {}),
        },
    }
    if owner is not None:
        p["metadata"]["ownerReferences"] = [new_controller_ref(owner)]
        p["metadata"]["labels"] = dict(owner["spec"]["template"]["metadata"]["labels"])
    if ready:
        p["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    return p


class Env:
    """A fake store and clock, a client, and one informer per kind (synced by ``pump``)."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.store = FakeStore(self.clock)
        self.client = Client(self.store, self.clock, random.Random(7))
        self.informers = {k.kind: Informer(self.store, k, self.clock) for k in kinds.ALL}

    def inf(self, kind: kinds.Kind) -> Informer:
        return self.informers[kind.kind]

    def pump(self) -> None:
        """Brings every cache up to the store (delivering add/update/delete to handlers)."""
        for inf in self.informers.values():
            inf.list_once()

    def create(self, obj: Obj) -> Obj:
        out = self.client.create(copy.deepcopy(obj))
        return out

    def list(self, kind: kinds.Kind) -> list[Obj]:
        return self.client.list(kind)[0]

    def verbs(self) -> list[tuple[str, str]]:
        """The writes since the last clear, as (verb, resource) pairs."""
        return [(a.verb, kinds.parse_key(a.key)[0].resource) for a in self.store.actions]
