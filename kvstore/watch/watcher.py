"""One watcher, one event, and the response a watcher gets for some events.

A ``Watcher`` is what a client created with one WatchCreateRequest: a key range, the revision it
needs next (``min_rev``), its options, and which of the hub's groups it is in (``state``). Its
stream made it and answers through it; every field that changes after that (``min_rev``, ``state``,
``pending``, ``progress_quiet``) is the hub's (``kvstore.watch.hub``) to write, and no one else's.
The stream is seen here only as an ``Outbox``: the part of it the hub sends through.

An ``EventRecord`` wraps one change of the store. Its ``mvccpb.Event`` is built at most once,
the first time a watcher wants it, and shared by every watcher that receives it; the variant
carrying the previous key-value (``prev_kv``) is built separately, also at most once.

``PrevReader`` reads previous values for ``prev_kv`` as etcd does: the key at the event's revision
minus one, skipped for a create (a put whose create and mod revisions are equal), and simply
left out when that revision has been compacted.
"""

from __future__ import annotations

from typing import Protocol

from kvstore.mvcc.errors import CompactedError
from kvstore.mvcc.store import EVENT_DELETE, EVENT_PUT, KVStore, ReadView
from proto.etcdserverpb import rpc_pb2 as pb
from proto.mvccpb.kv_pb2 import Event, KeyValue

# Watcher.state
SYNCED = 0  # in the hub's synced group: gets events as batches are applied
UNSYNCED = 1  # catching up from the backend, starting at min_rev
VICTIM = 2  # its stream was full: holds one undelivered response (pending), retried later
DONE = 3  # canceled, compacted, or its stream is gone

EVENT_OVERHEAD = 24  # rough bytes of an encoded Event beyond its key and value (memory accounting)

_WatchResponse = pb.WatchResponse


class Outbox(Protocol):
    """Where a watcher's responses go: its stream's queue (``kvstore.watch.stream.WatchStream``)."""

    def has_room(self) -> bool:
        """Whether an event response would be taken now."""
        ...

    def offer(self, resp: pb.WatchResponse, size: int, fragment: bool) -> bool:
        """Queues an event response unless the queue is full."""
        ...

    def push(self, resp: pb.WatchResponse, size: int = ...) -> None:
        """Queues a control response whatever the queue holds."""
        ...

    def wait_for_room(self) -> None:
        """The hub holds work back for this stream: tell it (``kick``) once the client has read some."""
        ...

    def hold(self, size: int) -> None:
        """size more (or, negative, fewer) bytes are held back for the stream by its victims."""
        ...

    def answer_progress(self) -> None:
        """Answers a pending progress request (every watcher of the stream is synced)."""
        ...


class Watcher:
    __slots__ = (
        "end",
        "fragment",
        "id",
        "key",
        "min_rev",
        "nodelete",
        "noput",
        "pending",
        "prev_kv",
        "progress_notify",
        "progress_quiet",
        "state",
        "stream",
    )

    def __init__(
        self,
        watch_id: int,
        key: bytes,
        end: bytes | None,
        stream: Outbox,
        *,
        noput: bool = False,
        nodelete: bool = False,
        prev_kv: bool = False,
        fragment: bool = False,
        progress_notify: bool = False,
    ) -> None:
        self.id = watch_id
        self.key = key
        self.end = end  # None: the key alone; b"": every key >= key; else [key, end)
        self.stream = stream  # the WatchStream it belongs to
        self.noput = noput
        self.nodelete = nodelete
        self.prev_kv = prev_kv
        self.fragment = fragment
        self.progress_notify = progress_notify
        self.progress_quiet = True  # no events sent since the last progress tick
        self.min_rev = 0  # the first revision it has not seen yet
        self.state = DONE  # set by the hub when added
        self.pending: tuple[pb.WatchResponse, int] | None = None  # a victim's undelivered response

    def __repr__(self) -> str:
        return f"Watcher(id={self.id}, key={self.key!r}, end={self.end!r}, min_rev={self.min_rev}, state={self.state})"

    def wants(self, key: bytes) -> bool:
        end = self.end
        if end is None:
            return key == self.key
        return key >= self.key and (not end or key < end)


class EventRecord:
    """One change at one revision, with its encoded forms built lazily and at most once."""

    __slots__ = ("_event", "_with_prev", "kind", "kv", "rev", "size")

    def __init__(self, rev: int, kind: int, kv: KeyValue) -> None:
        self.rev = rev
        self.kind = kind  # EVENT_PUT or EVENT_DELETE
        self.kv = kv  # for a delete: key and mod_revision only
        self.size = len(kv.key) + len(kv.value) + EVENT_OVERHEAD
        self._event: Event | None = None
        self._with_prev: Event | None = None

    @property
    def key(self) -> bytes:
        return self.kv.key

    def event(self) -> Event:
        ev = self._event
        if ev is None:
            ev = self._event = Event(type=self.kind, kv=self.kv)
        return ev

    def event_with_prev(self, prev: PrevReader) -> Event:
        ev = self._with_prev
        if ev is None:
            kv = self.kv
            old = None
            if self.kind == EVENT_DELETE or kv.create_revision != kv.mod_revision:
                old = prev.get(kv.key, self.rev - 1)
            if old is None:
                ev = self.event()
            else:
                ev = Event(type=self.kind, kv=kv, prev_kv=old)
                self.size += len(old.key) + len(old.value) + EVENT_OVERHEAD
            self._with_prev = ev
        return ev


class PrevReader:
    """Reads keys at past revisions for prev_kv, through one read transaction opened on first use."""

    __slots__ = ("_view", "store")

    def __init__(self, store: KVStore) -> None:
        self.store = store
        self._view: ReadView | None = None

    def get(self, key: bytes, rev: int) -> KeyValue | None:
        view = self._view
        if view is None:
            view = self._view = ReadView(self.store, self.store.backend.begin_read())
        try:
            kvs = view.range(key, None, rev).kvs
        except CompactedError:  # etcd leaves prev_kv out
            return None
        return kvs[0] if kvs else None

    def close(self) -> None:
        if self._view is not None:
            self._view.txn.abort()
            self._view = None


def build_response(
    w: Watcher, rev: int, records: list[EventRecord], prev: PrevReader
) -> tuple[pb.WatchResponse | None, int]:
    """The response carrying records to w (its filters applied), or (None, 0) if none is left.

    rev is the header revision: the revision the watcher has now seen everything up to.
    """
    noput, nodelete = w.noput, w.nodelete
    events = []
    size = 64
    for r in records:
        if r.kind == EVENT_PUT:
            if noput:
                continue
        elif nodelete:
            continue
        events.append(r.event_with_prev(prev) if w.prev_kv else r.event())
        size += r.size
    if not events:
        return None, 0
    resp = _WatchResponse(watch_id=w.id, events=events)
    resp.header.revision = rev
    return resp, size
