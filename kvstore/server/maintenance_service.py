"""The etcd Maintenance service: Status and alarm queries (what etcdctl endpoint status/health use),
Snapshot, Hash and HashKV (thin wrappers of ``kvstore.snapshot.maintenance``).

With auth enabled, Snapshot, Hash, HashKV, Defragment and Downgrade are for admins (the root role) only, as
in etcd; Status and MoveLeader need no credentials, and Alarm refuses an invalid token."""

from __future__ import annotations

import itertools
import logging
import os

from frontend.grpc import GrpcError, ServerCall, StatusCode
from kvstore.server.credentials import needs_auth
from kvstore.server.member import VERSION, Member
from kvstore.server.rpc import unimplemented
from kvstore.snapshot.maintenance import hash_backend, hash_kv, make_snapshot, snapshot_chunks
from proto.etcdserverpb import rpc_pb2 as pb
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
            isLearner=getattr(member.log, "is_learner", False),
        )
        member.fill_header(resp.header)
        return resp

    async def _admin(self, call: ServerCall) -> None:
        member = self.member
        if needs_auth(member, call):
            member.auth.check_admin(await member.credentials.resolve(call))

    async def Alarm(self, request: pb.AlarmRequest, call: ServerCall) -> pb.AlarmResponse:
        if needs_auth(self.member, call):
            await self.member.credentials.resolve(call)
        if request.action != pb.AlarmRequest.GET:
            raise GrpcError(StatusCode.UNIMPLEMENTED, "raftkv: raising or clearing alarms is not implemented")
        return pb.AlarmResponse()  # no alarm is ever raised yet; etcd's answer to GET has no header

    _defragment = unimplemented("Maintenance", "Defragment")

    async def Defragment(self, request: pb.DefragmentRequest, call: ServerCall) -> pb.DefragmentResponse:
        await self._admin(call)
        return self._defragment(request, call)

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
        await transfer(request.targetID)
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
