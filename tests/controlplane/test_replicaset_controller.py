"""The ReplicaSet controller: creates and deletes pods under expectations, reports status."""

from __future__ import annotations

from controlplane.api import kinds
from controlplane.api.meta import controller_ref
from controlplane.controllers.replicaset import ReplicaSetController
from tests.controlplane.fakes import Env, pod, pod_template


def replicaset(replicas: int) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": "rs", "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}, "template": pod_template()},
    }


def setup(replicas: int) -> tuple[Env, ReplicaSetController, dict]:
    env = Env()
    rs = env.create(replicaset(replicas))
    c = ReplicaSetController(env.client, env.inf(kinds.REPLICA_SET), env.inf(kinds.POD), env.clock)
    env.pump()
    return env, c, rs


def test_creates_missing_pods_once_until_it_sees_them():
    env, c, rs = setup(3)
    c.sync("default/rs")
    pods = env.list(kinds.POD)
    assert len(pods) == 3
    assert all(controller_ref(p)["uid"] == rs["metadata"]["uid"] for p in pods)
    assert all(p["metadata"]["name"].startswith("rs-") for p in pods)
    env.store.clear_actions()
    env.inf(kinds.REPLICA_SET).list_once()
    c.sync("default/rs")  # the pod cache is stale, but expectations hold it back
    assert [a for a in env.store.actions if "/pods/" in a.key] == []
    env.pump()  # the informer sees the three creations
    c.sync("default/rs")
    assert len(env.list(kinds.POD)) == 3
    assert env.client.get(kinds.REPLICA_SET, "default", "rs")["status"]["replicas"] == 3


def test_deletes_the_least_useful_pods_first():
    env, c, rs = setup(1)
    env.create(pod("ready", owner=rs, node_name="n", ready=True))
    env.create(pod("unscheduled", owner=rs))
    env.create(pod("scheduled", owner=rs, node_name="n"))
    env.pump()
    c.sync("default/rs")
    assert [p["metadata"]["name"] for p in env.list(kinds.POD)] == ["ready"]
    env.pump()
    c.sync("default/rs")
    st = env.client.get(kinds.REPLICA_SET, "default", "rs")["status"]
    assert st["replicas"] == 1 and st["readyReplicas"] == 1 and st["availableReplicas"] == 1


def test_terminal_pods_are_replaced():
    env, c, rs = setup(1)
    done = pod("done", owner=rs, node_name="n")
    done["status"] = {"phase": "Failed"}
    env.create(done)
    env.pump()
    c.sync("default/rs")
    assert len(env.list(kinds.POD)) == 2
