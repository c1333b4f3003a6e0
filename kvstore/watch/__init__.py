"""Watch: etcd's watchers over the MVCC store, fed by the applier, served by the Watch gRPC service.

Modules: ``hub`` (the synced, unsynced and victim watchers, catch-up and progress loops),
``stream`` (one client stream's watchers and send queue, no I/O), ``group`` (which watchers want a
key), ``history`` (past events read back from the backend), ``watcher`` (a watcher, an event
encoded once, prev_kv), ``errors`` (cancel reasons and the slow-consumer status).

Wiring (the member): ``hub = WatchHub(store)``; the applier's ``on_changes`` is ``hub.notify``;
``hub.reset(new_store)`` after a snapshot install; ``hub.start()`` / ``await hub.stop()`` with the
member; ``kvstore.server.watch_service.WatchService(member)`` serves it, as ``member.watch_hub``.
"""

from kvstore.errors import WatchSlowConsumer as SlowConsumer
from kvstore.watch.hub import WatchHub
from kvstore.watch.stream import WatchStream
from kvstore.watch.watcher import Watcher

__all__ = ["SlowConsumer", "WatchHub", "WatchStream", "Watcher"]
