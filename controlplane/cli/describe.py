"""``raftkv kube describe TYPE NAME``: a readable account of one object, as kubectl describe gives."""

from __future__ import annotations

import argparse

from controlplane.api import kinds
from controlplane.api.meta import Obj, annotations, controller_ref, format_selector, is_controlled_by, labels, name
from controlplane.cli.common import CliError, add_common, connect, ns_for, parse_target
from controlplane.cli.printers import node_status, pod_status
from controlplane.client import Client, not_found
from controlplane.controllers import deployutil as du


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common(p)
    p.add_argument("target", nargs="+", metavar="TYPE[/NAME] [NAME]")


def _kv(lines: list[str], key: str, value: object, indent: int = 0) -> None:
    lines.append(f"{' ' * indent}{key + ':':<22}{value}")


def _map(m: dict[str, str]) -> str:
    return "\n".join(f"{' ' * 22}{k}={v}" for k, v in sorted(m.items())).lstrip() or "<none>"


def _meta(lines: list[str], obj: Obj) -> None:
    md = obj["metadata"]
    _kv(lines, "Name", md["name"])
    if md.get("namespace"):
        _kv(lines, "Namespace", md["namespace"])
    _kv(lines, "CreationTimestamp", md.get("creationTimestamp", ""))
    _kv(lines, "Labels", _map(labels(obj)))
    _kv(lines, "Annotations", _map(annotations(obj)))
    ref = controller_ref(obj)
    if ref:
        _kv(lines, "Controlled By", f"{ref['kind']}/{ref['name']}")


def _containers(lines: list[str], spec: Obj, statuses: list[Obj] | None) -> None:
    by_name = {s["name"]: s for s in statuses or []}
    lines.append("Containers:")
    for c in spec.get("containers") or []:
        lines.append(f"  {c['name']}:")
        if c.get("image"):
            _kv(lines, "Image", c["image"], 4)
        _kv(lines, "Command", " ".join(c.get("command", [])), 4)
        if c.get("args"):
            _kv(lines, "Args", " ".join(c["args"]), 4)
        st = by_name.get(c["name"])
        if st is not None:
            if st.get("containerID"):
                _kv(lines, "Container ID", st["containerID"], 4)
            for label, state in (("State", st.get("state") or {}), ("Last State", st.get("lastState") or {})):
                for sname, detail in state.items():
                    _kv(lines, label, sname.capitalize(), 4)
                    for k, v in (detail or {}).items():
                        _kv(lines, f"  {k}", v, 4)
            _kv(lines, "Ready", st.get("ready", False), 4)
            _kv(lines, "Restart Count", st.get("restartCount", 0), 4)
        req = (c.get("resources") or {}).get("requests") or {}
        if req:
            lines.append("    Requests:")
            for k, v in req.items():
                _kv(lines, f"  {k}", v, 4)
        env = c.get("env") or []
        lines.append("    Environment:" + ("" if env else "  <none>"))
        for e in env:
            lines.append(f"      {e['name']}:  {e.get('value', '')}")


def _conditions(lines: list[str], obj: Obj, cols: tuple[str, ...] = ("type", "status", "reason")) -> None:
    conds = (obj.get("status") or {}).get("conditions") or []
    if not conds:
        return
    lines.append("Conditions:")
    lines.append("  " + "  ".join(f"{c.capitalize():<18}" for c in cols).rstrip())
    for c in conds:
        lines.append("  " + "  ".join(f"{c.get(k) or '':<18}" for k in cols).rstrip())
    for c in conds:
        if c.get("message") and c.get("status") != "True":
            lines.append(f"  {c['type']}: {c['message']}")


def describe_pod(client: Client, pod: Obj) -> list[str]:
    lines: list[str] = []
    _meta(lines, pod)
    st = pod.get("status") or {}
    _kv(lines, "Node", pod["spec"].get("nodeName") or "<none>")
    _kv(lines, "Status", pod_status(pod))
    _kv(lines, "IP", st.get("podIP") or "<none>")
    _kv(lines, "Restart Policy", pod["spec"].get("restartPolicy", "Always"))
    if pod["spec"].get("nodeSelector"):
        _kv(lines, "Node-Selectors", _map(pod["spec"]["nodeSelector"]))
    _containers(lines, pod["spec"], st.get("containerStatuses"))
    _conditions(lines, pod)
    return lines


