"""The controller-manager and the scheduler as runnable components: informers, controllers and
workers wired together, behind leader election.

While a replica leads it runs a fresh set of informers and controllers; when it loses the lock
they stop (and it campaigns again), so two replicas never run controllers at the same time for
longer than the store takes to expire a dead leader's lease.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from controlplane.api import kinds
from controlplane.client import Client
from controlplane.clock import REAL_CLOCK, Clock
from controlplane.controllers.base import run_workers
from controlplane.controllers.deployment import DeploymentController
from controlplane.controllers.garbagecollector import GarbageCollector
from controlplane.controllers.nodelifecycle import NodeLifecycleController
from controlplane.controllers.replicaset import ReplicaSetController
from controlplane.informer import InformerFactory
from controlplane.leader_election import LeaderElector
from controlplane.scheduler import Scheduler
from controlplane.store.base import Store

log = logging.getLogger("controlplane.manager")


@dataclass
class ManagerConfig:
    identity: str
    leader_elect: bool = True
    lease_ttl: int = 15
    retry_period: float = 2.0
    resync: float = 30.0
    workers: int = 2
    eviction_timeout: float = 0.0


def run_controllers(store: Store, cfg: ManagerConfig, stop: threading.Event, clock: Clock = REAL_CLOCK) -> None:
    """Runs every controller until stop is set."""
    client = Client(store, clock)
    f = InformerFactory(store, clock, cfg.resync)
    pods, rses, ds = f.informer(kinds.POD), f.informer(kinds.REPLICA_SET), f.informer(kinds.DEPLOYMENT)
    nodes, leases = f.informer(kinds.NODE), f.informer(kinds.LEASE)
    controllers = [
        DeploymentController(client, ds, rses, pods, clock),
        ReplicaSetController(client, rses, pods, clock),
        NodeLifecycleController(client, nodes, leases, pods, clock, cfg.eviction_timeout),
        GarbageCollector(client, {"Deployment": ds, "ReplicaSet": rses, "Pod": pods}, clock),
    ]
    f.start(stop)
    if not f.wait_for_sync(stop):
        return
    log.info("%s: caches synced; starting %s", cfg.identity, ", ".join(c.name for c in controllers))
    for c in controllers:
        run_workers(c, cfg.workers, stop)
    stop.wait()
    f.stop()


def run_scheduler(store: Store, cfg: ManagerConfig, stop: threading.Event, clock: Clock = REAL_CLOCK) -> None:
    client = Client(store, clock)
    f = InformerFactory(store, clock, cfg.resync)
    sched = Scheduler(client, f.informer(kinds.POD), f.informer(kinds.NODE), clock)
    f.start(stop)
    if not f.wait_for_sync(stop):
        return
    log.info("%s: caches synced; scheduling", cfg.identity)
    run_workers(sched, 1, stop)
    stop.wait()
    f.stop()


def run_with_leader_election(
    store: Store,
    cfg: ManagerConfig,
    lock_name: str,
    body: type[object] | object,
    stop: threading.Event,
    clock: Clock = REAL_CLOCK,
) -> None:
    """Runs body(store, cfg, stop_for_this_term, clock) while leading (or always, without election)."""
    if not cfg.leader_elect:
        body(store, cfg, stop, clock)  # type: ignore[operator]
        return
    elector = LeaderElector(store, lock_name, cfg.identity, cfg.lease_ttl, cfg.retry_period, clock=clock)

    def lead(lost: threading.Event) -> None:
        term = threading.Event()
        watcher = threading.Thread(target=lambda: (lost.wait(), term.set()), daemon=True)
        watcher.start()
        body(store, cfg, term, clock)  # type: ignore[operator]

    elector.run(stop, lead, lambda: log.info("%s: stopped leading", cfg.identity))
