"""Objects in Kubernetes' shapes: kinds and keys, metadata helpers, defaults, validation, quantities."""

from controlplane.api.defaults import apply_defaults
from controlplane.api.kinds import ALL, BY_KIND, DEPLOYMENT, LEASE, NAMESPACE, NODE, POD, REPLICA_SET, Kind, lookup
from controlplane.api.meta import Obj
from controlplane.api.validation import FieldError, ValidationError, validate

__all__ = [
    "ALL",
    "BY_KIND",
    "DEPLOYMENT",
    "LEASE",
    "NAMESPACE",
    "NODE",
    "POD",
    "REPLICA_SET",
    "FieldError",
    "Kind",
    "Obj",
    "ValidationError",
    "apply_defaults",
    "lookup",
    "validate",
]
