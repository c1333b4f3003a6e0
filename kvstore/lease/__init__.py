"""Leases: the lessor (lease table, key <-> lease maps, persistence), the expiry queue, the apply functions,
and the lessor's own errors (``kvstore.lease.errors``; the RPC edge maps them to etcd's).

The leader-side loops of a running member (promote/demote, expiry, checkpoints, renewals) live
in ``kvstore.lease.runner``, imported from there: it needs the log's request codec, and this
package must stay importable from the applier without a cycle.
"""

from kvstore.lease.apply import apply_lease_checkpoint, apply_lease_grant, apply_lease_revoke
from kvstore.lease.errors import (
    LeaseError,
    LeaseExistsError,
    LeaseExpired,
    LeaseNotFoundError,
    LeaseTTLTooLargeError,
    NotPrimary,
)
from kvstore.lease.expiry import LeaseQueue
from kvstore.lease.lessor import DEFAULT_CHECKPOINT_INTERVAL, MAX_LEASE_TTL, Lease, Lessor, min_lease_ttl

__all__ = [
    "DEFAULT_CHECKPOINT_INTERVAL",
    "MAX_LEASE_TTL",
    "Lease",
    "LeaseError",
    "LeaseExistsError",
    "LeaseExpired",
    "LeaseNotFoundError",
    "LeaseQueue",
    "LeaseTTLTooLargeError",
    "Lessor",
    "NotPrimary",
    "apply_lease_checkpoint",
    "apply_lease_grant",
    "apply_lease_revoke",
    "min_lease_ttl",
]
