"""The node lifecycle controller: a Node whose heartbeat lease has expired goes NotReady, and its
pods are evicted (deleted) so their ReplicaSets replace them on nodes that are alive.

Each node agent holds ``/registry/leases/kube-node-lease/<node>`` attached to an etcd lease that
it keeps alive; when the agent stops, the store deletes the key when the TTL runs out. That
delete is the signal: the Node's Ready condition becomes Unknown ("Kubelet stopped posting node
status.", as Kubernetes says), and after ``eviction_timeout`` the pods bound to it are deleted.
The agent itself sets Ready back to True when it heartbeats again.
"""

from __future__ import annotations

import logging

from controlplane.api import kinds
from controlplane.api.meta import Obj, deep_copy, get_condition, key_of, name, namespace, set_condition
from controlplane.client import Client
from controlplane.clock import REAL_CLOCK, Clock, parse_rfc3339, rfc3339
from controlplane.controllers.base import Requeue
from controlplane.informer import Informer
from controlplane.workqueue import WorkQueue

log = logging.getLogger("controlplane.nodelifecycle")

NODE_LEASE_NAMESPACE = "kube-node-lease"


class NodeLifecycleController:
    name = "nodelifecycle"

    def __init__(
        self,
        client: Client,
        node_informer: Informer,
        lease_informer: Informer,
        pod_informer: Informer,
        clock: Clock = REAL_CLOCK,
        eviction_timeout: float = 0.0,
    ) -> None:
        self.client = client
        self.node_cache = node_informer.cache
        self.lease_cache = lease_informer.cache
        self.pod_cache = pod_informer.cache
        self.clock = clock
        self.eviction_timeout = eviction_timeout
        self.queue = WorkQueue("nodelifecycle", clock)
        node_informer.add_handler(self._enqueue_node, lambda o, n: self._enqueue_node(n), None)
        lease_informer.add_handler(self._lease_event, lambda o, n: self._lease_event(n), self._lease_event)
        pod_informer.add_handler(self._pod_event, lambda o, n: self._pod_event(n), None)

    def _enqueue_node(self, node: Obj) -> None:
        self.queue.add(name(node))

    def _lease_event(self, lease: Obj) -> None:
        if namespace(lease) == NODE_LEASE_NAMESPACE:
            self.queue.add(name(lease))

    def _pod_event(self, pod: Obj) -> None:
        node = pod.get("spec", {}).get("nodeName")
        if node:
            self.queue.add(node)

    def _lease_alive(self, node_name: str) -> bool:
        if self.lease_cache.get_by(NODE_LEASE_NAMESPACE, node_name) is not None:
            return True
        # The lease watch may lag the node watch: confirm an absence with a read before acting on it.
        return self.client.try_get(kinds.LEASE, NODE_LEASE_NAMESPACE, node_name) is not None

    def sync(self, key: str) -> None:
        node = self.node_cache.get(key)
        if node is None:
            return
        if self._lease_alive(key):
            return
        ready = get_condition(node, "Ready")
        now = self.clock.now()
        if ready is None or ready.get("status") != "Unknown":
            n2 = deep_copy(node)
            set_condition(
                n2,
                {
                    "type": "Ready",
                    "status": "Unknown",
                    "reason": "NodeStatusUnknown",
                    "message": "Kubelet stopped posting node status.",
                },
                rfc3339(now),
            )
            log.info("node %s: heartbeat lease expired; marking it NotReady", key)
            node = self.client.update_status(n2)
            ready = get_condition(node, "Ready")
        assert ready is not None
        since = parse_rfc3339(ready["lastTransitionTime"])
        wait = self.eviction_timeout - (now - since).total_seconds()
        pods = [p for p in self.pod_cache.list() if p.get("spec", {}).get("nodeName") == key]
        if not pods:
            return
        if wait > 0:
            raise Requeue(f"evicting pods of {key} in {wait:.1f}s", after=wait)
        for pod in pods:
            log.info("node %s is NotReady: evicting pod %s", key, key_of(pod))
            self.client.delete(kinds.POD, namespace(pod), name(pod), precondition=pod)
