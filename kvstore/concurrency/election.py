"""etcd's ``concurrency.Election``: the Election service's recipe.

- Campaign: one Txn creates ``<name>/<lease hex>`` with the value under the lease unless it exists
  (campaigning again with the same lease resumes, proclaiming the new value if it differs). Then
  wait until every key created before ours is deleted: we lead. The answer carries the Txn's
  header and the leader key (name, key, create revision, lease). A caller that goes away while
  waiting resigns (in the background); a failed wait does not.
- Proclaim: put the value on the leader key if its create revision is still the one we won with,
  else ``election: not leader``.
- Resign: delete the leader key if its create revision is still ours (answered either way).
- Leader: the first-created key under ``<name>/``, else ``election: no leader``.
- Observe: the current leader's key-value, then every change to it, until it is deleted; then the
  next leader, and so on. With no leader, it waits for the first put under the prefix. It ends
  (without error, as etcd's stream does) when a read or watch fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from kvstore.concurrency.client import Client
from kvstore.concurrency.keys import first_created, if_created, op_delete, op_get, op_put, owner_key, prefix_end
from kvstore.concurrency.wait import wait_deletes
from kvstore.errors import ElectionNoLeader, ElectionNotLeader, EtcdError
from proto.etcdserverpb import rpc_pb2 as pb
from proto.mvccpb.kv_pb2 import Event, KeyValue


@dataclass
class Leadership:
    """What a campaign won (etcd's LeaderKey, with the name as the service's caller gave it)."""

    key: bytes
    rev: int
    lease: int


async def campaign(client: Client, name: bytes, lease: int, value: bytes) -> tuple[Leadership, pb.ResponseHeader]:
    prefix = name + b"/"
    key = owner_key(prefix, lease)
    resp = await client.txn(
        pb.TxnRequest(
            compare=[if_created(key, 0)],
            success=[op_put(key, value, lease)],
            failure=[op_get(pb.RangeRequest(key=key))],
        )
    )
    won = Leadership(key, resp.header.revision, lease)
    if not resp.succeeded:
        kv = resp.responses[0].response_range.kvs[0]
        won.rev = kv.create_revision
        if kv.value != value:
            try:
                await proclaim(client, won, value)
            except EtcdError:
                await resign(client, won)
                raise
    try:
        await wait_deletes(client, prefix, won.rev - 1)
    except asyncio.CancelledError:
        client.background(resign(client, won))
        raise
    return won, resp.header


async def proclaim(client: Client, won: Leadership, value: bytes) -> pb.ResponseHeader:
    resp = await client.txn(
        pb.TxnRequest(compare=[if_created(won.key, won.rev)], success=[op_put(won.key, value, won.lease)])
    )
    if not resp.succeeded:
        raise ElectionNotLeader()
    return resp.header


async def resign(client: Client, won: Leadership) -> pb.ResponseHeader:
    resp = await client.txn(pb.TxnRequest(compare=[if_created(won.key, won.rev)], success=[op_delete(won.key)]))
    return resp.header


async def leader(client: Client, name: bytes) -> tuple[pb.ResponseHeader, KeyValue]:
    resp = await client.get(first_created(name + b"/"))
    if not resp.kvs:
        raise ElectionNoLeader()
    return resp.header, resp.kvs[0]


async def observe(client: Client, name: bytes) -> AsyncIterator[tuple[pb.ResponseHeader, KeyValue]]:
    prefix = name + b"/"
    try:
        while True:
            resp = await client.get(first_created(prefix))
            if resp.kvs:
                header, kv = resp.header, resp.kvs[0]
            else:
                header, kv = await _first_put(client, prefix, resp.header.revision)
            yield header, kv
            watch = client.watch(pb.WatchCreateRequest(key=kv.key, start_revision=header.revision + 1))
            try:
                deleted = False
                while not deleted:
                    wresp = await watch.next()
                    for ev in wresp.events:
                        if ev.type == Event.DELETE:
                            deleted = True
                            break
                        yield wresp.header, ev.kv
            finally:
                watch.close()
    except EtcdError:
        return


async def _first_put(client: Client, prefix: bytes, rev: int) -> tuple[pb.ResponseHeader, KeyValue]:
    """The first key put under prefix from rev on (a delete is skipped), with the header's revision set to
    that put's, as etcd's observe does."""
    watch = client.watch(pb.WatchCreateRequest(key=prefix, range_end=prefix_end(prefix), start_revision=rev))
    try:
        while True:
            wresp = await watch.next()
            for ev in wresp.events:
                if ev.type == Event.PUT:
                    header = pb.ResponseHeader()
                    header.CopyFrom(wresp.header)
                    header.revision = ev.kv.mod_revision
                    return header, ev.kv
    finally:
        watch.close()
