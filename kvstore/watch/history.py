"""Reading past events back from the backend, for watchers that start in the past.

The backend's ``key`` bucket is the store's history: encoded revision -> KeyValue, tombstones
marked, in revision order. ``read_events`` walks it from a revision with one cursor in one read
transaction and returns the events of whole revisions only (a revision's events are never split
between two reads), stopping at a revision bound and, once a byte budget is spent, at the next
revision boundary, so one catch-up step costs bounded time and memory.

A tombstone's stored KeyValue holds only the key; as etcd does, the event gets the deletion's
revision as its mod_revision, so a watcher resuming after it never sees it again.
"""

from __future__ import annotations

from collections.abc import Callable

from kvstore.mvcc.backend import Backend
from kvstore.mvcc.revision import bytes_to_rev, rev_to_bytes
from kvstore.mvcc.store import EVENT_DELETE, EVENT_PUT
from kvstore.watch.watcher import EventRecord
from proto.mvccpb.kv_pb2 import KeyValue


def read_events(
    backend: Backend, lo: int, hi: int, max_bytes: int, wanted: Callable[[bytes], bool]
) -> tuple[list[EventRecord], int]:
    """Events of revisions [lo, next) whose key is wanted, and next (<= hi: the first revision not read).

    Reading stops before the first revision that starts after max_bytes of records were read
    (at least one revision is always read whole).
    """
    from_string = KeyValue.FromString
    out: list[EventRecord] = []
    read = 0
    last_main = -1
    with backend.begin_read() as txn:
        cursor = txn.cursor(db=backend.key_db)
        if not cursor.set_range(rev_to_bytes(lo, 0)):
            return out, hi
        for raw_rev, raw_kv in cursor.iternext():
            main, _, tombstone = bytes_to_rev(raw_rev)
            if main != last_main:
                if main >= hi:
                    return out, hi
                if read >= max_bytes:
                    return out, main
                last_main = main
            read += len(raw_kv) + 17
            kv = from_string(raw_kv)
            if not wanted(kv.key):
                continue
            if tombstone:
                kv.mod_revision = main
                out.append(EventRecord(main, EVENT_DELETE, kv))
            else:
                out.append(EventRecord(main, EVENT_PUT, kv))
    return out, hi
