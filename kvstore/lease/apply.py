"""Applying the lease requests of the log: grant, revoke and checkpoint (etcd's applierV3 lease methods).

The applier calls these with the lessor, the ``WriteTxn`` of the entry's store revision and the
entry's body (the serialized etcd request). They are deterministic: the outcome depends only on
the lessor's replicated state and the request, never on a clock, so every member answers alike.
A lease error (``kvstore.lease.errors``: not found, exists, TTL too large) is raised before anything
changes, which the applier turns into the request's result (etcd's error for it).

- grant: the id is already chosen (the proposing member picks one before proposing when the
  client gave 0), the TTL is raised to the minimum; the response carries the granted TTL.
- revoke: every attached key is deleted in one store revision, then the lease is removed, in
  the same backend transaction. Watchers see the DELETE events of that one revision.
- checkpoint: records remaining TTLs; ids unknown by now (revoked meanwhile) are skipped.
"""

from __future__ import annotations

from kvstore.lease.lessor import Lessor
from kvstore.mvcc.store import WriteTxn
from proto.etcdserverpb import rpc_pb2 as pb


def apply_lease_grant(lessor: Lessor, w: WriteTxn, body: bytes) -> pb.LeaseGrantResponse:
    req = pb.LeaseGrantRequest.FromString(body)
    lease = lessor.grant(w.txn, req.ID, req.TTL)
    resp = pb.LeaseGrantResponse(ID=lease.id, TTL=lease.ttl)
    resp.header.revision = w.rev()
    return resp


def apply_lease_revoke(lessor: Lessor, w: WriteTxn, body: bytes) -> pb.LeaseRevokeResponse:
    req = pb.LeaseRevokeRequest.FromString(body)
    lessor.revoke(w, req.ID)
    resp = pb.LeaseRevokeResponse()
    resp.header.revision = w.rev()  # the revision that deleted the keys, once the applier ends w
    return resp


def apply_lease_checkpoint(lessor: Lessor, w: WriteTxn, body: bytes) -> pb.LeaseCheckpointResponse:
    req = pb.LeaseCheckpointRequest.FromString(body)
    for cp in req.checkpoints:
        lessor.checkpoint(w.txn, cp.ID, cp.remaining_TTL)
    resp = pb.LeaseCheckpointResponse()
    resp.header.revision = w.rev()
    return resp
