"""Informers: a local cache of one kind kept current by list + watch, with event handlers.

The loop is client-go's reflector: list every object at revision R (one consistent Range),
watch from R+1 with prev_kv, apply each event to the cache and call the handlers; when the
watch breaks, resume from the last revision seen on the next endpoint; when the store says
that revision was compacted, list again (the cache is replaced and the differences are
delivered as add/update/delete). A periodic resync re-delivers every cached object as an
update, so level-triggered controllers converge even if a handler was missed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from controlplane.api import kinds
from controlplane.api.meta import Obj, key_of, labels, namespace, selector_matches
from controlplane.client import decode
from controlplane.clock import REAL_CLOCK, Clock
from controlplane.store.base import Compacted, Store, StoreError, WatchStream

log = logging.getLogger("controlplane.informer")

AddFn = Callable[[Obj], None]
UpdateFn = Callable[[Obj, Obj], None]
DeleteFn = Callable[[Obj], None]


class Cache:
    """Thread-safe objects by key (``namespace/name`` or ``name``); what listers read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, Obj] = {}

    def get(self, key: str) -> Obj | None:
        with self._lock:
            return self._items.get(key)

    def get_by(self, ns: str | None, name: str) -> Obj | None:
        return self.get(f"{ns}/{name}" if ns else name)

    def list(self, ns: str | None = None, selector: Obj | None = None) -> list[Obj]:
        with self._lock:
            items = list(self._items.values())
        return [
            o
            for o in items
            if (ns is None or namespace(o) == ns) and (selector is None or selector_matches(selector, labels(o)))
        ]

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._items)

    def add(self, obj: Obj) -> Obj | None:
        with self._lock:
            old = self._items.get(key_of(obj))
            self._items[key_of(obj)] = obj
            return old

    def delete(self, key: str) -> Obj | None:
        with self._lock:
            return self._items.pop(key, None)


