"""Real clients against the front end on 127.0.0.1: grpcio's C core, Go's gRPC (etcdctl), nghttp2's
``nghttp`` and ``h2load``, raw HTTP/1.1, and the idle and keepalive timers on real sockets."""

from __future__ import annotations

import asyncio
import struct

import grpc
import hpack
import pytest

from frontend.grpc import Kind, Method, ServerCall
from frontend.http2 import PREFACE
from frontend.protocol import FrontendConfig
from frontend.server import FrontendServer
from kvstore.errors import EmptyKey
from kvstore.server.rpc import error_status
from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc
from proto.mvccpb import kv_pb2
from tests.frontend.peer import frame, parse, settings


class FakeKV:
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.rev = 1

    def header(self) -> pb.ResponseHeader:
        return pb.ResponseHeader(cluster_id=1, member_id=2, revision=self.rev, raft_term=3)

    def Range(self, request: pb.RangeRequest, call: ServerCall) -> pb.RangeResponse:
        if not request.key:
            raise EmptyKey()
        kvs = [kv_pb2.KeyValue(key=request.key, value=self.data[request.key])] if request.key in self.data else []
        return pb.RangeResponse(header=self.header(), kvs=kvs, count=len(kvs))

    async def Put(self, request: pb.PutRequest, call: ServerCall) -> pb.PutResponse:
        await asyncio.sleep(0)
        self.data[request.key] = request.value
        self.rev += 1
        return pb.PutResponse(header=self.header())

    async def Watch(self, call: ServerCall) -> None:
        async for req in call:
            await call.write(pb.WatchResponse(header=self.header(), watch_id=req.create_request.watch_id, created=True))


async def start(config: FrontendConfig | None = None) -> tuple[FrontendServer, FakeKV]:
    kv = FakeKV()
    methods = {
        "/etcdserverpb.KV/Range": Method(Kind.UNARY, kv.Range, pb.RangeRequest.FromString),
        "/etcdserverpb.KV/Put": Method(Kind.UNARY, kv.Put, pb.PutRequest.FromString),
        "/etcdserverpb.Watch/Watch": Method(Kind.BIDI, kv.Watch, pb.WatchRequest.FromString),
    }
    server = FrontendServer(methods, config, error_status=error_status)
    await server.listen("127.0.0.1", 0)
    return server, kv


