"""What the recipes need from a client: etcd's KV, lease and watch calls, nothing more.

Errors are raised as the client hands them on (``kvstore.errors.Relayed``: the server's message
with gRPC code Unknown, as etcd's in-process client does). ``background`` runs the clean-up of a
call whose caller went away (a cancelled handler cannot wait for it).
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, Protocol

from proto.etcdserverpb import rpc_pb2 as pb


class Watch(Protocol):
    async def next(self) -> pb.WatchResponse:
        """The next response with events (headers filled); raises when the watch is canceled
        (compaction: ``etcdserver: mvcc: required revision has been compacted``)."""
        ...

    def close(self) -> None: ...


class Client(Protocol):
    async def txn(self, request: pb.TxnRequest) -> pb.TxnResponse: ...

    async def get(self, request: pb.RangeRequest) -> pb.RangeResponse:
        """A linearizable Range (clientv3's default)."""
        ...

    async def delete(self, key: bytes) -> pb.DeleteRangeResponse: ...

    async def grant(self, ttl: int) -> int:
        """A new lease's id."""
        ...

    def watch(self, request: pb.WatchCreateRequest) -> Watch: ...

    def background(self, coro: Coroutine[Any, Any, Any]) -> None: ...