class Informer:
    def __init__(self, store: Store, kind: kinds.Kind, clock: Clock = REAL_CLOCK, resync: float = 0.0) -> None:
        self.store = store
        self.kind = kind
        self.clock = clock
        self.resync = resync
        self.cache = Cache()
        self.synced = threading.Event()
        self.revision = 0
        self.relists = 0  # how many times the informer listed (1 + relists after compaction)
        self._handlers: list[tuple[AddFn | None, UpdateFn | None, DeleteFn | None]] = []
        self._stream: WatchStream | None = None
        self._stop = threading.Event()

    def add_handler(
        self, on_add: AddFn | None = None, on_update: UpdateFn | None = None, on_delete: DeleteFn | None = None
    ) -> None:
        self._handlers.append((on_add, on_update, on_delete))

    # ---- delivery ----

    def _deliver(self, what: str, *objs: Obj) -> None:
        for add, update, delete in self._handlers:
            fn = {"add": add, "update": update, "delete": delete}[what]
            if fn is None:
                continue
            try:
                fn(*objs)  # type: ignore[operator]
            except Exception:
                log.exception("%s handler for %s failed", what, self.kind.resource)

    def _upsert(self, obj: Obj) -> None:
        old = self.cache.add(obj)
        if old is None:
            self._deliver("add", obj)
        else:
            self._deliver("update", old, obj)

    def _remove(self, key: str, last: Obj | None) -> None:
        old = self.cache.delete(key)
        if old is not None or last is not None:
            self._deliver("delete", last or old)  # type: ignore[arg-type]

    # ---- the reflector ----

    def list_once(self) -> int:
        """Lists at revision R, replaces the cache (delivering the differences); returns R."""
        kvs, rev = self.store.list(self.kind.prefix())
        seen = set()
        for kv in kvs:
            obj = decode(kv)
            k = key_of(obj)
            seen.add(k)
            old = self.cache.get(k)
            if old is None or old["metadata"].get("resourceVersion") != obj["metadata"]["resourceVersion"]:
                self._upsert(obj)
        for k in set(self.cache.keys()) - seen:
            self._remove(k, None)
        self.revision = rev
        self.relists += 1
        self.synced.set()
        return rev

    def _watch_once(self) -> None:
        """Watches from self.revision + 1 until the stream ends (raises) or stop."""
        stream = self.store.watch(self.kind.prefix(), self.revision + 1)
        self._stream = stream
        if self._stop.is_set():
            stream.cancel()
            return
        for resp in stream:
            for ev in resp.events:
                if ev.type == "PUT":
                    self._upsert(decode(ev.kv))
                else:
                    last = decode(ev.prev) if ev.prev is not None and ev.prev.value else None
                    _, ns, name = kinds.parse_key(ev.kv.key)
                    self._remove(f"{ns}/{name}" if ns else name, last)
            # Resume after the last event seen. A response's header revision is the store's, which
            # during a catch-up from the past is ahead of its events (etcd's too): only a progress
            # notification (no events) says that everything up to it has been delivered.
            seen = resp.events[-1].kv.mod_revision if resp.events else resp.revision
            self.revision = max(self.revision, seen)

    def run(self, stop: threading.Event) -> None:
        self._stop = stop
        backoff = 0.05
        need_list = True
        while not stop.is_set():
            try:
                if need_list:
                    self.list_once()
                    need_list = False
                self._watch_once()
                backoff = 0.05
            except Compacted as exc:
                log.info("%s watch from %d: %s; listing again", self.kind.resource, self.revision + 1, exc)
                need_list = True
            except StoreError as exc:
                if stop.is_set():
                    break
                log.info("%s watch interrupted (%s); resuming from %d", self.kind.resource, exc, self.revision + 1)
                self.clock.wait(stop, backoff)
                backoff = min(backoff * 2, 2.0)
            except Exception:
                log.exception("%s informer failed; listing again", self.kind.resource)
                need_list = True
                self.clock.wait(stop, backoff)
                backoff = min(backoff * 2, 2.0)

    def _resync_loop(self, stop: threading.Event) -> None:
        while not self.clock.wait(stop, self.resync):
            for obj in self.cache.list():
                self._deliver("update", obj, obj)

    def start(self, stop: threading.Event) -> list[threading.Thread]:
        threads = [threading.Thread(target=self.run, args=(stop,), name=f"informer-{self.kind.resource}", daemon=True)]
        if self.resync > 0:
            threads.append(
                threading.Thread(
                    target=self._resync_loop, args=(stop,), name=f"resync-{self.kind.resource}", daemon=True
                )
            )
        for t in threads:
            t.start()
        return threads

    def stop(self) -> None:
        self._stop.set()
        if self._stream is not None:
            self._stream.cancel()


class InformerFactory:
    """One shared informer per kind for every controller of a process, as client-go's factory."""

    def __init__(self, store: Store, clock: Clock = REAL_CLOCK, resync: float = 0.0) -> None:
        self.store, self.clock, self.resync = store, clock, resync
        self.informers: dict[str, Informer] = {}
        self._threads: list[threading.Thread] = []

    def informer(self, kind: kinds.Kind) -> Informer:
        if kind.kind not in self.informers:
            self.informers[kind.kind] = Informer(self.store, kind, self.clock, self.resync)
        return self.informers[kind.kind]

    def start(self, stop: threading.Event) -> None:
        for inf in self.informers.values():
            if not inf.synced.is_set() and not any(t.name == f"informer-{inf.kind.resource}" for t in self._threads):
                self._threads += inf.start(stop)

    def wait_for_sync(self, stop: threading.Event, timeout: float = 60.0) -> bool:
        for inf in self.informers.values():
            deadline = self.clock.monotonic() + timeout
            while not inf.synced.wait(0.05):
                if stop.is_set() or self.clock.monotonic() > deadline:
                    return False
        return True

    def stop(self) -> None:
        for inf in self.informers.values():
            inf.stop()
