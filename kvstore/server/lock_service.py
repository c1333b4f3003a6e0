"""The etcd Lock service (``v3lockpb.Lock``): Lock and Unlock, as etcd serves them.

Lock runs etcd's Mutex recipe (``kvstore.concurrency.mutex``) for the caller's lease (0: a fresh
lease of 60 s, ``kvstore.concurrency.session``) through the member's in-process client, so a lock
is nothing but keys, leases and watches: it is released when its key is deleted (Unlock, or the
lease expiring or being revoked), and waiters learn of it by watching. Unlock deletes the key it is
given (any key: etcd does not check ownership). Errors of the requests made on the caller's behalf
reach it as etcd's do: their message with gRPC code Unknown. Every request runs with the caller's
credentials (``LocalClient.for_call``), so with auth on the caller needs permission on the lock's keys.
"""

from __future__ import annotations

from frontend.grpc import ServerCall
from kvstore.concurrency import mutex
from kvstore.concurrency.session import session_lease
from kvstore.server.local_client import LocalClient
from proto.v3lockpb import v3lock_pb2 as lockpb


class LockService:
    def __init__(self, client: LocalClient) -> None:
        self.client = client

    async def Lock(self, request: lockpb.LockRequest, call: ServerCall) -> lockpb.LockResponse:
        client = self.client.for_call(call)  # the caller's identity, as etcd's v3lock passes its context
        lease = await session_lease(client, request.lease)
        key, header = await mutex.lock(client, request.name, lease)
        return lockpb.LockResponse(header=header, key=key)

    async def Unlock(self, request: lockpb.UnlockRequest, call: ServerCall) -> lockpb.UnlockResponse:
        resp = await mutex.unlock(self.client.for_call(call), request.key)
        return lockpb.UnlockResponse(header=resp.header)
