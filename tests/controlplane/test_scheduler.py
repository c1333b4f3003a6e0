"""The scheduler against a fake store: filters, spreading, Unschedulable and retry, assumed pods."""

from __future__ import annotations

import pytest

from controlplane.api import kinds
from controlplane.api.meta import get_condition
from controlplane.controllers.base import Requeue
from controlplane.scheduler import Scheduler
from tests.controlplane.fakes import Env, deployment, node, pod


def scheduler(env: Env) -> Scheduler:
    return Scheduler(env.client, env.inf(kinds.POD), env.inf(kinds.NODE), env.clock)


def bound(env: Env, name: str) -> str | None:
    return env.client.get(kinds.POD, "default", name)["spec"].get("nodeName")


def test_binds_to_a_ready_node_that_fits_and_sets_pod_scheduled():
    env = Env()
    env.create(node("a", cpu="1"))
    env.create(node("b", cpu="1", ready=False))
    env.create(pod("p", cpu="500m"))
    s = scheduler(env)
    env.pump()
    s.sync("default/p")
    p = env.client.get(kinds.POD, "default", "p")
    assert p["spec"]["nodeName"] == "a"
    assert get_condition(p, "PodScheduled")["status"] == "True"
    assert [a.verb for a in env.store.actions if "pods" in a.key] == ["create", "update"], "one write binds"


def test_unschedulable_gets_a_condition_with_reasons_and_is_retried_when_a_node_changes():
    env = Env()
    env.create(node("a", cpu="1", labels={"disk": "ssd"}))
    env.create(node("b", cpu="4", labels={"disk": "hdd"}))
    p = pod("big", cpu="2")
    p["spec"]["nodeSelector"] = {"disk": "ssd"}
    env.create(p)
    s = scheduler(env)
    env.pump()
    with pytest.raises(Requeue):
        s.sync("default/big")
    cond = get_condition(env.client.get(kinds.POD, "default", "big"), "PodScheduled")
    assert cond["status"] == "False" and cond["reason"] == "Unschedulable"
    assert cond["message"] == (
        "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) didn't match Pod's node affinity/selector."
    )
    env.create(node("c", cpu="4", labels={"disk": "ssd"}))
    while (k := s.queue.get(0)) is not None:
        s.queue.done(k)
    env.pump()  # the node event puts unschedulable pods back in the queue
    assert s.queue.get(0) == "default/big"
    s.sync("default/big")
    assert bound(env, "big") == "c"


def test_replicas_spread_over_nodes_and_assumed_pods_count():
    env = Env()
    env.create(node("a", cpu="1"))
    env.create(node("b", cpu="1"))
    d = env.create(deployment())
    owner = {**d, "spec": d["spec"]}
    for i in range(4):
        env.create(pod(f"p{i}", owner=owner, cpu="400m"))
    s = scheduler(env)
    env.pump()
    for i in range(4):  # no pump in between: the scheduler relies on what it assumed
        s.sync(f"default/p{i}")
    placed = [bound(env, f"p{i}") for i in range(4)]
    assert sorted(placed) == ["a", "a", "b", "b"]
    env.create(pod("p4", owner=owner, cpu="400m"))
    env.pump()
    with pytest.raises(Requeue):
        s.sync("default/p4")  # 2 x 400m on each 1-cpu node: no room for a third
