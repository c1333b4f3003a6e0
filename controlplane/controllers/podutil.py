"""Facts about pods that several controllers need: active, ready, which to delete first."""

from __future__ import annotations

from controlplane.api.meta import Obj, condition_true, deep_copy, deleting, new_controller_ref


def is_active(pod: Obj) -> bool:
    """Counts toward a ReplicaSet's replicas: not terminal, not being deleted."""
    return pod.get("status", {}).get("phase") not in ("Succeeded", "Failed") and not deleting(pod)


def is_ready(pod: Obj) -> bool:
    return condition_true(pod, "Ready")


def is_available(pod: Obj) -> bool:
    """Ready (minReadySeconds is not modelled: a Ready pod is available at once)."""
    return is_ready(pod)


def restarts(pod: Obj) -> int:
    return sum(cs.get("restartCount", 0) for cs in pod.get("status", {}).get("containerStatuses") or [])


_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


def deletion_rank(pod: Obj) -> tuple:
    """Sort key; smallest first are deleted first (k8s ActivePods): unscheduled, pending, not ready,
    more restarts, newest."""
    return (
        1 if pod.get("spec", {}).get("nodeName") else 0,
        _PHASE_RANK.get(pod.get("status", {}).get("phase", "Pending"), 0),
        1 if is_ready(pod) else 0,
        -restarts(pod),
        _neg_time(pod["metadata"].get("creationTimestamp", "")),
    )


def _neg_time(ts: str) -> tuple[int, ...]:
    return tuple(-ord(ch) for ch in ts)


def pod_from_template(owner: Obj, template: Obj) -> Obj:
    """A new pod for a ReplicaSet: generated name, the template's labels and spec, a controller ref."""
    tmeta = template.get("metadata") or {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": f"{owner['metadata']['name']}-",
            "namespace": owner["metadata"]["namespace"],
            "labels": dict(tmeta.get("labels") or {}),
            **({"annotations": dict(tmeta["annotations"])} if tmeta.get("annotations") else {}),
            "ownerReferences": [new_controller_ref(owner)],
        },
        "spec": deep_copy(template.get("spec") or {}),
    }
