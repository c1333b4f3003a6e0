"""One client Watch stream's state: its watchers, and the responses waiting to be sent to it.

No I/O here: the gRPC servicer feeds requests in (``handle``) and drains responses out (``pop``),
and sets ``on_ready`` to learn when there is something to drain. The hub pushes event responses
in with ``offer``, which refuses once the queue holds ``queue_limit`` bytes (a live watcher then
becomes a victim, see ``kvstore.watch.hub``; catch-up waits), and is told (``waiting``) to come
back once the client has read half of it; control responses (created, canceled, progress)
are never refused. Responses leave in the order they entered, so a watcher's events always
follow its created response, and a progress response follows every event it vouches for.

Memory is bounded per stream: what is queued plus what its victims hold back (``hold``, which the
hub calls) may not pass ``memory_limit``; past it the stream fails with ``SlowConsumer`` and all its
watchers go.

Who owns what: the stream owns its queue, its watch ids and the watchers it created (``watchers``);
the hub owns every watcher's state and the per-stream bookkeeping of watcher state (victims, how many
are not synced, a pending progress request, progress ticks). The stream tells the hub through the
``WatcherRegistry`` methods, the hub tells the stream through its ``Outbox`` methods, and neither
writes the other's fields; the hub imports this module, this module does not import the hub.

Request semantics are etcd 3.4's (etcdserver/api/v3rpc/watch.go, mvcc/watcher.go): an empty key
means ``\\0``; a range end of ``\\0`` means every key from the key on; an empty range is refused,
and so is a watch id already used on the stream (a created-and-canceled response with watch id
-1 and etcd's reason); watch id 0 asks for the next free id; canceling an unknown id is ignored;
a watcher canceled by compaction keeps its id until the client cancels it. A progress request is
answered (watch id -1, the store's revision) once every watcher of the stream is synced, so the
revision it carries is one the client has seen every event up to. etcd 3.4.23 answers at once
whatever the watchers' state; later releases defer the answer like this (etcd-io/etcd#15237),
and raftkv releases it on the move to synced, not on an event, so a watcher that catches up
without any event does not hold it back (the bug etcd-io/etcd#17557 fixed). A progress request on
a stream with no watchers is not answered, as in etcd 3.5 (its answer goes out on a watcher, and
there is none; 3.4.23 answered it).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol

from kvstore.errors import WATCH_DUPLICATE_ID as DUPLICATE_ID
from kvstore.errors import WATCH_EMPTY_RANGE as EMPTY_RANGE
from kvstore.errors import EtcdError
from kvstore.errors import WatchSlowConsumer as SlowConsumer
from kvstore.watch.watcher import Outbox, Watcher
from proto.etcdserverpb import rpc_pb2 as pb

_NOPUT = pb.WatchCreateRequest.NOPUT
_NODELETE = pb.WatchCreateRequest.NODELETE
CONTROL_SIZE = 64  # bytes a control response is counted as
INVALID_WATCH_ID = -1


class WatcherRegistry(Protocol):
    """What a stream asks of the hub (``kvstore.watch.hub.WatchHub``)."""

    @property
    def current_rev(self) -> int:
        """The store's current revision."""
        ...

    def add(self, w: Watcher, start_rev: int) -> None:
        """Starts delivering w's events from start_rev."""
        ...

    def remove(self, w: Watcher) -> None:
        """Stops w (canceled, or its stream closed); nothing if it was stopped already."""
        ...

    def kick(self, stream: Outbox) -> None:
        """stream has room again for what the hub held back."""
        ...

    def request_progress(self, stream: Outbox) -> None:
        """A progress request: answer it (``answer_progress``) once every watcher of stream is synced."""
        ...

    def forget(self, stream: Outbox) -> None:
        """stream is closed (its watchers removed)."""
        ...


