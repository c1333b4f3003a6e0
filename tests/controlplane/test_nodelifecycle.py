"""The node lifecycle controller: an expired heartbeat lease makes a node NotReady and evicts its pods."""

from __future__ import annotations

import pytest

from controlplane.api import kinds
from controlplane.api.meta import get_condition
from controlplane.controllers.base import Requeue
from controlplane.controllers.nodelifecycle import NodeLifecycleController
from tests.controlplane.fakes import Env, node, pod


def lease(name: str) -> dict:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": name},
    }


def setup(eviction: float = 0.0) -> tuple[Env, NodeLifecycleController]:
    env = Env()
    c = NodeLifecycleController(
        env.client, env.inf(kinds.NODE), env.inf(kinds.LEASE), env.inf(kinds.POD), env.clock, eviction
    )
    for n in ("a", "b"):
        env.create(node(n))
        env.client.create(lease(n), lease=env.store.grant_lease(3))
    env.create(pod("on-a", node_name="a", ready=True))
    env.create(pod("on-b", node_name="b", ready=True))
    env.pump()
    return env, c


def test_a_live_lease_changes_nothing():
    env, c = setup()
    env.store.clear_actions()
    c.sync("a")
    assert env.store.actions == []


def test_an_expired_lease_makes_the_node_not_ready_and_evicts_its_pods():
    env, c = setup()
    env.store.keepalive(next(kv.lease for kv in env.store.list("/registry/leases/")[0] if kv.key.endswith("/b")))
    env.clock.step(2)
    env.store.keepalive(next(kv.lease for kv in env.store.list("/registry/leases/")[0] if kv.key.endswith("/b")))
    env.clock.step(1.5)  # a's lease (3s, never renewed) is gone; b's was renewed
    env.store.expire_leases()
    env.pump()
    c.sync("a")
    c.sync("b")
    ready = get_condition(env.client.get(kinds.NODE, None, "a"), "Ready")
    assert ready["status"] == "Unknown" and ready["reason"] == "NodeStatusUnknown"
    assert [p["metadata"]["name"] for p in env.list(kinds.POD)] == ["on-b"]


def test_eviction_waits_for_the_timeout():
    env, c = setup(eviction=10)
    env.clock.step(4)
    env.store.expire_leases()
    env.pump()
    with pytest.raises(Requeue) as r:
        c.sync("a")
    assert 9 < r.value.after <= 10
    assert len(env.list(kinds.POD)) == 2
    env.clock.step(10)
    env.pump()
    c.sync("a")
    assert [p["metadata"]["name"] for p in env.list(kinds.POD)] == ["on-b"]
