"""Pure functions of Deployments and their ReplicaSets, as k8s' deployment/util package has them:
template hashes, revisions, surge and unavailability arithmetic, which ReplicaSet is new."""

from __future__ import annotations

import json
import math

from controlplane.api.meta import Obj, annotations, deep_copy, new_controller_ref

HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
CHANGE_CAUSE = "kubernetes.io/change-cause"

_SAFE = "bcdfghjklmnpqrstvwxz2456789"


def fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def safe_encode(n: int) -> str:
    """k8s' rand.SafeEncodeString over the decimal digits of the hash: no vowels, no 0/1/3."""
    return "".join(_SAFE[ord(ch) % len(_SAFE)] for ch in str(n))


def template_hash(template: Obj, collision_count: int = 0) -> str:
    """pod-template-hash: FNV-32a of the template (canonical JSON) and the collision count."""
    data = json.dumps(strip_hash(template), sort_keys=True, separators=(",", ":")).encode()
    if collision_count:
        data += str(collision_count).encode()
    return safe_encode(fnv32a(data))


def strip_hash(template: Obj) -> Obj:
    t = deep_copy(template)
    lbls = (t.get("metadata") or {}).get("labels")
    if lbls and HASH_LABEL in lbls:
        del lbls[HASH_LABEL]
        if not lbls:
            del t["metadata"]["labels"]
    if "metadata" in t and not t["metadata"]:
        del t["metadata"]
    return t


def equal_ignore_hash(a: Obj, b: Obj) -> bool:
    return strip_hash(a) == strip_hash(b)


def revision(obj: Obj) -> int:
    try:
        return int(annotations(obj).get(REVISION, "0"))
    except ValueError:
        return 0


def max_revision(rses: list[Obj]) -> int:
    return max((revision(rs) for rs in rses), default=0)


def replicas(rs: Obj | None) -> int:
    return 0 if rs is None else rs.get("spec", {}).get("replicas", 0)


def status_of(rs: Obj | None, field: str) -> int:
    return 0 if rs is None else (rs.get("status") or {}).get(field, 0)


def _scaled(v: int | str, total: int, round_up: bool) -> int:
    if isinstance(v, int):
        return v
    pct = int(v.rstrip("%"))
    x = pct * total / 100
    return math.ceil(x) if round_up else math.floor(x)


def surge_and_unavailable(d: Obj) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) as pod counts: surge rounds up, unavailable down; never both 0."""
    want = d["spec"].get("replicas", 1)
    strategy = d["spec"].get("strategy") or {}
    if strategy.get("type") != "RollingUpdate":
        return 0, want
    ru = strategy.get("rollingUpdate") or {}
    surge = _scaled(ru.get("maxSurge", "25%"), want, True)
    unavailable = _scaled(ru.get("maxUnavailable", "25%"), want, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, min(unavailable, want)


def find_new(d: Obj, rses: list[Obj]) -> Obj | None:
    """The ReplicaSet whose template equals the Deployment's (the oldest, if several)."""
    matching = [rs for rs in rses if equal_ignore_hash(rs["spec"]["template"], d["spec"]["template"])]
    matching.sort(key=lambda rs: (rs["metadata"].get("creationTimestamp", ""), rs["metadata"]["name"]))
    return matching[0] if matching else None


def new_replica_set(d: Obj, h: str, rev: int) -> Obj:
    template = deep_copy(d["spec"]["template"])
    template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = h
    selector = deep_copy(d["spec"]["selector"])
    selector.setdefault("matchLabels", {})[HASH_LABEL] = h
    ann = {REVISION: str(rev)}
    if CHANGE_CAUSE in annotations(d):
        ann[CHANGE_CAUSE] = annotations(d)[CHANGE_CAUSE]
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": f"{d['metadata']['name']}-{h}",
            "namespace": d["metadata"]["namespace"],
            "labels": dict(template["metadata"]["labels"]),
            "annotations": ann,
            "ownerReferences": [new_controller_ref(d)],
        },
        "spec": {"replicas": 0, "selector": selector, "template": template},
    }


def rollout_complete(d: Obj) -> bool:
    """What `rollout status` waits for: every replica updated and available, status current."""
    want = d["spec"].get("replicas", 1)
    st = d.get("status") or {}
    return (
        st.get("observedGeneration", 0) >= d["metadata"].get("generation", 1)
        and st.get("updatedReplicas", 0) == want
        and st.get("replicas", 0) == want
        and st.get("availableReplicas", 0) == want
    )
