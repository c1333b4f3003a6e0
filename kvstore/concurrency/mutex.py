"""etcd 3.5's ``concurrency.Mutex``: Lock and Unlock on a lock name, the Lock service's recipe.

Lock: one Txn creates ``<name>/<lease hex>`` under the lease unless it exists (a second Lock with
the same lease is the same acquisition) and reads the first-created key under ``<name>/``. If that
is ours, the lock is held (the Txn's header is answered). Otherwise wait until every key created
before ours is deleted, then read our key: if it is gone (the lease expired or was revoked while
waiting) the answer is ``mutex: session is expired`` (etcd 3.5; 3.4 answered success with the key
gone), else the lock is held and that read's header is answered. If the wait fails, or the caller
goes away meanwhile, our key is deleted (etcd's ``m.Unlock(client.Ctx())``), in the background when
the caller is gone. Unlock deletes the given key, whoever holds it.
"""

from __future__ import annotations

import asyncio

from kvstore.concurrency.client import Client
from kvstore.concurrency.keys import first_created, if_created, op_get, op_put, owner_key
from kvstore.concurrency.wait import wait_deletes
from kvstore.errors import SessionExpired
from proto.etcdserverpb import rpc_pb2 as pb


async def lock(client: Client, name: bytes, lease: int) -> tuple[bytes, pb.ResponseHeader]:
    """(our key, the header to answer) once the lock is held."""
    prefix = name + b"/"
    key = owner_key(prefix, lease)
    owner = op_get(first_created(prefix))
    resp = await client.txn(
        pb.TxnRequest(
            compare=[if_created(key, 0)],
            success=[op_put(key, b"", lease), owner],
            failure=[op_get(pb.RangeRequest(key=key)), owner],
        )
    )
    my_rev = resp.header.revision if resp.succeeded else resp.responses[0].response_range.kvs[0].create_revision
    holder = resp.responses[1].response_range.kvs
    if not holder or holder[0].create_revision == my_rev:
        return key, resp.header
    try:
        await wait_deletes(client, prefix, my_rev - 1)
        mine = await client.get(pb.RangeRequest(key=key))
    except asyncio.CancelledError:
        client.background(unlock(client, key))
        raise
    except Exception:
        await unlock(client, key)
        raise
    if not mine.kvs:
        raise SessionExpired()
    return key, mine.header


async def unlock(client: Client, key: bytes) -> pb.DeleteRangeResponse:
    return await client.delete(key)
