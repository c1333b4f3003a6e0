"""The store's own errors, each naming one condition (etcd's mvcc.ErrCompacted and ErrFutureRev).

The store knows nothing of gRPC or etcd's message strings: the RPC edge maps these to etcd's
errors (``kvstore.errors.to_etcd``), and so does the applier for a request's result.
"""

from __future__ import annotations


class MvccError(Exception):
    """Base class of the errors the store raises to its callers."""


class CompactedError(MvccError):
    """The revision asked for is at or below the compacted revision: its history is gone."""


class FutureRevError(MvccError):
    """The revision asked for is after the store's current revision."""
