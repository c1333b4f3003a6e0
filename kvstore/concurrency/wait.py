"""Waiting for the keys ahead of ours to go (etcd's ``waitDelete`` and ``waitDeletes``).

Repeatedly: find the last key under the prefix created at or before ``max_create_rev``; if there is
none, every earlier owner is gone and the header of that read is returned; else watch that key from
the read's revision until it is deleted. A watch canceled by compaction ends the wait with the
compaction error, as clientv3's watch channel does.
"""

from __future__ import annotations

from kvstore.concurrency.client import Client
from kvstore.concurrency.keys import last_created_before
from proto.etcdserverpb import rpc_pb2 as pb
from proto.mvccpb.kv_pb2 import Event


async def wait_delete(client: Client, key: bytes, rev: int) -> None:
    watch = client.watch(pb.WatchCreateRequest(key=key, start_revision=rev))
    try:
        while True:
            resp = await watch.next()
            if any(ev.type == Event.DELETE for ev in resp.events):
                return
    finally:
        watch.close()


async def wait_deletes(client: Client, prefix: bytes, max_create_rev: int) -> pb.ResponseHeader:
    while True:
        resp = await client.get(last_created_before(prefix, max_create_rev))
        if not resp.kvs:
            return resp.header
        await wait_delete(client, resp.kvs[0].key, resp.header.revision)
