"""Multi-version concurrency control: revisions, the in-memory key index, the LMDB backend and the store.

The store raises its own errors (``kvstore.mvcc.errors``); the RPC edge maps them to etcd's.
"""

from kvstore.mvcc.backend import Backend
from kvstore.mvcc.errors import CompactedError, FutureRevError, MvccError
from kvstore.mvcc.store import KVStore, RangeResult

__all__ = ["Backend", "CompactedError", "FutureRevError", "KVStore", "MvccError", "RangeResult"]
