"""Leases: the lessor (lease table, key <-> lease maps, persistence), the expiry queue, and the apply functions.

The leader-side loops of a running member (promote/demote, expiry, checkpoints, renewals) live
in ``kvstore.lease.runner``, imported from there: it needs the log's request codec, and this
package must stay importable from the applier without a cycle.
"""

from kvstore.lease.apply import apply_lease_checkpoint, apply_lease_grant, apply_lease_revoke
from kvstore.lease.expiry import LeaseQueue
from kvstore.lease.lessor import (
    DEFAULT_CHECKPOINT_INTERVAL,
    MAX_LEASE_TTL,
    Lease,
    LeaseExpired,
    Lessor,
    NotPrimary,
    min_lease_ttl,
)

__all__ = [
    "DEFAULT_CHECKPOINT_INTERVAL",
    "MAX_LEASE_TTL",
    "Lease",
    "LeaseExpired",
    "LeaseQueue",
    "Lessor",
    "NotPrimary",
    "apply_lease_checkpoint",
    "apply_lease_grant",
    "apply_lease_revoke",
    "min_lease_ttl",
]