async def run(*argv: str, stdin: bytes | None = None) -> tuple[int, str]:
    """Runs a client tool (etcdctl, nghttp, h2load: scripts/test installs them; a missing one fails)."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(stdin), 60)
    return proc.returncode or 0, out.decode(errors="replace")


async def test_grpcio_client_unary_errors_and_bidi() -> None:
    server, _ = await start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.ports[0]}") as channel:
            kv = rpc_pb2_grpc.KVStub(channel)
            await kv.Put(pb.PutRequest(key=b"k", value=b"v"), timeout=10)
            for _ in range(20):  # repeated blocks come from the header cache
                resp = await kv.Range(pb.RangeRequest(key=b"k"), timeout=10)
                assert resp.kvs[0].value == b"v" and resp.header.revision == 2
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await kv.Range(pb.RangeRequest(), timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert err.value.details() == "etcdserver: key is not provided"
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await kv.Txn(pb.TxnRequest(), timeout=10)
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
            watch = rpc_pb2_grpc.WatchStub(channel).Watch()
            for i in range(1, 4):
                await watch.write(pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"k", watch_id=i)))
                assert (await watch.read()).watch_id == i
            await watch.done_writing()
            assert await watch.code() == grpc.StatusCode.OK
            big = b"x" * (3 << 20)  # under the 4 MiB limit, over many flow-control windows
            await kv.Put(pb.PutRequest(key=b"big", value=big), timeout=30)
            assert (await kv.Range(pb.RangeRequest(key=b"big"), timeout=30)).kvs[0].value == big
    finally:
        await server.stop(1)


async def test_etcdctl_go_grpc_client() -> None:
    server, kv = await start()
    endpoint = f"--endpoints=127.0.0.1:{server.ports[0]}"
    try:
        code, out = await run("etcdctl", endpoint, "put", "greeting", "hello")
        assert (code, out.strip()) == (0, "OK")
        code, out = await run("etcdctl", endpoint, "get", "greeting")
        assert (code, out.split()) == (0, ["greeting", "hello"])
        code, out = await run("etcdctl", endpoint, "get", "")
        assert code != 0 and "etcdserver: key is not provided" in out
        assert kv.data == {b"greeting": b"hello"}
    finally:
        await server.stop(1)


def grpc_body(request: pb.RangeRequest) -> bytes:
    payload = request.SerializeToString()
    return struct.pack(">BL", 0, len(payload)) + payload


async def test_nghttp_client(tmp_path) -> None:
    server, kv = await start()
    kv.data[b"k"] = b"v"
    body = tmp_path / "req"
    body.write_bytes(grpc_body(pb.RangeRequest(key=b"k")))
    url = f"http://127.0.0.1:{server.ports[0]}/etcdserverpb.KV/Range"
    try:
        code, out = await run("nghttp", "-v", "-d", str(body), "-H", "content-type: application/grpc", url)
        assert code == 0, out
        assert "grpc-status: 0" in out and ":status: 200" in out
        code, out = await run("nghttp", "-v", "-d", str(body), "-H", "content-type: application/grpc", url + "X")
        assert "grpc-status: 12" in out
    finally:
        await server.stop(1)


async def test_h2load_many_streams_on_few_connections(tmp_path) -> None:
    server, kv = await start()
    kv.data[b"k"] = b"v"
    body = tmp_path / "req"
    body.write_bytes(grpc_body(pb.RangeRequest(key=b"k")))
    url = f"http://127.0.0.1:{server.ports[0]}/etcdserverpb.KV/Range"
    try:
        code, out = await run(
            "h2load", "-n", "2000", "-c", "4", "-m", "50", "-d", str(body), "-H", "content-type: application/grpc", url
        )
        assert code == 0, out
        assert "2000 succeeded, 0 failed, 0 errored" in out, out
        assert "status codes: 2000 2xx" in out, out
    finally:
        await server.stop(1)


async def read_all(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    while chunk := await reader.read(65536):
        chunks.append(chunk)
    return b"".join(chunks)


async def test_http1_on_the_same_port_without_an_app_gets_go_s_404() -> None:
    server, _ = await start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.ports[0])
        writer.write(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nConnection: close\r\n\r\n")
        out = await asyncio.wait_for(read_all(reader), 30)
        writer.close()
        assert out.count(b"HTTP/1.1 404 Not Found") == 2
        assert out.count(b"\r\n\r\n404 page not found\n") == 2
        assert out.endswith(b"Connection: close\r\n\r\n404 page not found\n")
    finally:
        await server.stop(1)


async def test_idle_connection_is_closed() -> None:
    server, _ = await start(FrontendConfig(idle_timeout=0.2, keepalive_interval=0.1))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.ports[0])
        writer.write(PREFACE + settings())
        out = await asyncio.wait_for(read_all(reader), 30)  # ends when the server closes
        writer.close()
        frames = parse(out)
        assert frames[-1].type == 0x7 and frames[-1].error_code == 0  # GOAWAY, NO_ERROR
    finally:
        await server.stop(1)


async def test_silent_peer_with_an_open_stream_is_pinged_then_closed() -> None:
    server, _ = await start(FrontendConfig(idle_timeout=600, keepalive_interval=0.1, keepalive_timeout=0.1))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.ports[0])
        block = hpack.Encoder().encode(
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", "/etcdserverpb.Watch/Watch"),
                ("content-type", "application/grpc"),
            ]
        )
        writer.write(PREFACE + settings() + frame(0x1, 0x4, 1, block) + b"\x00\x00\x10\x00")  # stalls mid-frame
        out = await asyncio.wait_for(read_all(reader), 30)
        writer.close()
        pings = [fr for fr in parse(out) if fr.type == 0x6]
        assert [fr.payload for fr in pings] == [b"raftkvka"]  # the keepalive ping went out before the close
        assert not server.connections or all(c.open_streams == 0 for c in server.connections)
    finally:
        await server.stop(1)


def test_a_second_listener_on_the_same_port_fails() -> None:
    async def main() -> None:
        server, _ = await start()
        try:
            other = FrontendServer({})
            with pytest.raises(OSError):
                await other.listen("127.0.0.1", server.ports[0])
        finally:
            await server.stop(1)

    asyncio.run(main())
