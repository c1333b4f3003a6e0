"""The Deployment controller against a fake store and a fake clock, by the actions it takes."""

from __future__ import annotations

import contextlib

import pytest

from controlplane.api import kinds
from controlplane.api.meta import Obj, deep_copy, is_controlled_by, set_condition
from controlplane.controllers import deployutil as du
from controlplane.controllers.base import Requeue
from controlplane.controllers.deployment import DeploymentController
from controlplane.controllers.podutil import is_available
from controlplane.controllers.replicaset import ReplicaSetController
from tests.controlplane.fakes import Env, deployment


def controllers(env: Env) -> tuple[DeploymentController, ReplicaSetController]:
    dc = DeploymentController(
        env.client, env.inf(kinds.DEPLOYMENT), env.inf(kinds.REPLICA_SET), env.inf(kinds.POD), env.clock
    )
    rc = ReplicaSetController(env.client, env.inf(kinds.REPLICA_SET), env.inf(kinds.POD), env.clock)
    return dc, rc


def kubelet(env: Env, ready: bool = True) -> None:
    """Plays every node agent: pods become Running and Ready."""
    for p in env.list(kinds.POD):
        if p.get("status", {}).get("phase") == "Running":
            continue
        p2 = deep_copy(p)
        p2["status"]["phase"] = "Running"
        set_condition(p2, {"type": "Ready", "status": "True" if ready else "False"}, "t")
        env.client.update_status(p2)


def sync_all(env: Env, dc: DeploymentController, rc: ReplicaSetController) -> None:
    env.pump()
    for d in env.list(kinds.DEPLOYMENT):
        with contextlib.suppress(Requeue):
            dc.sync(f"default/{d['metadata']['name']}")
    env.pump()
    for rs in env.list(kinds.REPLICA_SET):
        rc.expectations.delete(f"default/{rs['metadata']['name']}")
        rc.sync(f"default/{rs['metadata']['name']}")


def rses(env: Env) -> list[Obj]:
    return sorted(env.list(kinds.REPLICA_SET), key=du.revision)


def converge(env: Env, dc: DeploymentController, rc: ReplicaSetController, check=None, rounds: int = 40) -> int:
    for i in range(rounds):
        before = env.store.revision
        sync_all(env, dc, rc)
        kubelet(env)
        if check is not None:
            check()
        if env.store.revision == before:
            return i
    raise AssertionError("did not converge")


def test_a_new_deployment_gets_a_replicaset_with_hash_and_revision():
    env = Env()
    dc, _rc = controllers(env)
    env.create(deployment(replicas=3))
    env.pump()
    env.store.clear_actions()
    dc.sync("default/web")
    assert env.verbs()[:1] == [("create", "replicasets")]
    [rs] = env.list(kinds.REPLICA_SET)
    h = rs["metadata"]["labels"][du.HASH_LABEL]
    assert rs["metadata"]["name"] == f"web-{h}"
    assert rs["spec"]["selector"]["matchLabels"] == {"app": "web", du.HASH_LABEL: h}
    assert rs["spec"]["replicas"] == 3, "scaled up in the same sync (maxSurge 1 over 0 pods)"
    assert du.revision(rs) == 1
    d = env.client.get(kinds.DEPLOYMENT, "default", "web")
    assert du.revision(d) == 1 and d["status"]["observedGeneration"] == 1
    assert is_controlled_by(rs, d)


def test_scale_up_and_down():
    env = Env()
    dc, rc = controllers(env)
    env.create(deployment(replicas=3))
    converge(env, dc, rc)
    assert len(env.list(kinds.POD)) == 3
    d = env.client.get(kinds.DEPLOYMENT, "default", "web")
    d["spec"]["replicas"] = 5
    env.client.update(d)
    converge(env, dc, rc)
    assert len(env.list(kinds.POD)) == 5
    d = env.client.get(kinds.DEPLOYMENT, "default", "web")
    assert d["status"]["availableReplicas"] == 5 and d["status"]["observedGeneration"] == 2
    d["spec"]["replicas"] = 2
    env.client.update(d)
    converge(env, dc, rc)
    assert len(env.list(kinds.POD)) == 2 and len(env.list(kinds.REPLICA_SET)) == 1


