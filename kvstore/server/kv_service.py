"""The etcd KV service: Range, Put, DeleteRange, Txn and Compact, as handlers of decoded requests.

A serializable read is answered synchronously (no task, no await); linearizable reads wait for the
read index and writes for their entry to be applied, as coroutines. The receive limit (etcd's
--max-request-bytes plus gRPC's allowance) is enforced by the front end before decoding. Puts and
txns that would pass the backend quota are refused first (``Member.check_quota``).

Auth: writes carry the caller's identity into the log, where the applier checks them; reads are
checked here, after the read barrier, and answered only if the auth revision did not move while
they were served (etcd's ``doSerialize``). With auth off and no token, none of it costs anything.
"""

from __future__ import annotations

from collections.abc import Awaitable

from frontend.grpc import ServerCall
from kvstore.apply import CompactResult, Op, response_as
from kvstore.apply.kv import do_range, do_txn, is_txn_readonly, is_txn_serializable
from kvstore.auth import AuthInfo
from kvstore.errors import AuthOldRevision
from kvstore.server.credentials import NO_USER, needs_auth
from kvstore.server.member import Member
from kvstore.server.validate import check_delete, check_put, check_range, check_txn
from proto.etcdserverpb import rpc_pb2 as pb


class KVService:
    def __init__(self, member: Member) -> None:
        self.member = member

    def _range_now(self, request: pb.RangeRequest) -> pb.RangeResponse:
        member = self.member
        with member.store.read() as view:
            resp = do_range(view, request)
        member.fill_header(resp.header)
        return resp

    async def _range_linearizable(self, request: pb.RangeRequest) -> pb.RangeResponse:
        await self.member.read_barrier()
        return self._range_now(request)

    async def _range_checked(self, request: pb.RangeRequest, call: ServerCall) -> pb.RangeResponse:
        member = self.member
        if not request.serializable:
            await member.read_barrier()
        ai = await member.credentials.resolve(call)
        member.auth.check_range(ai, request.key, request.range_end)
        resp = self._range_now(request)
        _still_current(member, ai)
        return resp

    def Range(self, request: pb.RangeRequest, call: ServerCall) -> pb.RangeResponse | Awaitable[pb.RangeResponse]:
        check_range(request)
        if needs_auth(self.member, call):
            return self._range_checked(request, call)
        if request.serializable:
            return self._range_now(request)
        return self._range_linearizable(request)

    async def _cred(self, call: ServerCall) -> tuple[str, int]:
        member = self.member
        return await member.credentials.for_log(call) if needs_auth(member, call) else NO_USER

    async def Put(self, request: pb.PutRequest, call: ServerCall) -> pb.PutResponse:
        if not self.member.quota.available(request):  # before anything else, as etcd's quotaKVServer
            await self.member.check_quota(request)
        check_put(request)
        resp = response_as(
            await self.member.propose(Op.PUT, request.SerializeToString(), await self._cred(call)), pb.PutResponse
        )
        self.member.fill_header(resp.header)
        return resp

    async def DeleteRange(self, request: pb.DeleteRangeRequest, call: ServerCall) -> pb.DeleteRangeResponse:
        check_delete(request)
        resp = response_as(
            await self.member.propose(Op.DELETE_RANGE, request.SerializeToString(), await self._cred(call)),
            pb.DeleteRangeResponse,
        )
        self.member.fill_header(resp.header)
        return resp

    def _txn_read(self, request: pb.TxnRequest) -> pb.TxnResponse:
        member = self.member
        with member.store.read() as view:
            resp = do_txn(view, request, None, write=False)
        member.fill_header(resp.header)
        return resp

    async def _txn_linearizable(self, request: pb.TxnRequest) -> pb.TxnResponse:
        await self.member.read_barrier()
        return self._txn_read(request)

    async def _txn_write(self, request: pb.TxnRequest, call: ServerCall) -> pb.TxnResponse:
        member = self.member
        resp = response_as(
            await member.propose(Op.TXN, request.SerializeToString(), await self._cred(call)), pb.TxnResponse
        )
        member.fill_header(resp.header)
        return resp

    async def _txn_read_checked(self, request: pb.TxnRequest, call: ServerCall) -> pb.TxnResponse:
        member = self.member
        if not is_txn_serializable(request):
            await member.read_barrier()
        ai = await member.credentials.resolve(call)
        member.auth.check_txn(ai, request)
        resp = self._txn_read(request)
        _still_current(member, ai)
        return resp

    def Txn(self, request: pb.TxnRequest, call: ServerCall) -> pb.TxnResponse | Awaitable[pb.TxnResponse]:
        if not self.member.quota.available(request):
            return self.member.check_quota(request)  # raises the NOSPACE alarm, then NoSpace
        check_txn(request, self.member.cfg.max_txn_ops)
        if not is_txn_readonly(request):
            return self._txn_write(request, call)
        if needs_auth(self.member, call):
            return self._txn_read_checked(request, call)
        if is_txn_serializable(request):
            return self._txn_read(request)
        return self._txn_linearizable(request)

    async def Compact(self, request: pb.CompactionRequest, call: ServerCall) -> pb.CompactionResponse:
        member = self.member
        result = await member.propose(Op.COMPACT, request.SerializeToString(), await self._cred(call))
        assert isinstance(result, CompactResult)
        if request.physical:
            await member.wait_compaction(result.job)
        resp = result.response
        resp.header.revision = member.store.current_rev
        member.fill_header(resp.header)
        return resp


def _still_current(member: Member, ai: AuthInfo | None) -> None:
    """A read served while the auth store changed is refused, as etcd refuses it."""
    if ai is not None and ai.revision and ai.revision != member.auth.revision:
        raise AuthOldRevision()
