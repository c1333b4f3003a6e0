"""Defaulting, applied before validation as the API server does: namespace, restartPolicy, strategy, ..."""

from __future__ import annotations

from controlplane.api import kinds
from controlplane.api.meta import Obj


def apply_defaults(obj: Obj) -> Obj:
    """Fills in defaults in place (only where the field's container has the right type) and returns obj."""
    kind = kinds.BY_KIND.get(obj.get("kind", ""))
    md = obj.get("metadata")
    if kind is None or not isinstance(md, dict):
        return obj
    if kind.namespaced and not md.get("namespace"):
        md["namespace"] = "default"
    spec = obj.get("spec")
    if kind in (kinds.DEPLOYMENT, kinds.REPLICA_SET):
        if spec is None:
            return obj
        if not isinstance(spec, dict):
            return obj
        spec.setdefault("replicas", 1)
        tmpl = spec.get("template")
        if isinstance(tmpl, dict) and isinstance(tmpl.get("spec"), dict):
            default_pod_spec(tmpl["spec"])
        if kind is kinds.DEPLOYMENT:
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("progressDeadlineSeconds", 600)
            strategy = spec.setdefault("strategy", {})
            if isinstance(strategy, dict):
                strategy.setdefault("type", "RollingUpdate")
                if strategy.get("type") == "RollingUpdate":
                    ru = strategy.setdefault("rollingUpdate", {})
                    if isinstance(ru, dict):
                        ru.setdefault("maxSurge", "25%")
                        ru.setdefault("maxUnavailable", "25%")
    elif kind is kinds.POD:
        if isinstance(spec, dict):
            default_pod_spec(spec)
    elif kind in (kinds.NODE, kinds.NAMESPACE):
        obj.setdefault("spec", {})
    return obj


def default_pod_spec(spec: Obj) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    for c in spec.get("containers") or []:
        if isinstance(c, dict):
            c.setdefault("resources", {})
