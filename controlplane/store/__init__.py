"""The store seam (``base``), etcd's v3 API behind it (``etcd``), an in-memory model for tests (``fake``)."""

from controlplane.store.base import (
    AlreadyExists,
    Compacted,
    Conflict,
    Event,
    KeyValue,
    NotFound,
    Store,
    StoreError,
    Unavailable,
    WatchResponse,
    WatchStream,
)

__all__ = [
    "AlreadyExists",
    "Compacted",
    "Conflict",
    "Event",
    "KeyValue",
    "NotFound",
    "Store",
    "StoreError",
    "Unavailable",
    "WatchResponse",
    "WatchStream",
]
