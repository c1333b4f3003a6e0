"""Leader election through a lease and a Txn, as client-go's leaderelection over a Lease lock.

The lock is ``/registry/leases/<namespace>/<name>``, a coordination.k8s.io/v1 Lease object
attached to an etcd lease of ``ttl`` seconds. A candidate grants itself an etcd lease and
creates the key in a Txn that succeeds only if the key does not exist (create_revision == 0);
the winner keeps its etcd lease alive every ttl/3. If the leader dies its etcd lease expires,
the store deletes the key, and a candidate (which re-checks every ``retry_period``) takes over:
a killed leader is replaced within its TTL plus one retry period. A leader that cannot renew for
its whole TTL, or finds the key held by someone else, stops leading at once; a leader that
stops cleanly revokes its lease, so another takes over immediately.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from controlplane.api import kinds
from controlplane.client import Client, decode
from controlplane.clock import REAL_CLOCK, Clock, rfc3339
from controlplane.store.base import AlreadyExists, Store, StoreError

log = logging.getLogger("controlplane.leaderelection")


class LeaderElector:
    def __init__(
        self,
        store: Store,
        name: str,
        identity: str,
        ttl: int = 15,
        retry_period: float = 1.0,
        namespace: str = "kube-system",
        clock: Clock = REAL_CLOCK,
    ) -> None:
        self.store = store
        self.client = Client(store, clock)
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.ttl = ttl
        self.retry_period = retry_period
        self.clock = clock
        self.key = kinds.LEASE.key(namespace, name)
        self.lease_id = 0
        self.leading = threading.Event()

    def holder(self) -> str | None:
        kv = self.store.get(self.key)
        return decode(kv)["spec"].get("holderIdentity") if kv is not None else None

    def try_acquire(self) -> bool:
        """One attempt: a fresh etcd lease, and a Txn that creates the lock only if nobody holds it."""
        if self.store.get(self.key) is not None:
            return False
        lease_id = self.store.grant_lease(self.ttl)
        now = rfc3339(self.clock.now())
        lock = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self.ttl,
                "acquireTime": now,
                "renewTime": now,
            },
        }
        try:
            self.client.create(lock, lease=lease_id)
        except AlreadyExists:
            self.store.revoke_lease(lease_id)
            return False
        self.lease_id = lease_id
        return True

    def renew(self) -> bool:
        """Keeps the lease alive; False if it is gone or the lock is no longer ours."""
        if self.store.keepalive(self.lease_id, within=max(self.ttl / 3, 0.5)) <= 0:
            return False
        kv = self.store.get(self.key)
        return kv is not None and kv.lease == self.lease_id

    def release(self) -> None:
        if self.lease_id:
            try:
                self.store.revoke_lease(self.lease_id)
            except StoreError as exc:
                log.warning("%s: releasing the lock failed: %s", self.identity, exc)
            self.lease_id = 0

    def run(
        self,
        stop: threading.Event,
        on_started: Callable[[threading.Event], None],
        on_stopped: Callable[[], None] = lambda: None,
    ) -> None:
        """Campaigns until stop; while leading, ``on_started(lost)`` runs in a thread until ``lost`` is set."""
        while not stop.is_set():
            try:
                acquired = self.try_acquire()
            except StoreError as exc:
                log.info("%s: cannot campaign (%s)", self.identity, exc)
                acquired = False
            if not acquired:
                self.clock.wait(stop, self.retry_period)
                continue
            log.info("%s: became the leader of %s", self.identity, self.key)
            self.leading.set()
            lost = threading.Event()
            worker = threading.Thread(target=on_started, args=(lost,), name="leading", daemon=True)
            worker.start()
            last_ok = self.clock.monotonic()
            while not stop.is_set():
                if self.clock.wait(stop, self.ttl / 3):
                    break
                try:
                    if self.renew():
                        last_ok = self.clock.monotonic()
                        continue
                    log.warning("%s: lost the lock %s", self.identity, self.key)
                    break
                except StoreError as exc:
                    if self.clock.monotonic() - last_ok >= self.ttl:
                        log.warning("%s: could not renew for %ds (%s); stepping down", self.identity, self.ttl, exc)
                        break
            self.leading.clear()
            lost.set()
            worker.join(10)
            on_stopped()
            self.release()
        self.release()
