"""Output as kubectl prints it: tables per kind (with -o wide columns), yaml, json, name."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime

from controlplane.api import kinds
from controlplane.api.meta import Obj, deleting, format_selector, get_condition, name
from controlplane.cli.common import age

Row = list[str]


def pod_status(pod: Obj) -> str:
    """kubectl's STATUS column: the phase, or a more telling container reason, or Terminating."""
    if deleting(pod):
        return "Terminating"
    st = pod.get("status") or {}
    reason = st.get("phase") or "Pending"
    bound = bool((pod.get("spec") or {}).get("nodeName"))
    for cs in st.get("containerStatuses") or []:
        state = cs.get("state") or {}
        waiting = (state.get("waiting") or {}).get("reason")
        terminated = (state.get("terminated") or {}).get("reason")
        if (waiting and waiting != "ContainerCreating") or (waiting and reason == "Pending" and bound):
            reason = waiting
        elif terminated and reason not in ("Succeeded", "Failed"):
            reason = terminated
    return reason


def node_status(node: Obj) -> str:
    ready = get_condition(node, "Ready")
    s = "Ready" if ready is not None and ready.get("status") == "True" else "NotReady"
    if (node.get("spec") or {}).get("unschedulable"):
        s += ",SchedulingDisabled"
    return s


def _containers(tmpl_spec: Obj) -> tuple[str, str]:
    cs = tmpl_spec.get("containers") or []
    return ",".join(c.get("name", "") for c in cs), ",".join(
        c.get("image") or " ".join(c.get("command", [])) for c in cs
    )


def _pod_row(p: Obj, now: datetime, wide: bool) -> Row:
    st = p.get("status") or {}
    css = st.get("containerStatuses") or []
    total = len((p.get("spec") or {}).get("containers") or [])
    ready = sum(1 for c in css if c.get("ready"))
    row = [
        name(p),
        f"{ready}/{total}",
        pod_status(p),
        str(sum(c.get("restartCount", 0) for c in css)),
        age(p["metadata"].get("creationTimestamp"), now),
    ]
    if wide:
        row += [st.get("podIP") or "<none>", (p.get("spec") or {}).get("nodeName") or "<none>"]
    return row


def _deploy_row(d: Obj, now: datetime, wide: bool) -> Row:
    st = d.get("status") or {}
    row = [
        name(d),
        f"{st.get('readyReplicas', 0)}/{d['spec'].get('replicas', 1)}",
        str(st.get("updatedReplicas", 0)),
        str(st.get("availableReplicas", 0)),
        age(d["metadata"].get("creationTimestamp"), now),
    ]
    if wide:
        row += [*_containers(d["spec"]["template"].get("spec") or {}), format_selector(d["spec"].get("selector"))]
    return row


def _rs_row(rs: Obj, now: datetime, wide: bool) -> Row:
    st = rs.get("status") or {}
    row = [
        name(rs),
        str(rs["spec"].get("replicas", 0)),
        str(st.get("replicas", 0)),
        str(st.get("readyReplicas", 0)),
        age(rs["metadata"].get("creationTimestamp"), now),
    ]
    if wide:
        row += [*_containers(rs["spec"]["template"].get("spec") or {}), format_selector(rs["spec"].get("selector"))]
    return row


def _node_row(n: Obj, now: datetime, wide: bool) -> Row:
    st = n.get("status") or {}
    row = [
        name(n),
        node_status(n),
        "<none>",
        age(n["metadata"].get("creationTimestamp"), now),
        (st.get("nodeInfo") or {}).get("kubeletVersion", ""),
    ]
    if wide:
        ip = next((a["address"] for a in st.get("addresses") or [] if a.get("type") == "InternalIP"), "<none>")
        alloc = st.get("allocatable") or {}
        row += [ip, alloc.get("cpu", ""), alloc.get("memory", "")]
    return row


def _ns_row(ns: Obj, now: datetime, wide: bool) -> Row:
    return [
        name(ns),
        (ns.get("status") or {}).get("phase", "Active"),
        age(ns["metadata"].get("creationTimestamp"), now),
    ]


def _lease_row(lease: Obj, now: datetime, wide: bool) -> Row:
    return [
        name(lease),
        (lease.get("spec") or {}).get("holderIdentity", ""),
        age(lease["metadata"].get("creationTimestamp"), now),
    ]


TABLES: dict[str, tuple[list[str], list[str], Callable[[Obj, datetime, bool], Row]]] = {
    "Pod": (["NAME", "READY", "STATUS", "RESTARTS", "AGE"], ["IP", "NODE"], _pod_row),
    "Deployment": (
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        ["CONTAINERS", "IMAGES", "SELECTOR"],
        _deploy_row,
    ),
    "ReplicaSet": (["NAME", "DESIRED", "CURRENT", "READY", "AGE"], ["CONTAINERS", "IMAGES", "SELECTOR"], _rs_row),
    "Node": (["NAME", "STATUS", "ROLES", "AGE", "VERSION"], ["INTERNAL-IP", "CPU", "MEMORY"], _node_row),
    "Namespace": (["NAME", "STATUS", "AGE"], [], _ns_row),
    "Lease": (["NAME", "HOLDER", "AGE"], [], _lease_row),
}


def header(kind: kinds.Kind, wide: bool, with_namespace: bool = False) -> Row:
    cols, wide_cols, _ = TABLES[kind.kind]
    return (["NAMESPACE"] if with_namespace else []) + cols + (wide_cols if wide else [])


def row(kind: kinds.Kind, obj: Obj, wide: bool, now: datetime, with_namespace: bool = False) -> Row:
    r = TABLES[kind.kind][2](obj, now, wide)
    return ([obj["metadata"].get("namespace", "")] if with_namespace else []) + r


def table(rows: list[Row]) -> str:
    if not rows:
        return ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def to_yaml(obj: object) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False)


def render(
    kind: kinds.Kind, objs: list[Obj], output: str, now: datetime, single: bool, with_namespace: bool = False
) -> str:
    if output in ("yaml", "json"):
        doc: object = objs[0] if single and objs else {"apiVersion": "v1", "kind": "List", "items": objs}
        return to_yaml(doc).rstrip("\n") if output == "yaml" else json.dumps(doc, indent=4)
    if output == "name":
        return "\n".join(f"{kind.qualified}/{name(o)}" for o in objs)
    wide = output == "wide"
    rows = [header(kind, wide, with_namespace)] + [row(kind, o, wide, now, with_namespace) for o in objs]
    return table(rows)
