"""Validation with field paths, worded as the API server words it (``spec.replicas: Invalid value: -1: ...``).

Two passes, as Kubernetes does: the shape (types, unknown fields, required fields) against a small
schema per kind, then the rules (names, ranges, enums, selector against template labels, ...).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from controlplane.api import kinds, quantity
from controlplane.api.meta import Obj

# ---- errors ----


@dataclass(frozen=True)
class FieldError:
    path: str
    type: str  # Required, Invalid, Unsupported, Unknown, Forbidden, Duplicate
    value: Any = None
    detail: str = ""

    def __str__(self) -> str:
        if self.type == "Required":
            return f"{self.path}: Required value" + (f": {self.detail}" if self.detail else "")
        if self.type == "Unknown":
            return f'{self.path}: Unknown field "{self.path.rsplit(".", 1)[-1]}"' + (
                f": {self.detail}" if self.detail else ""
            )
        if self.type == "Forbidden":
            return f"{self.path}: Forbidden: {self.detail}"
        if self.type == "Duplicate":
            return f"{self.path}: Duplicate value: {_fmt(self.value)}"
        if self.type == "Unsupported":
            return f"{self.path}: Unsupported value: {_fmt(self.value)}: supported values: {self.detail}"
        return f"{self.path}: Invalid value: {_fmt(self.value)}: {self.detail}"


def _fmt(v: Any) -> str:
    return json.dumps(v, sort_keys=True) if not isinstance(v, int | float) or isinstance(v, bool) else str(v)


class ValidationError(ValueError):
    """An object the API would refuse, with every field error found."""

    def __init__(self, kind: str, name: str, errors: list[FieldError]) -> None:
        self.kind, self.name, self.errors = kind, name, errors
        super().__init__(str(self))

    def __str__(self) -> str:
        head = f'The {self.kind or "object"} "{self.name}" is invalid: '
        if len(self.errors) == 1:
            return head + str(self.errors[0])
        return head + "\n" + "\n".join(f"* {e}" for e in self.errors)


# ---- shape ----


class T:
    def check(self, v: Any, path: str, errs: list[FieldError]) -> None:
        raise NotImplementedError


class Str(T):
    def check(self, v: Any, path: str, errs: list[FieldError]) -> None:
        if not isinstance(v, str):
            errs.append(FieldError(path, "Invalid", v, "must be a string"))


class Int(T):
    def check(self, v: Any, path: str, errs: list[FieldError]) -> None:
        if not isinstance(v, int) or isinstance(v, bool):
            errs.append(FieldError(path, "Invalid", v, "must be an integer"))


class Bool(T):
    def check(self, v: Any, path: str, errs: list[FieldError]) -> None:
        if not isinstance(v, bool):
            errs.append(FieldError(path, "Invalid", v, "must be a boolean"))


class IntOrStr(T):
    def check(self, v: Any, path: str, errs: list[FieldError]) -> None:
        if isinstance(v, bool) or not isinstance(v, int | str):
            errs.append(FieldError(path, "Invalid", v, "must be an integer or a string"))


class Quantity(T):
    def check(self, v: Any, path: str, errs: list[FieldError]) -> None:
        try:
            quantity.parse(v)
        except (ValueError, TypeError) as exc:
            errs.append(FieldError(path, "Invalid", v, str(exc)))


class AnyT(T):
    def check(self, v: Any, path: str, errs: list[FieldError]) -> None:
        return


@dataclass
class Struct(T):
    fields: dict[str, T]
    required: tuple[str, ...] = ()

    def check(self, v: Any, path: str, errs: list[FieldError]) -> None:
        if not isinstance(v, dict):
            errs.append(FieldError(path, "Invalid", v, "must be an object"))
            return
        for k, sub in v.items():
            p = f"{path}.{k}" if path else k
            if k not in self.fields:
                errs.append(FieldError(p, "Unknown"))
            elif sub is not None:
                self.fields[k].check(sub, p, errs)
        for k in self.required:
            if v.get(k) is None:
                errs.append(FieldError(f"{path}.{k}" if path else k, "Required"))


@dataclass
class ListOf(T):
    item: T

    def check(self, v: Any, path: str, errs: list[FieldError]) -> None:
        if not isinstance(v, list):
            errs.append(FieldError(path, "Invalid", v, "must be a list"))
            return
        for i, x in enumerate(v):
            self.item.check(x, f"{path}[{i}]", errs)


@dataclass
class MapOf(T):
    value: T = field(default_factory=Str)

    def check(self, v: Any, path: str, errs: list[FieldError]) -> None:
        if not isinstance(v, dict):
            errs.append(FieldError(path, "Invalid", v, "must be an object"))
            return
        for k, x in v.items():
            self.value.check(x, f"{path}[{k}]", errs)


OWNER_REF = Struct(
    {
        "apiVersion": Str(),
        "kind": Str(),
        "name": Str(),
        "uid": Str(),
        "controller": Bool(),
        "blockOwnerDeletion": Bool(),
    },
    ("apiVersion", "kind", "name", "uid"),
)
METADATA = Struct(
    {
        "name": Str(),
        "generateName": Str(),
        "namespace": Str(),
        "labels": MapOf(),
        "annotations": MapOf(),
        "uid": Str(),
        "resourceVersion": Str(),
        "generation": Int(),
        "creationTimestamp": Str(),
        "deletionTimestamp": Str(),
        "ownerReferences": ListOf(OWNER_REF),
        "finalizers": ListOf(Str()),
    }
)
SELECTOR = Struct(
    {
        "matchLabels": MapOf(),
        "matchExpressions": ListOf(
            Struct({"key": Str(), "operator": Str(), "values": ListOf(Str())}, ("key", "operator"))
        ),
    }
)
RESOURCES = Struct({"requests": MapOf(Quantity()), "limits": MapOf(Quantity())})
CONTAINER = Struct(
    {
        "name": Str(),
        "image": Str(),
        "command": ListOf(Str()),
        "args": ListOf(Str()),
        "env": ListOf(Struct({"name": Str(), "value": Str()}, ("name",))),
        "workingDir": Str(),
        "resources": RESOURCES,
    },
    ("name",),
)
POD_SPEC = Struct(
    {
        "containers": ListOf(CONTAINER),
        "restartPolicy": Str(),
        "nodeSelector": MapOf(),
        "nodeName": Str(),
        "terminationGracePeriodSeconds": Int(),
        "schedulerName": Str(),
    },
    ("containers",),
)
TEMPLATE = Struct({"metadata": METADATA, "spec": POD_SPEC})
STRATEGY = Struct({"type": Str(), "rollingUpdate": Struct({"maxSurge": IntOrStr(), "maxUnavailable": IntOrStr()})})


def _top(spec: T, spec_required: bool = True) -> Struct:
    return Struct(
        {"apiVersion": Str(), "kind": Str(), "metadata": METADATA, "spec": spec, "status": AnyT()},
        ("apiVersion", "kind", "metadata", *(("spec",) if spec_required else ())),
    )


SCHEMAS: dict[str, Struct] = {
    "Pod": _top(POD_SPEC),
    "Deployment": _top(
        Struct(
            {
                "replicas": Int(),
                "selector": SELECTOR,
                "template": TEMPLATE,
                "strategy": STRATEGY,
                "revisionHistoryLimit": Int(),
                "minReadySeconds": Int(),
                "progressDeadlineSeconds": Int(),
                "paused": Bool(),
            },
            ("selector", "template"),
        )
    ),
    "ReplicaSet": _top(
        Struct({"replicas": Int(), "selector": SELECTOR, "template": TEMPLATE, "minReadySeconds": Int()}, ("selector",))
    ),
    "Node": _top(Struct({"unschedulable": Bool(), "providerID": Str(), "taints": AnyT()}), spec_required=False),
    "Namespace": _top(Struct({"finalizers": ListOf(Str())}), spec_required=False),
    "Lease": _top(
        Struct(
            {
                "holderIdentity": Str(),
                "leaseDurationSeconds": Int(),
                "acquireTime": Str(),
                "renewTime": Str(),
                "leaseTransitions": Int(),
            }
        ),
        spec_required=False,
    ),
}

# ---- rules ----

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_PERCENT = re.compile(r"^[0-9]+%$")

SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'example.com')"
)
LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name')"
)


def validate(obj: Any) -> None:
    """Raises ValidationError naming every bad field; the object should already be defaulted."""
    if not isinstance(obj, dict):
        raise ValidationError("", "", [FieldError("", "Invalid", obj, "a manifest must be an object")])
    kind = obj.get("kind")
    name = obj.get("metadata", {}).get("name", "") if isinstance(obj.get("metadata"), dict) else ""
    errs: list[FieldError] = []
    if not kind:
        raise ValidationError("", name, [FieldError("kind", "Required")])
    if kind not in SCHEMAS or kind not in kinds.BY_KIND:
        supported = ", ".join(f'"{k}"' for k in sorted(SCHEMAS))
        raise ValidationError(str(kind), name, [FieldError("kind", "Unsupported", kind, supported)])
    k = kinds.BY_KIND[kind]
    if obj.get("apiVersion") != k.api_version:
        errs.append(FieldError("apiVersion", "Unsupported", obj.get("apiVersion"), f'"{k.api_version}"'))
    SCHEMAS[kind].check(obj, "", errs)
    shape_ok = not errs
    try:
        _validate_metadata(obj["metadata"], k, errs)
        rules = _RULES.get(kind)
        if rules is not None:
            rules(obj, errs)
    except (KeyError, TypeError, AttributeError, ValueError):
        if shape_ok:
            raise
        # A field of the wrong shape (already reported) stopped the rules part-way.
    if errs:
        raise ValidationError(kind, name or obj.get("metadata", {}).get("generateName", ""), errs)


def _validate_metadata(md: Obj, kind: kinds.Kind, errs: list[FieldError]) -> None:
    if not md.get("name") and not md.get("generateName"):
        errs.append(FieldError("metadata.name", "Required", detail="name or generateName is required"))
    elif md.get("name"):
        n = md["name"]
        pattern = _DNS1123_LABEL if kind in (kinds.NAMESPACE, kinds.DEPLOYMENT) else _DNS1123_SUBDOMAIN
        if len(n) > (63 if pattern is _DNS1123_LABEL else 253) or not pattern.match(n):
            msg = LABEL_MSG if pattern is _DNS1123_LABEL else SUBDOMAIN_MSG
            errs.append(FieldError("metadata.name", "Invalid", n, msg))
    if kind.namespaced and md.get("namespace") and not _DNS1123_LABEL.match(md["namespace"]):
        errs.append(FieldError("metadata.namespace", "Invalid", md["namespace"], LABEL_MSG))
    _validate_labels(md.get("labels") or {}, "metadata.labels", errs)


def _validate_labels(lbls: dict[str, str], path: str, errs: list[FieldError]) -> None:
    for k, v in lbls.items():
        name = k.rsplit("/", 1)[-1]
        if len(name) > 63 or not _LABEL_NAME.match(name):
            errs.append(
                FieldError(path, "Invalid", k, "name part must consist of alphanumeric characters, '-', '_' or '.'")
            )
        if len(v) > 63 or not _LABEL_VALUE.match(v):
            errs.append(
                FieldError(
                    f"{path}[{k}]",
                    "Invalid",
                    v,
                    "a valid label must be an empty string or consist of alphanumeric characters, "
                    "'-', '_' or '.', and must start and end with an alphanumeric character",
                )
            )


def _nonneg(v: Any, path: str, errs: list[FieldError]) -> None:
    if isinstance(v, int) and v < 0:
        errs.append(FieldError(path, "Invalid", v, "must be greater than or equal to 0"))


def _quantity_or_none(q: Any) -> Any:
    try:
        return None if q is None else quantity.parse(q)
    except (ValueError, TypeError):
        return None  # reported by the shape pass


def _validate_pod_spec(spec: Obj, path: str, errs: list[FieldError], policies: tuple[str, ...]) -> None:
    containers = spec.get("containers") or []
    if not containers:
        errs.append(FieldError(f"{path}.containers", "Required"))
    seen: set[str] = set()
    for i, c in enumerate(containers):
        cp = f"{path}.containers[{i}]"
        n = c.get("name", "")
        if not _DNS1123_LABEL.match(n) or len(n) > 63:
            errs.append(FieldError(f"{cp}.name", "Invalid", n, LABEL_MSG))
        elif n in seen:
            errs.append(FieldError(f"{cp}.name", "Duplicate", n))
        seen.add(n)
        if not c.get("command"):
            errs.append(
                FieldError(f"{cp}.command", "Required", detail="the node agent runs local commands, not images")
            )
        for j, e in enumerate(c.get("env") or []):
            if not _ENV_NAME.match(e.get("name", "")):
                errs.append(
                    FieldError(
                        f"{cp}.env[{j}].name",
                        "Invalid",
                        e.get("name", ""),
                        "a valid environment variable name must consist of alphabetic characters, digits, '_', "
                        "'-', or '.', and must not start with a digit",
                    )
                )
        res = c.get("resources") or {}
        for section in ("requests", "limits"):
            for rname, q in (res.get(section) or {}).items():
                rp = f"{cp}.resources.{section}[{rname}]"
                if rname not in ("cpu", "memory"):
                    errs.append(FieldError(rp, "Unsupported", rname, '"cpu", "memory"'))
                elif _quantity_or_none(q) is not None and quantity.parse(q) < 0:
                    errs.append(FieldError(rp, "Invalid", q, "must be greater than or equal to 0"))
        limits = res.get("limits") or {}
        for rname, q in (res.get("requests") or {}).items():
            lim = _quantity_or_none(limits.get(rname))
            if lim is not None and (req := _quantity_or_none(q)) is not None and req > lim:
                errs.append(
                    FieldError(
                        f"{cp}.resources.requests[{rname}]",
                        "Invalid",
                        q,
                        f"must be less than or equal to {rname} limit",
                    )
                )
    policy = spec.get("restartPolicy")
    if policy not in policies:
        errs.append(FieldError(f"{path}.restartPolicy", "Unsupported", policy, ", ".join(f'"{p}"' for p in policies)))
    _nonneg(spec.get("terminationGracePeriodSeconds"), f"{path}.terminationGracePeriodSeconds", errs)
    _validate_labels(spec.get("nodeSelector") or {}, f"{path}.nodeSelector", errs)


def _validate_pod(obj: Obj, errs: list[FieldError]) -> None:
    _validate_pod_spec(obj["spec"], "spec", errs, ("Always", "OnFailure", "Never"))


def _validate_selector_and_template(obj: Obj, errs: list[FieldError], policies: tuple[str, ...]) -> None:
    spec = obj["spec"]
    _nonneg(spec.get("replicas"), "spec.replicas", errs)
    _nonneg(spec.get("minReadySeconds"), "spec.minReadySeconds", errs)
    sel = spec.get("selector") or {}
    if not sel.get("matchLabels") and not sel.get("matchExpressions"):
        errs.append(FieldError("spec.selector", "Invalid", sel, f"empty selector is invalid for {obj['kind'].lower()}"))
    for i, e in enumerate(sel.get("matchExpressions") or []):
        if e["operator"] not in ("In", "NotIn", "Exists", "DoesNotExist"):
            errs.append(
                FieldError(
                    f"spec.selector.matchExpressions[{i}].operator",
                    "Unsupported",
                    e["operator"],
                    '"In", "NotIn", "Exists", "DoesNotExist"',
                )
            )
    tmpl = spec.get("template")
    if tmpl is None:
        return
    from controlplane.api.meta import selector_matches

    tl = (tmpl.get("metadata") or {}).get("labels") or {}
    _validate_labels(tl, "spec.template.metadata.labels", errs)
    if sel and not selector_matches(sel, tl):
        errs.append(
            FieldError("spec.template.metadata.labels", "Invalid", tl, "`selector` does not match template `labels`")
        )
    if "spec" not in tmpl:
        errs.append(FieldError("spec.template.spec", "Required"))
    else:
        _validate_pod_spec(tmpl["spec"], "spec.template.spec", errs, policies)


def _int_or_percent(v: Any, path: str, errs: list[FieldError], max_100: bool) -> None:
    if isinstance(v, str):
        if not _PERCENT.match(v):
            errs.append(
                FieldError(path, "Invalid", v, "a valid percent string must be a numeric string followed by '%'")
            )
        elif max_100 and int(v[:-1]) > 100:
            errs.append(FieldError(path, "Invalid", v, "must not be greater than 100%"))
    else:
        _nonneg(v, path, errs)


def _is_zero(v: Any) -> bool:
    return v == 0 or v == "0%"


def _validate_deployment(obj: Obj, errs: list[FieldError]) -> None:
    _validate_selector_and_template(obj, errs, ("Always",))
    spec = obj["spec"]
    _nonneg(spec.get("revisionHistoryLimit"), "spec.revisionHistoryLimit", errs)
    strategy = spec.get("strategy") or {}
    stype = strategy.get("type")
    if stype not in ("Recreate", "RollingUpdate"):
        errs.append(FieldError("spec.strategy.type", "Unsupported", stype, '"Recreate", "RollingUpdate"'))
    ru = strategy.get("rollingUpdate")
    if stype == "Recreate" and ru:
        errs.append(
            FieldError(
                "spec.strategy.rollingUpdate",
                "Forbidden",
                detail="may not be specified when strategy `type` is 'Recreate'",
            )
        )
    if stype == "RollingUpdate" and ru:
        surge, unavail = ru.get("maxSurge", "25%"), ru.get("maxUnavailable", "25%")
        _int_or_percent(surge, "spec.strategy.rollingUpdate.maxSurge", errs, max_100=False)
        _int_or_percent(unavail, "spec.strategy.rollingUpdate.maxUnavailable", errs, max_100=True)
        if _is_zero(surge) and _is_zero(unavail):
            errs.append(
                FieldError(
                    "spec.strategy.rollingUpdate.maxUnavailable",
                    "Invalid",
                    unavail,
                    "may not be 0 when `maxSurge` is 0",
                )
            )


def _validate_replicaset(obj: Obj, errs: list[FieldError]) -> None:
    _validate_selector_and_template(obj, errs, ("Always",))


_RULES = {"Pod": _validate_pod, "Deployment": _validate_deployment, "ReplicaSet": _validate_replicaset}
