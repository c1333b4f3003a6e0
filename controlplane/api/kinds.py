"""The kinds the control plane serves, their names on the command line and their keys in the store.

Objects live under ``/registry/<resource>/<namespace>/<name>`` (namespaced kinds) or
``/registry/<resource>/<name>`` (cluster-scoped kinds), as JSON.
"""

from __future__ import annotations

from dataclasses import dataclass

REGISTRY = "/registry"


@dataclass(frozen=True)
class Kind:
    kind: str
    api_version: str
    resource: str  # plural, lower case: the key segment and the CLI's canonical name
    namespaced: bool
    short_names: tuple[str, ...] = ()
    has_status: bool = True  # a status "subresource": spec writes keep status, status writes keep spec

    @property
    def group(self) -> str:
        return self.api_version.split("/")[0] if "/" in self.api_version else ""

    @property
    def qualified(self) -> str:
        """``deployment.apps``, ``pod``: how kubectl names a kind in messages."""
        return f"{self.kind.lower()}.{self.group}" if self.group else self.kind.lower()

    def key(self, namespace: str | None, name: str) -> str:
        if self.namespaced:
            return f"{REGISTRY}/{self.resource}/{namespace}/{name}"
        return f"{REGISTRY}/{self.resource}/{name}"

    def prefix(self, namespace: str | None = None) -> str:
        if self.namespaced and namespace:
            return f"{REGISTRY}/{self.resource}/{namespace}/"
        return f"{REGISTRY}/{self.resource}/"


NAMESPACE = Kind("Namespace", "v1", "namespaces", False, ("ns",), has_status=True)
NODE = Kind("Node", "v1", "nodes", False, ("no",))
POD = Kind("Pod", "v1", "pods", True, ("po",))
REPLICA_SET = Kind("ReplicaSet", "apps/v1", "replicasets", True, ("rs",))
DEPLOYMENT = Kind("Deployment", "apps/v1", "deployments", True, ("deploy",))
LEASE = Kind("Lease", "coordination.k8s.io/v1", "leases", True, (), has_status=False)

ALL = (NAMESPACE, NODE, POD, REPLICA_SET, DEPLOYMENT, LEASE)
BY_KIND = {k.kind: k for k in ALL}


class UnknownKind(LookupError):
    pass


def lookup(name: str) -> Kind:
    """Resolves what a user types (``pods``, ``pod``, ``po``, ``deploy``, ``deployment.apps``, ``Node``)."""
    n = name.lower()
    for k in ALL:
        names = {k.resource, k.kind.lower(), *k.short_names, k.qualified, f"{k.resource}.{k.group}"}
        if n in names:
            return k
    raise UnknownKind(f'the server doesn\'t have a resource type "{name}"')


def for_object(obj: dict) -> Kind:
    kind = obj.get("kind")
    if kind not in BY_KIND:
        raise UnknownKind(f'no matches for kind "{kind}" in version "{obj.get("apiVersion")}"')
    return BY_KIND[kind]


def parse_key(key: str) -> tuple[Kind, str | None, str]:
    """The inverse of Kind.key."""
    parts = key[len(REGISTRY) + 1 :].split("/")
    for k in ALL:
        if parts[0] == k.resource:
            if k.namespaced:
                return k, parts[1], parts[2]
            return k, None, parts[1]
    raise UnknownKind(key)
