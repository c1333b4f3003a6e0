"""The etcd Maintenance service: Status (what etcdctl endpoint status/health use, with the alarms and
``etcdserver: no leader`` in its errors, as etcd's), Alarm (list, activate, deactivate, through the
log), Defragment (``Member.defragment``), Snapshot, Hash and HashKV (thin wrappers of
``kvstore.snapshot.maintenance``) and MoveLeader.

With auth enabled, Snapshot, Hash, HashKV, Defragment and Downgrade are for admins (the root role) only, as
in etcd; Status and MoveLeader need no credentials, and Alarm refuses an invalid token (etcd resolves the
caller of every request it proposes; its applier checks no permission for alarms)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os

from frontend.grpc import GrpcError, ServerCall, StatusCode
from kvstore.alarms import go_text
from kvstore.errors import NoLeader
from kvstore.server.credentials import needs_auth
from kvstore.server.member import VERSION, Member, etcd_error
from kvstore.server.rpc import unimplemented
from kvstore.snapshot.maintenance import hash_backend, hash_kv, make_snapshot, snapshot_chunks
from proto.etcdserverpb import rpc_pb2 as pb
from raft.errors import LogError
from raft.snapshot import remove_outgoing

log = logging.getLogger("raftkv.maintenance")
_snapshot_seq = itertools.count()


class MaintenanceService:
    def __init__(self, member: Member) -> None:
        self.member = member

    def Status(self, request: pb.StatusRequest, call: ServerCall) -> pb.StatusResponse:
        member = self.member
        backend = member.backend
        resp = pb.StatusResponse(
            version=VERSION,
            dbSize=backend.size(),
            dbSizeInUse=backend.size_in_use(),
            leader=member.log.leader,
            raftIndex=member.log.commit_index,
            raftTerm=member.log.term,
            raftAppliedIndex=member.applied_index,
            dbSizeQuota=member.cfg.quota_backend_bytes,
            isLearner=member.is_learner(),
        )
        if not resp.leader:
            resp.errors.append(NoLeader.message)
        resp.errors.extend(go_text(a) for a in member.applier.alarms.get())
        member.fill_header(resp.header)
        return resp

    async def _admin(self, call: ServerCall) -> None:
        member = self.member
        if needs_auth(member, call):
            member.auth.check_admin(await member.credentials.resolve(call))

    async def Alarm(self, request: pb.AlarmRequest, call: ServerCall) -> pb.AlarmResponse:
        if needs_auth(self.member, call):
            await self.member.credentials.resolve(call)
        # through the log for every action, as etcd; its answer carries no header
        return await self.member.alarm(request)

    async def Defragment(self, request: pb.DefragmentRequest, call: ServerCall) -> pb.DefragmentResponse:
        await self._admin(call)
        log.info("starting defragment")
        # a client that gives up does not stop it midway (etcd's goes on as well)
        await asyncio.shield(asyncio.ensure_future(self.member.defragment()))
        return pb.DefragmentResponse()  # etcd's carries no header

    async def Hash(self, request: pb.HashRequest, call: ServerCall) -> pb.HashResponse:
        await self._admin(call)
        h, revision = await hash_backend(self.member, VERSION)
        resp = pb.HashResponse(hash=h)
        resp.header.revision = revision
        self.member.fill_header(resp.header)
        return resp

    async def HashKV(self, request: pb.HashKVRequest, call: ServerCall) -> pb.HashKVResponse:
        await self._admin(call)
        h, current_rev, compact_rev = await hash_kv(self.member, request.revision)
        resp = pb.HashKVResponse(hash=h, compact_revision=compact_rev)
        resp.header.revision = current_rev
        self.member.fill_header(resp.header)
        return resp

    async def MoveLeader(self, request: pb.MoveLeaderRequest, call: ServerCall) -> pb.MoveLeaderResponse:
        member = self.member
        transfer = getattr(member.log, "transfer_leader", None)
        if transfer is None:
            raise GrpcError(StatusCode.UNIMPLEMENTED, "raftkv: this member's log cannot move leadership")
        try:
            await transfer(request.targetID)
        except LogError as exc:
            raise etcd_error(exc) from None
        resp = pb.MoveLeaderResponse()
        member.fill_header(resp.header)
        return resp

    _downgrade = unimplemented("Maintenance", "Downgrade")

    async def Downgrade(self, request: pb.DowngradeRequest, call: ServerCall) -> pb.DowngradeResponse:
        await self._admin(call)
        return self._downgrade(request, call)

    async def Snapshot(self, request: pb.SnapshotRequest, call: ServerCall) -> None:
        await self._admin(call)
        member = self.member
        folder = member.snapshot_dir() / f"outgoing-etcd-{os.getpid()}-{next(_snapshot_seq)}"
        path = folder / "db"
        try:
            folder.mkdir(parents=True)
            size = await make_snapshot(member, path, VERSION)
            log.info("sending database snapshot to client", extra={"total_bytes": size})
            for blob, remaining in snapshot_chunks(path):
                await call.write(pb.SnapshotResponse(remaining_bytes=remaining, blob=blob))
        except OSError as exc:
            log.warning("cannot send a snapshot", extra={"error": str(exc)})
            raise GrpcError(StatusCode.UNKNOWN, f"raftkv: cannot make a snapshot: {exc}") from None
        finally:
            remove_outgoing(path)
