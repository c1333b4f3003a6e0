"""In-process pieces for watch tests: a store fed through the real applier, and a Watch gRPC server.

``Node`` is a store without Raft: requests are encoded as log entries and applied by the real
``Applier``, whose change sink is the hub's ``notify`` (exactly what the member wires). ``FakeMember``
exposes what ``WatchService`` reads from a member. ``WatchServer`` runs the service on raftkv's front
end on 127.0.0.1:0, with nothing else behind it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from frontend.server import FrontendServer
from kvstore.apply import Applier, CompactResult, Op, encode_request
from kvstore.auth import AuthStore
from kvstore.config import ServerConfig
from kvstore.mvcc import Backend, KVStore
from kvstore.server.routes import serve
from kvstore.server.watch_service import WatchService
from kvstore.watch import WatchHub, WatchStream
from proto.etcdserverpb import rpc_pb2 as pb


class Node:
    def __init__(self, path: Path, **hub_options: object) -> None:
        self.path = path
        self.backend = Backend(path)
        self.store = KVStore(self.backend)
        self.hub = WatchHub(self.store, **hub_options)  # type: ignore[arg-type]
        self.history: list[tuple[int, list[tuple[int, object]]]] = []
        self.applier = Applier(self.store, on_changes=self._changes)
        self.index = self.applier.applied_index

    def _changes(self, changes: list) -> None:
        self.history.extend(changes)
        self.hub.notify(changes)

    def apply(self, op: Op, request: object) -> object:
        self.index += 1
        data = encode_request(op, self.index, request.SerializeToString())  # type: ignore[attr-defined]
        [(_, result)] = self.applier.apply([(self.index, 1, data)])
        return result

    def apply_many(self, requests: list[tuple[Op, object]]) -> list[object]:
        """Applies several requests as one batch (one on_changes call), as the member does."""
        entries = []
        for op, request in requests:
            self.index += 1
            entries.append((self.index, 1, encode_request(op, self.index, request.SerializeToString())))  # type: ignore[attr-defined]
        return [r for _, r in self.applier.apply(entries)]

    @property
    def rev(self) -> int:
        return self.store.current_rev

    def put(self, key: bytes, value: bytes = b"v", lease: int = 0) -> int:
        return self.apply(Op.PUT, pb.PutRequest(key=key, value=value)).header.revision  # type: ignore[attr-defined]

    def delete(self, key: bytes, range_end: bytes = b"") -> int:
        return self.apply(Op.DELETE_RANGE, pb.DeleteRangeRequest(key=key, range_end=range_end)).header.revision  # type: ignore[attr-defined]

    def txn(self, puts: list[tuple[bytes, bytes]], deletes: list[bytes] = ()) -> int:  # type: ignore[assignment]
        ops = [pb.RequestOp(request_put=pb.PutRequest(key=k, value=v)) for k, v in puts]
        ops += [pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=k)) for k in deletes]
        return self.apply(Op.TXN, pb.TxnRequest(success=ops)).header.revision  # type: ignore[attr-defined]

    def compact(self, rev: int, physical: bool = True) -> None:
        result = self.apply(Op.COMPACT, pb.CompactionRequest(revision=rev))
        assert isinstance(result, CompactResult), result
        if physical:
            while not self.store.compaction_step(result.job, batch=7):
                pass
            self.store.pending_compactions.remove(result.job)

    def catch_up(self, streams: list[WatchStream] = (), drain: bool = True) -> dict:  # type: ignore[assignment]
        """Runs catch-up and victim retries until quiet, draining streams; returns responses per stream."""
        out: dict[WatchStream, list[pb.WatchResponse]] = {s: [] for s in streams}
        hub = self.hub
        for _ in range(100_000):
            if drain:
                for s in streams:
                    out[s].extend(drain_stream(s))
            if not hub.unsynced and not hub._kicked:
                break
            hub.retry_victims()
            hub.sync_step()
        else:
            raise AssertionError("catch-up did not finish")
        return out

    def close(self) -> None:
        self.backend.close()


def drain_stream(stream: WatchStream, limit: int | None = None) -> list[pb.WatchResponse]:
    out = []
    while limit is None or len(out) < limit:
        item = stream.pop()
        if item is None:
            break
        out.append(item[0])
    return out


def create(stream: WatchStream, key: bytes, range_end: bytes = b"", start: int = 0, **kw: object) -> int:
    """Creates a watcher and returns its id (asserting it was created)."""
    w = stream.create(pb.WatchCreateRequest(key=key, range_end=range_end, start_revision=start, **kw))  # type: ignore[arg-type]
    assert w is not None
    return w.id


def events(responses: list[pb.WatchResponse], watch_id: int | None = None) -> list[tuple[int, int, bytes, bytes]]:
    """(mod_revision, type, key, value) of every event in responses (of one watch id if given)."""
    return [
        (e.kv.mod_revision, e.type, e.kv.key, e.kv.value)
        for r in responses
        if watch_id is None or r.watch_id == watch_id
        for e in r.events
    ]


# ---- a gRPC server around WatchService ----


@dataclass
class FakeLog:
    leader: int = 1
    term: int = 2


@dataclass
class FakeMember:
    store: KVStore
    watch_hub: WatchHub
    cfg: ServerConfig = field(default_factory=lambda: ServerConfig(election_timeout_ms=100, heartbeat_interval_ms=20))
    log: FakeLog = field(default_factory=FakeLog)
    cluster_id: int = 0xC1
    member_id: int = 0xA1
    auth: AuthStore | None = None  # auth off (made from the store's backend)

    def __post_init__(self) -> None:
        if self.auth is None:
            self.auth = AuthStore(self.store.backend)

    def fill_header(self, header: pb.ResponseHeader) -> None:
        header.cluster_id = self.cluster_id
        header.member_id = self.member_id
        header.raft_term = self.log.term
        if not header.revision:
            header.revision = self.store.current_rev


class WatchServer:
    service_type: type[WatchService] = WatchService

    def __init__(self, node: Node, **member_options: object) -> None:
        self.node = node
        self.member = FakeMember(node.store, node.hub, **member_options)  # type: ignore[arg-type]
        self.server: FrontendServer | None = None
        self.port = 0

    async def start(self) -> WatchServer:
        self.service = self.service_type(self.member)
        server = await serve({"Watch": self.service})
        self.port = server.ports[0]
        self.server = server
        self.node.hub.start()
        return self

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0)
        await self.node.hub.stop()
