"""Multi-version concurrency control: revisions, the in-memory key index, the LMDB backend and the store."""

from kvstore.mvcc.backend import Backend
from kvstore.mvcc.store import KVStore, RangeResult

__all__ = ["Backend", "KVStore", "RangeResult"]
