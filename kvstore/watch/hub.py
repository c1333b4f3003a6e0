"""The watch hub: every watcher of a member, kept synced, unsynced or victim, as etcd's watchable store.

- **Synced** watchers have seen the store up to its current revision. The applier hands each
  applied batch to ``notify`` (``[(revision, [(event type, KeyValue), ...]), ...]``), and each
  watcher whose range an event touches gets, per revision, one response holding all of that
  revision's events it wants. A revision is never split across responses (except by the gRPC
  layer's fragmenting, which the watcher asked for).
- **Unsynced** watchers started in the past (or fell behind). A background step reads the history
  from the backend (``kvstore.watch.history``) in windows of at most ``batch_revs`` revisions and
  ``batch_bytes`` bytes, sends each chosen watcher one response with its events of the window,
  and moves it to synced once the window reaches the current revision. A step runs synchronously
  between two applies, so no revision can slip in between the read and the move: no gap, no
  duplicate. The loop yields to the event loop between steps.
- **Victims**: a watcher whose stream refused a response (its queue was full) keeps that one
  response, leaves the synced group (its ``min_rev`` moves past the refused revision) and is
  retried when its stream has drained; once delivered it becomes unsynced and catches up from the
  backend. Nothing is dropped, and a victim holds at most one response: memory per stream is
  bounded, and a stream over its limit fails with ``SlowConsumer`` (``kvstore.watch.stream``).

Compaction: a watcher whose next revision is below the store's compacted revision is canceled
with ``compact_revision`` set (etcd: ``minRev < compactRev``), and keeps its id on its stream.

Events are encoded once: an ``EventRecord`` builds its ``mvccpb.Event`` when a first watcher
wants it and every other watcher reuses it (the prev_kv variant likewise, its previous value read
once). Each watcher's ``WatchResponse`` still serializes its own copy (upb copies a message added
to a repeated field), as every response carries its own watch id.

Snapshot install: ``reset(store, seen)`` points the hub at the store (the same one, restored in
place, or a new one) and moves every synced watcher to unsynced at the revision after the last
one it was notified of (``seen``, by default the previous store's current revision, + 1); the
catch-up then reads whatever the snapshot added from the store's backend, and cancels with
compact_revision those whose next revision the snapshot compacted away. Victims keep their
response and unsynced watchers their position. Call it right after the store is restored,
before anything is applied to it.

Time and randomness come from the member (``clock``, ``rng``), so a simulated member is
deterministic.

Ownership: the hub is the one writer of watcher state: each watcher's group, next revision, held
response and quiet flag, and per stream (``StreamWatchers``) its victims, how many of its watchers
are not synced, whether a progress request waits, and its progress tick. A stream reaches the hub
through its methods (``add``, ``remove``, ``kick``, ``request_progress``, ``forget``) and the hub the
stream through its ``Outbox`` methods; neither writes the other's fields.

Progress: every ``progress_interval`` seconds (etcd's default 10 minutes plus up to 10% jitter,
per stream; ``ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL`` or the constructor argument
changes it, at least 100 ms as in etcd) each synced watcher created with progress_notify that got
no events since the previous tick gets an empty response at the current revision.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import time
from collections.abc import Callable

from kvstore.mvcc.store import KVStore
from kvstore.watch.group import WatcherGroup
from kvstore.watch.history import read_events
from kvstore.watch.stream import WatchStream
from kvstore.watch.watcher import (
    DONE,
    SYNCED,
    UNSYNCED,
    VICTIM,
    EventRecord,
    Outbox,
    PrevReader,
    Watcher,
    build_response,
)
from proto.etcdserverpb import rpc_pb2 as pb
from proto.mvccpb.kv_pb2 import KeyValue

log = logging.getLogger("raftkv.watch")

DEFAULT_PROGRESS_INTERVAL = 600.0  # etcd: 10 minutes
MIN_PROGRESS_INTERVAL = 0.1  # etcd: minWatchProgressInterval
PROGRESS_ENV = "ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL"
BATCH_REVS = 1000  # etcd: watchBatchMaxRevs
BATCH_BYTES = 4 << 20
MAX_WATCHERS_PER_STEP = 1024
QUEUE_LIMIT = 4 << 20
STREAM_MEMORY_LIMIT = 64 << 20

Changes = list[tuple[int, list[tuple[int, KeyValue]]]]

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds of a Go duration ("10m", "1.5s", "500ms", "1m30s") or of a bare number of seconds."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"invalid duration {text!r}")
    return total


def progress_interval_from_env() -> float:
    raw = os.environ.get(PROGRESS_ENV)
    if not raw:
        return DEFAULT_PROGRESS_INTERVAL
    try:
        return parse_duration(raw)
    except ValueError:
        log.warning("ignoring invalid %s=%r", PROGRESS_ENV, raw)
        return DEFAULT_PROGRESS_INTERVAL


class StreamWatchers:
    """The hub's bookkeeping of one stream's watchers (the hub is its only writer)."""

    __slots__ = ("not_synced", "progress_due", "progress_pending", "progress_watchers", "victims")

    def __init__(self, progress_due: float | None) -> None:
        self.victims: dict[Watcher, None] = {}  # in the order they were refused
        self.not_synced = 0  # watchers unsynced or victims
        self.progress_pending = False  # a progress request waits for every watcher to be synced
        self.progress_watchers: dict[Watcher, None] = {}  # the watchers created with progress_notify
        self.progress_due = progress_due  # when the progress timer next ticks for the stream


class WatchHub:
    def __init__(
        self,
        store: KVStore,
        *,
        progress_interval: float | None = None,
        batch_revs: int = BATCH_REVS,
        batch_bytes: int = BATCH_BYTES,
        max_watchers_per_step: int = MAX_WATCHERS_PER_STEP,
        queue_limit: int = QUEUE_LIMIT,
        stream_memory_limit: int = STREAM_MEMORY_LIMIT,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self._clock = clock
        if progress_interval is None:
            progress_interval = progress_interval_from_env()
        self.progress_interval = max(progress_interval, MIN_PROGRESS_INTERVAL)
        self.batch_revs = batch_revs
        self.batch_bytes = batch_bytes
        self.max_watchers_per_step = max_watchers_per_step
        self.queue_limit = queue_limit
        self.stream_memory_limit = stream_memory_limit
        self.synced = WatcherGroup()
        self.unsynced: dict[Watcher, None] = {}
        self.streams: dict[Outbox, StreamWatchers] = {}
        self._kicked: dict[Outbox, None] = {}  # streams with victims and room again
        self._work = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._rng = rng if rng is not None else random.Random()

    # ---- lifecycle ----

    def start(self) -> None:
        """Starts the catch-up/victim loop and the progress timer (needs a running event loop)."""
        if self._tasks:
            return
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._sync_loop(), name="watch-sync"),
            loop.create_task(self._progress_loop(), name="watch-progress"),
        ]
        if self.unsynced or self._kicked:
            self._work.set()

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def reset(self, store: KVStore, seen: int | None = None) -> None:
        """Switches to store (a snapshot was installed); see the module docstring."""
        if seen is None:
            seen = self.store.current_rev
        self.store = store
        moved = list(self.synced)
        self.synced = WatcherGroup()
        for w in moved:
            w.min_rev = max(w.min_rev, seen + 1)
            self._set_state(w, UNSYNCED)
        if self.unsynced:
            self._work.set()

    # ---- streams and watchers ----

    @property
    def current_rev(self) -> int:
        return self.store.current_rev

    def new_stream(self) -> WatchStream:
        stream = WatchStream(self, self.queue_limit, self.stream_memory_limit)
        self.streams[stream] = StreamWatchers(self._next_progress(self._clock()))
        return stream

    def stream_state(self, stream: Outbox) -> StreamWatchers:
        """The hub's bookkeeping of stream's watchers (to look at: the hub alone changes it)."""
        return self.streams[stream]

    def forget(self, stream: Outbox) -> None:
        """Called by a closed stream (its watchers already removed)."""
        self.streams.pop(stream, None)
        self._kicked.pop(stream, None)

    def add(self, w: Watcher, start_rev: int) -> None:
        """Adds w to watch from start_rev: synced if that is in the future, else unsynced."""
        cur = self.store.current_rev
        if w.progress_notify:
            self.streams[w.stream].progress_watchers[w] = None
        if start_rev > cur:
            w.min_rev = start_rev
            w.state = SYNCED
            self.synced.add(w)
        else:
            w.min_rev = start_rev
            w.state = UNSYNCED
            self.unsynced[w] = None
            self.streams[w.stream].not_synced += 1
            self._work.set()

    def remove(self, w: Watcher) -> None:
        """Removes w from whichever group holds it (a cancel, or its stream closing); nothing if it is done."""
        state = w.state
        record = self.streams.get(w.stream)
        if record is not None:
            record.progress_watchers.pop(w, None)
        if state == SYNCED:
            self.synced.discard(w)
        elif state == UNSYNCED:
            del self.unsynced[w]
        elif state == VICTIM:
            if record is not None:
                del record.victims[w]
            if w.pending is not None:
                w.stream.hold(-w.pending[1])
            w.pending = None
        else:
            return
        if state != SYNCED:
            self._left_unsynced(w.stream)
        w.state = DONE

    def _set_state(self, w: Watcher, state: int) -> None:
        """Moves w, not in any group now, into state's group."""
        stream = w.stream
        old = w.state
        w.state = state
        if state == SYNCED:
            self.synced.add(w)
            if old != SYNCED:
                self._left_unsynced(stream)
        elif state == UNSYNCED:
            self.unsynced[w] = None
            if old == SYNCED:
                self.streams[stream].not_synced += 1
        else:
            raise AssertionError(f"bad state {state}")

    def _left_unsynced(self, stream: Outbox) -> None:
        record = self.streams.get(stream)
        if record is None:
            return  # the stream is gone
        record.not_synced -= 1
        if not record.not_synced and record.progress_pending:
            record.progress_pending = False
            stream.answer_progress()

    def request_progress(self, stream: Outbox) -> None:
        """A progress request on stream: answered now if every watcher of it is synced, else once they are."""
        record = self.streams[stream]
        if record.not_synced:
            record.progress_pending = True
        else:
            stream.answer_progress()

    def _make_victim(self, w: Watcher, resp: pb.WatchResponse, size: int) -> None:
        """w (in no group now) could not get resp: it keeps it for a retry."""
        stream = w.stream
        record = self.streams[stream]
        if w.state == SYNCED:
            record.not_synced += 1
        w.state = VICTIM
        w.pending = (resp, size)
        record.victims[w] = None
        stream.hold(size)  # may fail the stream (over its memory limit), which removes its watchers

    def _compacted(self, w: Watcher, compact_rev: int) -> None:
        """w (just taken out of unsynced) needs a compacted revision: canceled, as etcd does."""
        w.state = DONE
        stream = w.stream
        record = self.streams.get(stream)
        if record is not None:
            record.progress_watchers.pop(w, None)
        # header revision 0, as etcd sends it; queued before a progress answer it may release
        stream.push(pb.WatchResponse(watch_id=w.id, canceled=True, compact_revision=compact_rev))
        self._left_unsynced(stream)

    def kick(self, stream: Outbox) -> None:
        """stream has room again for its victims."""
        self._kicked[stream] = None
        self._work.set()

    # ---- live events ----

    def notify(self, changes: Changes) -> None:
        """Delivers the events of an applied batch to synced watchers (the applier's ChangeSink)."""
        synced = self.synced
        if not synced:
            return
        match = synced.match
        prev = None
        try:
            for rev, evs in changes:
                matched: dict[Watcher, list[EventRecord]] = {}
                for kind, kv in evs:
                    sets = match(kv.key)
                    if not sets:
                        continue
                    rec = None
                    for s in sets:
                        for w in s:
                            if w.min_rev > rev:
                                continue  # started in the future
                            if rec is None:
                                rec = EventRecord(rev, kind, kv)
                            got = matched.get(w)
                            if got is None:
                                matched[w] = [rec]
                            else:
                                got.append(rec)
                if not matched:
                    continue
                if prev is None:
                    prev = PrevReader(self.store)
                for w, recs in matched.items():
                    if w.state != SYNCED:
                        continue  # became a victim or was removed by an earlier delivery
                    resp, size = build_response(w, rev, recs, prev)
                    if resp is None:
                        continue
                    if w.stream.offer(resp, size, w.fragment):
                        w.progress_quiet = False
                    else:
                        synced.discard(w)
                        w.min_rev = rev + 1
                        self._make_victim(w, resp, size)
        finally:
            if prev is not None:
                prev.close()

    # ---- catching up ----

    def sync_step(self) -> bool:
        """One bounded catch-up step for the unsynced watchers furthest behind; False if there was none to do.

        Watchers whose stream's queue is full are left for later (their stream calls ``kick``
        once drained), so catch-up never reads ahead of a slow client.
        """
        unsynced = self.unsynced
        if not unsynced:
            return False
        store = self.store
        cur = store.current_rev
        compact = store.compact_main_rev
        lo = None
        ready: list[Watcher] = []
        for w in list(unsynced):
            if w.state != UNSYNCED:
                continue  # removed meanwhile (its stream failed)
            m = w.min_rev
            if m < compact:
                del unsynced[w]
                self._compacted(w, compact)
                continue
            stream = w.stream
            if not stream.has_room():
                stream.wait_for_room()
            elif m > cur:  # e.g. moved here by reset with nothing new to read
                del unsynced[w]
                self._set_state(w, SYNCED)
            else:
                ready.append(w)
                if lo is None or m < lo:
                    lo = m
        if lo is None:
            return False
        hi = min(lo + self.batch_revs, cur + 1)
        chosen: list[Watcher] = []
        group = WatcherGroup()
        limit = self.max_watchers_per_step
        for w in ready:
            if w.min_rev < hi:
                chosen.append(w)
                group.add(w)
                if len(chosen) >= limit:
                    break
        records, next_rev = read_events(store.backend, lo, hi, self.batch_bytes, group.contains)
        per_watcher: dict[Watcher, list[EventRecord]] = {}
        match = group.match
        for rec in records:
            rev = rec.rev
            for s in match(rec.kv.key):
                for w in s:
                    if rev >= w.min_rev:
                        got = per_watcher.get(w)
                        if got is None:
                            per_watcher[w] = [rec]
                        else:
                            got.append(rec)
        done = next_rev > cur
        header_rev = cur  # as etcd's catch-up does: the store's revision, even with more to read
        prev = PrevReader(store)
        try:
            for w in chosen:
                if w.state != UNSYNCED or w.min_rev >= next_rev:
                    continue  # removed meanwhile, or beyond what this step read
                stream = w.stream
                recs = per_watcher.get(w)
                if recs:
                    if not stream.has_room():
                        stream.wait_for_room()
                        continue  # filled up by this step: later, from the same revision
                    resp, size = build_response(w, header_rev, recs, prev)
                    if resp is not None:
                        stream.offer(resp, size, w.fragment)  # has room: accepted
                        w.progress_quiet = False
                w.min_rev = next_rev
                if done:
                    del unsynced[w]
                    self._set_state(w, SYNCED)
                else:  # to the back of the line
                    del unsynced[w]
                    unsynced[w] = None
        finally:
            prev.close()
        return True

    def retry_victims(self) -> None:
        """Offers again the held responses of victims whose streams have room."""
        kicked, self._kicked = self._kicked, {}
        cur = self.store.current_rev
        for stream in kicked:
            record = self.streams.get(stream)
            if record is None:
                continue  # closed meanwhile
            victims = record.victims
            while victims:
                w = next(iter(victims))
                if w.pending is None:
                    raise AssertionError(f"victim {w!r} holds no response")
                resp, size = w.pending
                if not stream.offer(resp, size, w.fragment):
                    break
                del victims[w]
                stream.hold(-size)
                w.pending = None
                w.progress_quiet = False
                if w.min_rev <= cur:  # still counted as not synced
                    w.state = UNSYNCED
                    self.unsynced[w] = None
                else:
                    self._set_state(w, SYNCED)
        if self.unsynced:
            self._work.set()

    async def _sync_loop(self) -> None:
        work = self._work
        while True:
            await work.wait()
            work.clear()
            while True:
                if self._kicked:
                    self.retry_victims()
                did = self.sync_step()
                if not did and not self._kicked:
                    break
                await asyncio.sleep(0)  # let applies and sends through between steps

    # ---- progress notifications ----

    def progress_tick(self, stream: Outbox) -> None:
        """etcd's per-stream progress ticker: a progress response to quiet synced progress_notify watchers."""
        rev = self.store.current_rev
        for w in list(self.streams[stream].progress_watchers):
            if w.progress_quiet and w.state == SYNCED:
                resp = pb.WatchResponse(watch_id=w.id)
                resp.header.revision = rev
                stream.offer(resp, 64, False)  # skipped when the stream is full, as in etcd
            w.progress_quiet = True

    def _next_progress(self, now: float) -> float:
        interval = self.progress_interval
        return now + interval + self._rng.random() * interval / 10

    async def _progress_loop(self) -> None:
        while True:
            now = self._clock()
            wake = now + self.progress_interval
            for stream, record in list(self.streams.items()):
                due = record.progress_due
                if due is None:
                    due = record.progress_due = self._next_progress(now)
                elif due <= now:
                    if record.progress_watchers:
                        self.progress_tick(stream)
                    due = record.progress_due = self._next_progress(now)
                wake = min(wake, due)
            await asyncio.sleep(max(wake - now, 0.001))
