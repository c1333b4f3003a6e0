"""The etcd KV service: Range, Put, DeleteRange, Txn and Compact."""

from __future__ import annotations

import grpc
from google.protobuf.message import Message

from kvstore.apply import CompactResult, Op
from kvstore.apply.kv import do_range, do_txn, is_txn_readonly, is_txn_serializable
from kvstore.config import GRPC_OVERHEAD_BYTES
from kvstore.errors import MessageTooLarge
from kvstore.server.member import Member
from kvstore.server.rpc import etcd_status
from kvstore.server.validate import check_delete, check_put, check_range, check_txn
from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc

Ctx = grpc.aio.ServicerContext


class KVService(rpc_pb2_grpc.KVServicer):
    def __init__(self, member: Member) -> None:
        self.member = member
        self.max_message = member.cfg.max_request_bytes + GRPC_OVERHEAD_BYTES

    def _check_message_size(self, request: Message) -> None:
        size = request.ByteSize()
        if size > self.max_message:
            raise MessageTooLarge(size, self.max_message)

    @etcd_status
    async def Range(self, request: pb.RangeRequest, context: Ctx) -> pb.RangeResponse:
        check_range(request)
        member = self.member
        if not request.serializable:
            await member.read_barrier()
        with member.store.read() as view:
            resp = do_range(view, request)
        member.fill_header(resp.header)
        return resp

    @etcd_status
    async def Put(self, request: pb.PutRequest, context: Ctx) -> pb.PutResponse:
        self._check_message_size(request)
        check_put(request)
        resp = await self.member.propose(Op.PUT, request.SerializeToString())
        self.member.fill_header(resp.header)  # type: ignore[attr-defined]
        return resp  # type: ignore[return-value]

    @etcd_status
    async def DeleteRange(self, request: pb.DeleteRangeRequest, context: Ctx) -> pb.DeleteRangeResponse:
        check_delete(request)
        resp = await self.member.propose(Op.DELETE_RANGE, request.SerializeToString())
        self.member.fill_header(resp.header)  # type: ignore[attr-defined]
        return resp  # type: ignore[return-value]

    @etcd_status
    async def Txn(self, request: pb.TxnRequest, context: Ctx) -> pb.TxnResponse:
        member = self.member
        self._check_message_size(request)
        check_txn(request, member.cfg.max_txn_ops)
        if is_txn_readonly(request):
            if not is_txn_serializable(request):
                await member.read_barrier()
            with member.store.read() as view:
                resp = do_txn(view, request, None, write=False)
        else:
            resp = await member.propose(Op.TXN, request.SerializeToString())  # type: ignore[assignment]
        member.fill_header(resp.header)
        return resp

    @etcd_status
    async def Compact(self, request: pb.CompactionRequest, context: Ctx) -> pb.CompactionResponse:
        member = self.member
        result = await member.propose(Op.COMPACT, request.SerializeToString())
        assert isinstance(result, CompactResult)
        if request.physical:
            await member.wait_compaction(result.job)
        resp = result.response
        resp.header.revision = member.store.current_rev
        member.fill_header(resp.header)
        return resp
