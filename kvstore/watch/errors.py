"""What a watch client is told when a watcher or a whole watch stream is refused or canceled.

The cancel reasons are etcd's exact strings (clients compare them); they travel in
``WatchResponse.cancel_reason``, not as gRPC statuses, so they are not ``EtcdError`` types.
``SlowConsumer`` is raftkv's own: etcd has no limit on what a stream that is not read may hold
back; raftkv ends such a stream with this status once its limit is passed.
"""

from __future__ import annotations

import grpc

from kvstore.errors import EtcdError

# etcd 3.4 mvcc/watcher.go
EMPTY_RANGE = "mvcc: watcher range is empty"
DUPLICATE_ID = "mvcc: duplicate watch ID provided on the WatchStream"


class SlowConsumer(EtcdError):
    """The stream's client stopped reading and its pending responses passed the stream's memory limit."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    message = "raftkv: watch stream canceled: the client does not read its events (pending bytes over the limit)"
