"""The node agent against a fake store: real local processes, restarts per restartPolicy,
status reporting, stopping pods that are deleted, heartbeat lease and node registration."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from controlplane.agent import AgentConfig, NodeAgent
from controlplane.api import kinds
from controlplane.api.meta import condition_true
from controlplane.clock import REAL_CLOCK
from controlplane.store.fake import FakeStore
from tests.controlplane.harness import wait_for

# The agent runs each pod's command as a real local process (through controlplane.agent, which the
# conftest detection does not follow into product code).
pytestmark = pytest.mark.integration


def make(tmp_path: Path) -> tuple[FakeStore, NodeAgent]:
    store = FakeStore(REAL_CLOCK)
    agent = NodeAgent(store, AgentConfig("n1", tmp_path, lease_ttl=3, restart_backoff=0.05))
    return store, agent


def bound_pod(command: list[str], policy: str = "Always") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {
            "nodeName": "n1",
            "restartPolicy": policy,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "command": command, "env": [{"name": "GREETING", "value": "hello"}]}],
        },
    }


def sync(agent: NodeAgent) -> dict:
    agent.pod_informer.list_once()
    agent.sync("default/p")
    return agent.client.get(kinds.POD, "default", "p")


def test_runs_restarts_reports_and_stops(tmp_path):
    _store, agent = make(tmp_path)
    agent.client.create(bound_pod(["sh", "-c", "echo $GREETING from $POD_NAME; exec sleep 100"]))
    try:
        p = sync(agent)
        cs = p["status"]["containerStatuses"][0]
        assert p["status"]["phase"] == "Running" and condition_true(p, "Ready") and cs["restartCount"] == 0
        pid = int(cs["containerID"].removeprefix("process://"))
        assert os.getpgid(pid) == pid, "own process group"
        log = tmp_path / "pods" / f"default_p_{p['metadata']['uid']}" / "c.log"
        wait_for("output", lambda: "hello from p" in log.read_text(), timeout=60)
        os.kill(pid, signal.SIGKILL)

        def restarted() -> dict | None:
            q = sync(agent)
            c = q["status"]["containerStatuses"][0]
            return q if c["restartCount"] == 1 and "running" in c["state"] else None

        q = wait_for("restart", restarted, timeout=60)
        c = q["status"]["containerStatuses"][0]
        assert c["lastState"]["terminated"]["exitCode"] == 137
        new_pid = int(c["containerID"].removeprefix("process://"))
        agent.client.delete(kinds.POD, "default", "p")
        agent.pod_informer.list_once()
        agent.sync("default/p")
        assert "default/p" not in agent.pods
        wait_for("the process gone", lambda: _gone(new_pid), timeout=60)
    finally:
        agent.shutdown()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_never_and_onfailure(tmp_path):
    _store, agent = make(tmp_path)
    agent.client.create(bound_pod(["sh", "-c", "exit 3"], policy="Never"))
    try:
        p = wait_for("Failed", lambda: (q := sync(agent))["status"]["phase"] == "Failed" and q, timeout=60)
        term = p["status"]["containerStatuses"][0]["state"]["terminated"]
        assert term["exitCode"] == 3 and term["reason"] == "Error"
        agent.client.delete(kinds.POD, "default", "p")
        sync_after_delete = agent.pod_informer.list_once()
        agent.sync("default/p")
        assert sync_after_delete
        agent.client.create(bound_pod(["true"], policy="OnFailure"))
        p = wait_for("Succeeded", lambda: (q := sync(agent))["status"]["phase"] == "Succeeded" and q, timeout=60)
        assert p["status"]["containerStatuses"][0]["restartCount"] == 0
    finally:
        agent.shutdown()


def test_a_command_that_cannot_run_waits_with_a_reason(tmp_path):
    _store, agent = make(tmp_path)
    agent.client.create(bound_pod(["/no/such/binary"]))
    try:
        p = sync(agent)
        waiting = p["status"]["containerStatuses"][0]["state"]["waiting"]
        assert waiting["reason"] == "RunContainerError" and "/no/such/binary" in waiting["message"]
    finally:
        agent.shutdown()


def test_heartbeat_registers_the_node_and_holds_its_lease(tmp_path):
    store, agent = make(tmp_path)
    agent.heartbeat_once()
    n = agent.client.get(kinds.NODE, None, "n1")
    assert condition_true(n, "Ready") and n["status"]["allocatable"]["cpu"] == "4"
    kv = store.get("/registry/leases/kube-node-lease/n1")
    assert kv is not None and kv.lease == agent.lease_id
    store.revoke_lease(agent.lease_id)  # as if it had expired
    agent.heartbeat_once()
    kv = store.get("/registry/leases/kube-node-lease/n1")
    assert kv is not None and kv.lease == agent.lease_id


def test_heartbeat_bounds_its_node_read_like_the_renewal(tmp_path, monkeypatch):
    """After a renewal the agent reads its Node (to re-register it if it is not Ready): that read must
    give up as soon as the renewal would (ttl/3), or a read stuck on a member whose leader just died
    (5 s per try against etcd) holds up the next renewal until a 3 s lease has expired."""
    store, agent = make(tmp_path)
    agent.heartbeat_once()
    reads = []
    real_get = store.get

    def get(key, within=None):
        reads.append((key, within))
        return real_get(key, within)

    monkeypatch.setattr(store, "get", get)
    agent.heartbeat_once()
    assert reads == [(kinds.NODE.key(None, "n1"), 1.0)]
