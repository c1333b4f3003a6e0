"""Helpers over object metadata: names, keys, labels, selectors, owner references, conditions.

Objects are plain JSON dicts in Kubernetes' shapes; these functions are the only places that
know where in a dict a field lives, so the rest of the code reads as Kubernetes code does.
"""

from __future__ import annotations

import copy
from typing import Any

Obj = dict[str, Any]

CONTROLLER_KINDS = ("Deployment", "ReplicaSet")


def name(obj: Obj) -> str:
    return obj.get("metadata", {}).get("name", "")


def namespace(obj: Obj) -> str:
    return obj.get("metadata", {}).get("namespace", "")


def uid(obj: Obj) -> str:
    return obj.get("metadata", {}).get("uid", "")


def resource_version(obj: Obj) -> int:
    return int(obj.get("metadata", {}).get("resourceVersion") or 0)


def key_of(obj: Obj) -> str:
    """The work-queue key: ``namespace/name``, or ``name`` for cluster-scoped objects."""
    ns = namespace(obj)
    return f"{ns}/{name(obj)}" if ns else name(obj)


def split_key(key: str) -> tuple[str | None, str]:
    if "/" in key:
        ns, n = key.split("/", 1)
        return ns, n
    return None, key


def labels(obj: Obj) -> dict[str, str]:
    return obj.get("metadata", {}).get("labels") or {}


def annotations(obj: Obj) -> dict[str, str]:
    return obj.get("metadata", {}).get("annotations") or {}


def set_annotation(obj: Obj, k: str, v: str) -> None:
    obj.setdefault("metadata", {}).setdefault("annotations", {})[k] = v


def deleting(obj: Obj) -> bool:
    return bool(obj.get("metadata", {}).get("deletionTimestamp"))


def deep_copy(obj: Obj) -> Obj:
    return copy.deepcopy(obj)


# ---- owner references ----


def owner_references(obj: Obj) -> list[Obj]:
    return obj.get("metadata", {}).get("ownerReferences") or []


def controller_ref(obj: Obj) -> Obj | None:
    for ref in owner_references(obj):
        if ref.get("controller"):
            return ref
    return None


def new_controller_ref(owner: Obj) -> Obj:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": name(owner),
        "uid": uid(owner),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def is_controlled_by(obj: Obj, owner: Obj) -> bool:
    ref = controller_ref(obj)
    return ref is not None and ref.get("uid") == uid(owner)


# ---- label selectors ----


def selector_matches(selector: Obj | None, obj_labels: dict[str, str]) -> bool:
    """metav1.LabelSelector semantics: matchLabels AND every matchExpression; an empty selector matches all."""
    if not selector:
        return True
    for k, v in (selector.get("matchLabels") or {}).items():
        if obj_labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        k, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        present = k in obj_labels
        if op == "In" and not (present and obj_labels[k] in values):
            return False
        if op == "NotIn" and present and obj_labels[k] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def parse_selector(text: str) -> Obj:
    """``app=web,tier!=db,env`` (kubectl's -l) as a LabelSelector."""
    match: dict[str, str] = {}
    exprs: list[Obj] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "!=" in part:
            k, v = part.split("!=", 1)
            exprs.append({"key": k.strip(), "operator": "NotIn", "values": [v.strip()]})
        elif "==" in part or "=" in part:
            k, v = part.replace("==", "=").split("=", 1)
            match[k.strip()] = v.strip()
        elif part.startswith("!"):
            exprs.append({"key": part[1:], "operator": "DoesNotExist"})
        else:
            exprs.append({"key": part, "operator": "Exists"})
    return {"matchLabels": match, "matchExpressions": exprs}


def format_selector(selector: Obj | None) -> str:
    if not selector:
        return "<none>"
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for e in selector.get("matchExpressions") or []:
        parts.append(f"{e['key']} {e['operator']} ({','.join(e.get('values') or [])})")
    return ",".join(parts) or "<none>"


# ---- conditions ----


def get_condition(obj: Obj, ctype: str) -> Obj | None:
    for c in obj.get("status", {}).get("conditions") or []:
        if c.get("type") == ctype:
            return c
    return None


def condition_true(obj: Obj, ctype: str) -> bool:
    c = get_condition(obj, ctype)
    return c is not None and c.get("status") == "True"


def set_condition(obj: Obj, cond: Obj, now: str, heartbeat: bool = False) -> bool:
    """Sets a condition; lastTransitionTime moves only when its status changes. True if anything changed."""
    conds = obj.setdefault("status", {}).setdefault("conditions", [])
    for i, c in enumerate(conds):
        if c.get("type") != cond["type"]:
            continue
        new = {**c, **cond}
        if c.get("status") != cond.get("status"):
            new["lastTransitionTime"] = now
        if heartbeat:
            new["lastHeartbeatTime"] = now
        if new != c:
            conds[i] = new
            return True
        return False
    new = {**cond, "lastTransitionTime": now}
    if heartbeat:
        new["lastHeartbeatTime"] = now
    conds.append(new)
    return True