def describe_deployment(client: Client, d: Obj) -> list[str]:
    lines: list[str] = []
    _meta(lines, d)
    st = d.get("status") or {}
    spec = d["spec"]
    _kv(lines, "Selector", format_selector(spec.get("selector")))
    _kv(
        lines,
        "Replicas",
        f"{spec.get('replicas', 1)} desired | {st.get('updatedReplicas', 0)} updated | {st.get('replicas', 0)} total | "
        f"{st.get('availableReplicas', 0)} available | {st.get('unavailableReplicas', 0)} unavailable",
    )
    strategy = spec.get("strategy") or {}
    _kv(lines, "StrategyType", strategy.get("type", "RollingUpdate"))
    if strategy.get("type") == "RollingUpdate":
        ru = strategy.get("rollingUpdate") or {}
        _kv(
            lines,
            "RollingUpdateStrategy",
            f"{ru.get('maxUnavailable')} max unavailable, {ru.get('maxSurge')} max surge",
        )
    _kv(
        lines,
        "ObservedGeneration",
        f"{st.get('observedGeneration', 0)} (generation {d['metadata'].get('generation', 1)})",
    )
    lines.append("Pod Template:")
    tmpl = spec.get("template") or {}
    _kv(lines, "Labels", _map((tmpl.get("metadata") or {}).get("labels") or {}), 2)
    _containers(lines, tmpl.get("spec") or {}, None)
    _conditions(lines, d)
    rses, _ = client.list(kinds.REPLICA_SET, d["metadata"]["namespace"])
    owned = [rs for rs in rses if is_controlled_by(rs, d)]
    new = du.find_new(d, owned)
    old = [rs for rs in owned if rs is not new and du.replicas(rs) > 0]
    _kv(lines, "OldReplicaSets", ", ".join(f"{name(rs)} ({du.replicas(rs)} replicas)" for rs in old) or "<none>")
    _kv(
        lines,
        "NewReplicaSet",
        f"{name(new)} ({du.replicas(new)} replicas, revision {du.revision(new)})" if new else "<none>",
    )
    return lines


def describe_node(client: Client, node: Obj) -> list[str]:
    lines: list[str] = []
    _meta(lines, node)
    st = node.get("status") or {}
    _kv(lines, "Status", node_status(node))
    _kv(lines, "Capacity", ", ".join(f"{k}={v}" for k, v in (st.get("capacity") or {}).items()))
    _kv(lines, "Allocatable", ", ".join(f"{k}={v}" for k, v in (st.get("allocatable") or {}).items()))
    _conditions(lines, node, ("type", "status", "reason", "lastTransitionTime"))
    pods, _ = client.list(kinds.POD)
    mine = [p for p in pods if p["spec"].get("nodeName") == name(node)]
    lines.append(f"Non-terminated Pods:  ({len(mine)} in total)")
    for p in mine:
        lines.append(f"  {p['metadata']['namespace']}/{name(p)}  {pod_status(p)}")
    return lines


def describe_generic(client: Client, obj: Obj) -> list[str]:
    from controlplane.cli.printers import to_yaml

    lines: list[str] = []
    _meta(lines, obj)
    for section in ("spec", "status"):
        if obj.get(section):
            lines.append(f"{section.capitalize()}:")
            lines += ["  " + line for line in to_yaml(obj[section]).splitlines()]
    return lines


def run(args: argparse.Namespace) -> int:
    kind, obj_name = parse_target(args.target)
    client = connect(args)
    if obj_name is None:
        objs, _ = client.list(kind, ns_for(kind, args))
    else:
        obj = client.try_get(kind, ns_for(kind, args), obj_name)
        if obj is None:
            raise CliError(f"Error from server (NotFound): {not_found(kind, obj_name)}")
        objs = [obj]
    fn = {"Pod": describe_pod, "Deployment": describe_deployment, "Node": describe_node}.get(
        kind.kind, describe_generic
    )
    print("\n\n".join("\n".join(fn(client, o)) for o in objs))
    return 0