@pytest.mark.parametrize(("surge", "unavailable"), [(1, 1), (0, 1), (2, 0), ("25%", "25%")])
def test_rolling_update_stays_within_surge_and_unavailability(surge, unavailable):
    env = Env()
    dc, rc = controllers(env)
    env.create(deployment(replicas=5, surge=surge, unavailable=unavailable))
    converge(env, dc, rc)
    d = env.client.get(kinds.DEPLOYMENT, "default", "web")
    max_surge, max_unavailable = du.surge_and_unavailable(d)
    d["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = "v2"
    env.client.update(d)
    seen_versions = set()

    def check() -> None:
        pods = env.list(kinds.POD)
        available = sum(1 for p in pods if is_available(p))
        assert available >= 5 - max_unavailable, f"available fell to {available}"
        assert sum(du.replicas(rs) for rs in env.list(kinds.REPLICA_SET)) <= 5 + max_surge
        seen_versions.add(frozenset(p["spec"]["containers"][0]["env"][0]["value"] for p in pods))

    converge(env, dc, rc, check)
    assert frozenset({"v1", "v2"}) in seen_versions, "old and new pods ran side by side"
    old, new = rses(env)
    assert (du.revision(old), du.replicas(old)) == (1, 0)
    assert (du.revision(new), du.replicas(new)) == (2, 5)
    d = env.client.get(kinds.DEPLOYMENT, "default", "web")
    assert du.rollout_complete(d)
    assert d["status"]["updatedReplicas"] == 5 and d["status"]["observedGeneration"] == 2


def test_rollback_makes_the_old_replicaset_the_newest_revision():
    env = Env()
    dc, rc = controllers(env)
    env.create(deployment(replicas=2))
    converge(env, dc, rc)
    d = env.client.get(kinds.DEPLOYMENT, "default", "web")
    v1_template = deep_copy(d["spec"]["template"])
    d["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = "v2"
    env.client.update(d)
    converge(env, dc, rc)
    v1_rs = next(rs for rs in env.list(kinds.REPLICA_SET) if du.revision(rs) == 1)
    d = env.client.get(kinds.DEPLOYMENT, "default", "web")
    d["spec"]["template"] = v1_template  # what `rollout undo` writes
    env.client.update(d)
    converge(env, dc, rc)
    back = env.client.get(kinds.REPLICA_SET, "default", v1_rs["metadata"]["name"])
    assert du.revision(back) == 3 and du.replicas(back) == 2
    assert du.revision(env.client.get(kinds.DEPLOYMENT, "default", "web")) == 3
    assert len(env.list(kinds.REPLICA_SET)) == 2, "no third ReplicaSet: the old one is reused"


def test_revision_history_limit_deletes_the_oldest_replicasets():
    env = Env()
    dc, rc = controllers(env)
    d0 = deployment(replicas=1)
    d0["spec"]["revisionHistoryLimit"] = 1
    env.create(d0)
    converge(env, dc, rc)
    for v in ("v2", "v3", "v4"):
        d = env.client.get(kinds.DEPLOYMENT, "default", "web")
        d["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = v
        env.client.update(d)
        converge(env, dc, rc)
    assert [du.revision(rs) for rs in rses(env)] == [3, 4]


def test_recreate_scales_old_to_zero_before_creating_new():
    env = Env()
    dc, rc = controllers(env)
    d0 = deployment(replicas=2)
    d0["spec"]["strategy"] = {"type": "Recreate"}
    env.create(d0)
    converge(env, dc, rc)
    d = env.client.get(kinds.DEPLOYMENT, "default", "web")
    d["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = "v2"
    env.client.update(d)

    def check() -> None:
        versions = {p["spec"]["containers"][0]["env"][0]["value"] for p in env.list(kinds.POD)}
        assert versions != {"v1", "v2"}, "Recreate never runs both versions"

    converge(env, dc, rc, check)
    assert {p["spec"]["containers"][0]["env"][0]["value"] for p in env.list(kinds.POD)} == {"v2"}


def test_a_stale_cache_is_not_acted_on():
    env = Env()
    dc, _rc = controllers(env)
    env.create(deployment(replicas=3))
    env.pump()
    dc.sync("default/web")  # creates and scales the ReplicaSet; the cache has not seen it
    env.inf(kinds.REPLICA_SET).list_once()
    rs = env.list(kinds.REPLICA_SET)[0]
    stale = deep_copy(rs)
    stale["metadata"]["resourceVersion"] = str(int(rs["metadata"]["resourceVersion"]) - 1)
    env.inf(kinds.REPLICA_SET).cache.add(stale)
    env.store.clear_actions()
    with pytest.raises(Requeue):
        dc.sync("default/web")
    assert env.store.actions == []


def test_deleting_a_deployment_leaves_collection_to_the_gc():
    from controlplane.controllers.garbagecollector import GarbageCollector

    env = Env()
    dc, rc = controllers(env)
    env.create(deployment(replicas=2))
    converge(env, dc, rc)
    gc = GarbageCollector(
        env.client,
        {k: env.informers[k] for k in ("Deployment", "ReplicaSet", "Pod")},
        env.clock,
    )
    env.client.delete(kinds.DEPLOYMENT, "default", "web")
    for _ in range(3):
        env.pump()
        while (key := gc.queue.get(0)) is not None:
            gc.sync(key)
            gc.queue.done(key)
    assert env.list(kinds.REPLICA_SET) == [] and env.list(kinds.POD) == []
