"""Informers: list at R, watch from R+1 with prev_kv, resume after a broken stream, relist after
compaction (fake store), and the same relist against real raftkv and etcd members."""

from __future__ import annotations

import threading

import pytest

from controlplane.api import kinds
from controlplane.informer import Informer
from controlplane.store.base import Unavailable, WatchResponse
from controlplane.store.etcd import EtcdStore
from controlplane.store.fake import FakeStore
from tests.controlplane.fakes import Env, node
from tests.controlplane.harness import wait_for


class Recorder:
    def __init__(self, inf: Informer) -> None:
        self.events: list[tuple[str, str]] = []
        inf.add_handler(
            lambda o: self.events.append(("add", o["metadata"]["name"])),
            lambda old, new: self.events.append(("update", new["metadata"]["name"])),
            lambda o: self.events.append(("delete", o["metadata"]["name"])),
        )


class GatedWatch:
    """Wraps a store so the informer's first watch waits for a gate: the test writes and
    compacts in between, as if the watch had been cut and history compacted meanwhile."""

    def __init__(self, store: object) -> None:
        self.store = store
        self.gate = threading.Event()
        self.first = True

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)

    def watch(self, prefix: str, start_revision: int) -> object:
        if self.first:
            self.first = False
            self.gate.wait(30)
        return self.store.watch(prefix, start_revision)


def _relist_story(store: object, client_store: object) -> None:
    from controlplane.client import Client

    client = Client(client_store)
    client.create(node("keep"))
    client.create(node("gone"))
    gated = GatedWatch(store)
    inf = Informer(gated, kinds.NODE)  # type: ignore[arg-type]
    rec = Recorder(inf)
    stop = threading.Event()
    inf.start(stop)
    try:
        assert inf.synced.wait(60)
        assert sorted(inf.cache.keys()) == ["gone", "keep"]
        client.create(node("new"))
        client.delete(kinds.NODE, None, "gone")
        _, rev = client_store.list("/registry/")
        client_store.compact(rev)  # past the informer's R+1
        gated.gate.set()
        # (the cache changes before the relist is counted: wait for both)
        wait_for("the relist", lambda: sorted(inf.cache.keys()) == ["keep", "new"] and inf.relists == 2, timeout=60)
        assert ("add", "new") in rec.events and ("delete", "gone") in rec.events
        client.create(node("later"))  # and the new watch delivers
        wait_for("the watch after the relist", lambda: inf.cache.get("later") is not None, timeout=60)
    finally:
        inf.stop()
        stop.set()


def test_relist_after_compaction_fake():
    store = FakeStore()
    _relist_story(store, store)


@pytest.mark.integration
def test_relist_after_compaction_on_a_real_store(server):
    store = EtcdStore(server.endpoint)
    try:
        _relist_story(store, store)
    finally:
        store.close()


def test_watch_delivers_puts_and_deletes_with_the_last_state():
    env = Env()
    inf = env.inf(kinds.NODE)
    deleted = []
    inf.add_handler(on_delete=lambda o: deleted.append(o))
    stop = threading.Event()
    inf.start(stop)
    try:
        assert inf.synced.wait(60)
        env.create(node("a"))
        wait_for("add", lambda: inf.cache.get("a") is not None, timeout=60)
        env.client.delete(kinds.NODE, None, "a")
        wait_for("delete", lambda: deleted, timeout=60)
        assert deleted[0]["metadata"]["name"] == "a" and deleted[0]["status"]["allocatable"]["cpu"] == "2"
    finally:
        inf.stop()
        stop.set()


def test_resync_redelivers_every_object():
    env = Env()
    env.create(node("a"))
    inf = Informer(env.store, kinds.NODE, resync=0.05)
    rec = Recorder(inf)
    stop = threading.Event()
    inf.start(stop)
    try:
        wait_for("two resyncs", lambda: rec.events.count(("update", "a")) >= 2, timeout=60)
    finally:
        inf.stop()
        stop.set()


class CatchUpHeaders:
    """Wraps a store so the informer's first watch answers as etcd does while catching up from the
    past: one response with the first event only, its header at the store's (later) revision, and
    then the stream breaks. The informer must resume after that event, not after the header."""

    def __init__(self, store: FakeStore) -> None:
        self.store = store
        self.starts: list[int] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)

    def watch(self, prefix: str, start_revision: int) -> object:
        self.starts.append(start_revision)
        if len(self.starts) > 1:
            return self.store.watch(prefix, start_revision)
        inner = self.store.watch(prefix, start_revision)
        outer = self

        class Broken:
            def __iter__(self):  # type: ignore[no-untyped-def]
                first = next(iter(inner))
                inner.cancel()
                yield WatchResponse(outer.store.revision, first.events)  # the header runs ahead
                raise Unavailable("stream cut mid-catch-up")

            def cancel(self) -> None:
                inner.cancel()

        return Broken()


def test_a_watch_cut_mid_catch_up_resumes_after_the_last_event_not_the_header() -> None:
    from controlplane.client import Client

    fake = FakeStore()
    client = Client(fake)
    client.create(node("a"))
    wrapped = CatchUpHeaders(fake)
    inf = Informer(wrapped, kinds.NODE)  # type: ignore[arg-type]
    gate = threading.Event()
    original_list_once = inf.list_once

    def list_then_write() -> int:
        rev = original_list_once()
        client.create(node("b"))  # both written after the list: the watch catches up on them
        client.create(node("c"))
        gate.set()
        return rev

    inf.list_once = list_then_write  # type: ignore[method-assign]
    stop = threading.Event()
    inf.start(stop)
    try:
        assert gate.wait(60)
        wait_for("every node", lambda: sorted(inf.cache.keys()) == ["a", "b", "c"], timeout=60)
        assert wrapped.starts[1] == wrapped.starts[0] + 1  # after "b", the one event it got
    finally:
        inf.stop()
        stop.set()
