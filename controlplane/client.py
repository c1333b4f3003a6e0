"""The object client: Kubernetes objects in, JSON under /registry out, with the API server's rules.

- ``metadata.resourceVersion`` is the key's mod_revision; it is not stored, it is read back.
- create: a Txn on create_revision == 0; uid, creationTimestamp and generation are set here,
  a name is generated from ``generateName``; the object is defaulted and validated first.
- update: a Txn on mod_revision == resourceVersion (Conflict otherwise). Kinds with a status
  "subresource" keep their stored status on update and their stored spec on update_status;
  generation moves when the spec changes. Immutable metadata (uid, creationTimestamp) is kept.
- ``retry_on_conflict`` re-reads and re-applies a mutation, as client-go's RetryOnConflict does.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections.abc import Callable

from controlplane.api import kinds
from controlplane.api.defaults import apply_defaults
from controlplane.api.meta import Obj, deep_copy
from controlplane.api.validation import validate
from controlplane.clock import REAL_CLOCK, Clock, rfc3339
from controlplane.store.base import AlreadyExists, Conflict, KeyValue, NotFound, Store

log = logging.getLogger("controlplane.client")

_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # k8s' generateName alphabet: no vowels, no look-alikes


def decode(kv: KeyValue) -> Obj:
    obj = json.loads(kv.value)
    obj.setdefault("metadata", {})["resourceVersion"] = str(kv.mod_revision)
    return obj


def not_found(kind: kinds.Kind, name: str) -> str:
    """The API server's wording: ``deployments.apps "web" not found``."""
    return f'{kind.resource}{"." + kind.group if kind.group else ""} "{name}" not found'


def encode(obj: Obj) -> bytes:
    md = obj.get("metadata", {})
    rv = md.pop("resourceVersion", None)
    try:
        return json.dumps(obj, separators=(",", ":")).encode()
    finally:
        if rv is not None:
            md["resourceVersion"] = rv


class Client:
    def __init__(self, store: Store, clock: Clock = REAL_CLOCK, rng: random.Random | None = None) -> None:
        self.store = store
        self.clock = clock
        self.rng = rng or random.Random()

    # ---- reads ----

    def get(self, kind: kinds.Kind, namespace: str | None, name: str) -> Obj:
        kv = self.store.get(kind.key(namespace, name))
        if kv is None:
            raise NotFound(not_found(kind, name))
        return decode(kv)

    def try_get(self, kind: kinds.Kind, namespace: str | None, name: str) -> Obj | None:
        kv = self.store.get(kind.key(namespace, name))
        return decode(kv) if kv is not None else None

    def list(self, kind: kinds.Kind, namespace: str | None = None) -> tuple[list[Obj], int]:
        kvs, rev = self.store.list(kind.prefix(namespace))
        return [decode(kv) for kv in kvs], rev

    # ---- writes ----

    def create(self, obj: Obj, lease: int = 0) -> Obj:
        obj = apply_defaults(deep_copy(obj))
        validate(obj)
        kind = kinds.for_object(obj)
        md = obj["metadata"]
        if not md.get("name"):
            md["name"] = md["generateName"] + "".join(self.rng.choice(_NAME_CHARS) for _ in range(5))
        md.pop("resourceVersion", None)
        md.pop("deletionTimestamp", None)
        md["uid"] = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        md["creationTimestamp"] = rfc3339(self.clock.now())
        if kind in (kinds.DEPLOYMENT, kinds.REPLICA_SET):
            md["generation"] = 1
        if kind.has_status:
            obj.setdefault("status", {})
        key = kind.key(md.get("namespace"), md["name"])
        try:
            rev = self.store.create(key, encode(obj), lease)
        except AlreadyExists:
            raise AlreadyExists(f'{kind.resource} "{md["name"]}" already exists') from None
        md["resourceVersion"] = str(rev)
        return obj

    def update(self, obj: Obj, lease: int = 0) -> Obj:
        """Writes spec and metadata (status kept as stored); Conflict if resourceVersion is stale."""
        return self._write(obj, keep="status", lease=lease)

    def update_status(self, obj: Obj) -> Obj:
        """Writes status (spec and metadata kept as stored); Conflict if resourceVersion is stale."""
        return self._write(obj, keep="spec")

    def bind(self, pod: Obj, node_name: str, condition: Obj) -> Obj:
        """Sets spec.nodeName and the PodScheduled condition in one write, as the Binding subresource does."""
        pod = deep_copy(pod)
        pod["spec"]["nodeName"] = node_name
        conds = [c for c in pod.setdefault("status", {}).get("conditions", []) if c.get("type") != "PodScheduled"]
        pod["status"]["conditions"] = [condition, *conds]
        return self._write(pod, keep="")

    def _write(self, obj: Obj, keep: str, lease: int = 0) -> Obj:
        kind = kinds.for_object(obj)
        md = obj.get("metadata", {})
        rv = int(md.get("resourceVersion") or 0)
        key = kind.key(md.get("namespace") or ("default" if kind.namespaced else None), md.get("name", ""))
        cur_kv = self.store.get(key)
        if cur_kv is None:
            raise NotFound(not_found(kind, md.get("name", "")))
        if rv and cur_kv.mod_revision != rv:
            raise Conflict(
                f'Operation cannot be fulfilled on {kind.resource} "{md.get("name")}": the object has been modified; '
                "please apply your changes to the latest version and try again"
            )
        cur = decode(cur_kv)
        new = apply_defaults(deep_copy(obj))
        if keep != "spec":
            validate(new)
        nmd = new["metadata"]
        cmd = cur["metadata"]
        for immutable in ("uid", "creationTimestamp", "name", "namespace"):
            if immutable in cmd:
                nmd[immutable] = cmd[immutable]
        if kind.has_status and keep == "status":
            new["status"] = cur.get("status", {})
        if keep == "spec":
            new["spec"] = cur.get("spec", {})
            new["metadata"] = cmd
        if "generation" in cmd:
            changed = new.get("spec") != cur.get("spec")
            new["metadata"]["generation"] = cmd["generation"] + (1 if changed else 0)
        if new == cur:
            return cur
        new["metadata"].pop("resourceVersion", None)
        try:
            rev = self.store.update(key, encode(new), cur_kv.mod_revision, lease)
        except Conflict:
            raise Conflict(
                f'Operation cannot be fulfilled on {kind.resource} "{md.get("name")}": the object has been modified; '
                "please apply your changes to the latest version and try again"
            ) from None
        new["metadata"]["resourceVersion"] = str(rev)
        return new

    def delete(self, kind: kinds.Kind, namespace: str | None, name: str, precondition: Obj | None = None) -> bool:
        """Deletes now (no graceful deletion); with a precondition, only that version of the object."""
        key = kind.key(namespace, name)
        if precondition is not None:
            return self.store.delete(key, int(precondition["metadata"]["resourceVersion"]))
        return self.store.delete(key)


def retry_on_conflict(
    fn: Callable[[], Obj | None], attempts: int = 10, backoff: float = 0.01, sleep: Callable[[float], None] = time.sleep
) -> Obj | None:
    """Runs fn (which must read the latest object itself) until it does not hit a Conflict."""
    for i in range(attempts):
        try:
            return fn()
        except Conflict:
            if i == attempts - 1:
                raise
            sleep(backoff * 2**i * (1 + random.random()))
    return None
