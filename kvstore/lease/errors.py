"""The lessor's own errors, each naming one condition (etcd's lease.ErrLeaseNotFound, ...).

The lease package knows nothing of gRPC or etcd's message strings: the RPC edge maps the ones a
client can see to etcd's errors (``kvstore.errors.to_etcd``), and so does the applier for a
request's result. ``NotPrimary`` and ``LeaseExpired`` never reach a client: the lease runner and
the Lease service act on them.
"""

from __future__ import annotations


class LeaseError(Exception):
    """Base class of the errors the lessor raises to its callers."""


class LeaseNotFoundError(LeaseError):
    """No lease with that id (or the id 0, which names no lease)."""


class LeaseExistsError(LeaseError):
    """A lease with that id exists already."""


class LeaseTTLTooLargeError(LeaseError):
    """The TTL asked for is over the largest a lease may have (MAX_LEASE_TTL)."""


class NotPrimary(LeaseError):
    """This member's lessor does not manage expiry now: the renewal must go to the leader."""


class LeaseExpired(LeaseError):
    """The lease's time is up but its revoke has not been applied yet: wait for it, then ask again."""