class WatchStream:
    __slots__ = (
        "closed",
        "error",
        "held_bytes",
        "hub",
        "memory_limit",
        "next_id",
        "on_failed",
        "on_ready",
        "queue",
        "queue_limit",
        "queued_bytes",
        "waiting",
        "watchers",
    )

    def __init__(self, hub: WatcherRegistry, queue_limit: int, memory_limit: int) -> None:
        self.hub = hub
        self.queue_limit = queue_limit
        self.memory_limit = memory_limit
        self.watchers: dict[int, Watcher] = {}
        self.next_id = 0
        # (response, counted bytes, fragment it if large)
        self.queue: deque[tuple[pb.WatchResponse, int, bool]] = deque()
        self.queued_bytes = 0
        self.held_bytes = 0  # what this stream's victims hold back (told by the hub)
        self.waiting = False  # the hub holds work back until the queue drains (victims, parked catch-up)
        self.error: EtcdError | None = None
        self.closed = False
        self.on_ready: Callable[[], None] | None = None  # called when the queue stops being empty
        self.on_failed: Callable[[], object] | None = None  # called when the stream fails

    def __repr__(self) -> str:
        return f"WatchStream(watchers={len(self.watchers)}, queued={len(self.queue)}, held={self.held_bytes})"

    # ---- requests from the client ----

    def handle(self, req: pb.WatchRequest) -> None:
        which = req.WhichOneof("request_union")
        if which == "create_request":
            self.create(req.create_request)
        elif which == "cancel_request":
            self.cancel(req.cancel_request.watch_id)
        elif which == "progress_request":
            self.request_progress()
        # anything else is ignored, as etcd does

    def create(self, creq: pb.WatchCreateRequest) -> Watcher | None:
        if self.closed:
            return None
        hub = self.hub
        key = creq.key or b"\x00"
        raw_end = creq.range_end
        end = None if not raw_end else (b"" if raw_end == b"\x00" else raw_end)
        if end and key >= end:
            self.refuse(EMPTY_RANGE)
            return None
        wid = creq.watch_id
        watchers = self.watchers
        if wid == 0:  # clientv3.AutoWatchID
            wid = self.next_id
            while wid in watchers:
                wid += 1
            self.next_id = wid + 1
        elif wid in watchers:
            self.refuse(DUPLICATE_ID)
            return None
        filters = creq.filters
        w = Watcher(
            wid,
            key,
            end,
            self,
            noput=_NOPUT in filters,
            nodelete=_NODELETE in filters,
            prev_kv=creq.prev_kv,
            fragment=creq.fragment,
            progress_notify=creq.progress_notify,
        )
        watchers[wid] = w
        rev = hub.current_rev
        resp = pb.WatchResponse(watch_id=wid, created=True)
        resp.header.revision = rev
        self.push(resp)
        hub.add(w, creq.start_revision or rev + 1)
        return w

    def refuse(self, reason: str) -> None:
        """Answers a create request with a created-and-canceled response (etcd's way to refuse a watch)."""
        resp = pb.WatchResponse(watch_id=INVALID_WATCH_ID, created=True, canceled=True, cancel_reason=reason)
        resp.header.revision = self.hub.current_rev
        self.push(resp)

    def cancel(self, watch_id: int) -> None:
        w = self.watchers.pop(watch_id, None)
        if w is None or self.closed:
            return
        self.hub.remove(w)
        resp = pb.WatchResponse(watch_id=watch_id, canceled=True)
        resp.header.revision = self.hub.current_rev
        self.push(resp)

    def request_progress(self) -> None:
        if not self.watchers:
            return  # etcd 3.5: nothing to answer on
        self.hub.request_progress(self)

    def answer_progress(self) -> None:
        resp = pb.WatchResponse(watch_id=INVALID_WATCH_ID)
        resp.header.revision = self.hub.current_rev
        self.push(resp)

    # ---- responses to the client ----

    def has_room(self) -> bool:
        return not self.queue or self.queued_bytes < self.queue_limit

    def wait_for_room(self) -> None:
        self.waiting = True

    def offer(self, resp: pb.WatchResponse, size: int, fragment: bool) -> bool:
        """Queues an event response unless the queue is full (at queue_limit; one response may pass it)."""
        if self.closed:
            return True  # nobody will read it; the watcher is being removed
        queue = self.queue
        if queue and self.queued_bytes >= self.queue_limit:
            self.waiting = True
            return False
        queue.append((resp, size, fragment))
        self.queued_bytes += size
        if len(queue) == 1 and self.on_ready is not None:
            self.on_ready()
        return True

    def push(self, resp: pb.WatchResponse, size: int = CONTROL_SIZE) -> None:
        """Queues a control response whatever the queue holds (memory is still checked)."""
        if self.closed:
            return
        queue = self.queue
        queue.append((resp, size, False))
        self.queued_bytes += size
        if len(queue) == 1 and self.on_ready is not None:
            self.on_ready()
        self._check_memory()

    def pop(self) -> tuple[pb.WatchResponse, bool] | None:
        """The next response to send and whether to fragment it, or None if nothing is queued."""
        queue = self.queue
        if not queue:
            return None
        resp, size, fragment = queue.popleft()
        self.queued_bytes -= size
        if self.waiting and self.queued_bytes <= self.queue_limit // 2:
            self.waiting = False
            self.hub.kick(self)
        return resp, fragment

    def hold(self, size: int) -> None:
        self.held_bytes += size
        if size > 0:
            self._check_memory()

    def _check_memory(self) -> None:
        if self.queued_bytes + self.held_bytes > self.memory_limit and self.error is None:
            self.fail(SlowConsumer())

    # ---- the end ----

    def fail(self, error: EtcdError) -> None:
        """Ends the stream with error: its watchers are removed and nothing more is sent."""
        if self.closed:
            return
        self.error = error
        self.close()
        if self.on_ready is not None:
            self.on_ready()
        if self.on_failed is not None:
            self.on_failed()

    def close(self) -> None:
        """Removes every watcher of the stream from the hub (the client is gone)."""
        if self.closed:
            return
        hub = self.hub
        for w in self.watchers.values():
            hub.remove(w)
        self.closed = True
        self.watchers.clear()
        self.queue.clear()
        self.queued_bytes = 0
        hub.forget(self)
