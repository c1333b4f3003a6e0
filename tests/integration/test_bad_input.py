"""Bad input gets etcd's status code and message and loses nothing; each test also runs against real etcd."""

from __future__ import annotations

import contextlib
import socket
import threading

import grpc
import pytest

from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc
from tests.procs import Process


@pytest.fixture
def kv(server: Process):
    with grpc.insecure_channel(server.endpoint, options=[("grpc.max_send_message_length", 8 << 20)]) as channel:
        yield rpc_pb2_grpc.KVStub(channel)


def status(call, *args) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call(*args, timeout=10)
    return err.value.code(), err.value.details()


INVALID = grpc.StatusCode.INVALID_ARGUMENT


def test_empty_key(kv) -> None:
    expected = (INVALID, "etcdserver: key is not provided")
    assert status(kv.Range, pb.RangeRequest()) == expected
    assert status(kv.Put, pb.PutRequest(value=b"v")) == expected
    assert status(kv.DeleteRange, pb.DeleteRangeRequest()) == expected
    assert status(kv.Txn, pb.TxnRequest(compare=[pb.Compare(value=b"x")])) == expected
    assert status(kv.Txn, pb.TxnRequest(success=[pb.RequestOp(request_put=pb.PutRequest())])) == expected


def test_put_flag_conflicts(kv) -> None:
    assert status(kv.Put, pb.PutRequest(key=b"k", value=b"v", ignore_value=True)) == (
        INVALID,
        "etcdserver: value is provided",
    )
    assert status(kv.Put, pb.PutRequest(key=b"k", lease=1, ignore_lease=True)) == (
        INVALID,
        "etcdserver: lease is provided",
    )
    assert status(kv.Put, pb.PutRequest(key=b"missing", ignore_value=True)) == (INVALID, "etcdserver: key not found")
    assert status(kv.Put, pb.PutRequest(key=b"k", lease=12345)) == (
        grpc.StatusCode.NOT_FOUND,
        "etcdserver: requested lease not found",
    )


def test_request_size_limits(kv) -> None:
    big = b"x" * (1536 * 1024)  # at the limit, plus the request's own framing
    assert status(kv.Put, pb.PutRequest(key=b"big", value=big)) == (INVALID, "etcdserver: request is too large")
    code, _ = status(kv.Put, pb.PutRequest(key=b"huge", value=b"x" * (3 << 20)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED  # refused by gRPC before it reaches the server
    kv.Put(pb.PutRequest(key=b"fits", value=b"y" * (1 << 20)), timeout=10)
    assert kv.Range(pb.RangeRequest(key=b"fits"), timeout=10).kvs[0].value == b"y" * (1 << 20)
    assert kv.Range(pb.RangeRequest(key=b"big"), timeout=10).count == 0


def test_txn_limits_and_duplicates(kv) -> None:
    ops = [pb.RequestOp(request_put=pb.PutRequest(key=b"k%d" % i)) for i in range(129)]
    assert status(kv.Txn, pb.TxnRequest(success=ops)) == (INVALID, "etcdserver: too many operations in txn request")
    kv.Txn(pb.TxnRequest(success=ops[:128]), timeout=10)
    dup = [pb.RequestOp(request_put=pb.PutRequest(key=b"d")), pb.RequestOp(request_put=pb.PutRequest(key=b"d"))]
    assert status(kv.Txn, pb.TxnRequest(success=dup)) == (INVALID, "etcdserver: duplicate key given in txn request")
    assert status(kv.Txn, pb.TxnRequest(success=[pb.RequestOp()])) == (INVALID, "etcdserver: key not found")


def test_compacted_and_future_revisions(kv) -> None:
    for i in range(5):
        rev = kv.Put(pb.PutRequest(key=b"r", value=b"%d" % i), timeout=10).header.revision
    compacted = (grpc.StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted")
    future = (grpc.StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision")
    assert status(kv.Range, pb.RangeRequest(key=b"r", revision=rev + 1)) == future
    assert status(kv.Compact, pb.CompactionRequest(revision=rev + 1)) == future
    kv.Compact(pb.CompactionRequest(revision=rev - 1, physical=True), timeout=10)
    assert status(kv.Compact, pb.CompactionRequest(revision=rev - 1)) == compacted
    assert status(kv.Compact, pb.CompactionRequest(revision=rev - 2)) == compacted
    assert status(kv.Range, pb.RangeRequest(key=b"r", revision=rev - 2)) == compacted
    assert kv.Range(pb.RangeRequest(key=b"r", revision=rev - 1), timeout=10).kvs[0].value == b"3"
    txn = pb.TxnRequest(success=[pb.RequestOp(request_range=pb.RangeRequest(key=b"r", revision=rev - 2))])
    assert status(kv.Txn, txn) == compacted
    txn = pb.TxnRequest(
        success=[
            pb.RequestOp(request_put=pb.PutRequest(key=b"other")),
            pb.RequestOp(request_range=pb.RangeRequest(key=b"r", revision=rev + 5)),
        ]
    )
    assert status(kv.Txn, txn) == future
    assert kv.Range(pb.RangeRequest(key=b"other"), timeout=10).count == 0  # the failed txn wrote nothing


def test_arbitrary_bytes_round_trip(kv) -> None:
    pairs = {b"\x00": b"", b"\xff\xfe\x00bin": b"\x00\x01\x02\xff", b"caf\xc3\xa9": "é".encode(), b"\x80": b"\x80"}
    for k, v in pairs.items():
        kv.Put(pb.PutRequest(key=k, value=v), timeout=10)
    got = kv.Range(pb.RangeRequest(key=b"\x00", range_end=b"\x00"), timeout=10)
    assert {x.key: x.value for x in got.kvs} == pairs
    assert [x.key for x in got.kvs] == sorted(pairs)


def nested_txn(depth: int) -> pb.TxnRequest:
    """A txn whose success branch holds a txn, depth levels down, ending in one put."""
    txn = pb.TxnRequest()
    inner = txn
    for _ in range(depth):
        inner = inner.success.add().request_txn
    inner.success.add().request_put.key = b"deep"
    return txn


def test_message_limit_has_etcds_wording_and_number(server: Process) -> None:
    # etcd's receive limit is --max-request-bytes (1.5 MiB) plus 512 KiB, and Go's gRPC words the refusal
    request = pb.PutRequest(key=b"huge", value=b"x" * (10 << 20))
    with grpc.insecure_channel(server.endpoint, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        got = status(rpc_pb2_grpc.KVStub(channel).Put, request)
    assert got == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"grpc: received message larger than max ({request.ByteSize()} vs. 2097152)",
    )


def test_undecodable_request_is_internal_unmarshalling(server: Process) -> None:
    with grpc.insecure_channel(server.endpoint) as channel:
        raw = channel.unary_unary("/etcdserverpb.KV/Range", request_serializer=None, response_deserializer=None)
        for junk in (b"\x0a\x05ab", b"\xff\xff\xff\xff\x0f", b"\x0b\x0b\x0b"):
            with pytest.raises(grpc.RpcError) as err:
                raw(junk, timeout=5)
            assert err.value.code() == grpc.StatusCode.INTERNAL
            assert err.value.details().startswith("grpc: error unmarshalling request: ")


def test_nested_txn_as_deep_as_etcd_takes(kv) -> None:
    # etcd decodes any depth and refuses by --max-txn-ops (128 by default), one op per level
    resp = kv.Txn(nested_txn(100), timeout=10)
    inner = resp
    for _ in range(100):
        inner = inner.responses[0].response_txn
    assert inner.responses[0].HasField("response_put")
    assert status(kv.Txn, nested_txn(300)) == (INVALID, "etcdserver: too many operations in txn request")
    assert kv.Range(pb.RangeRequest(key=b"deep"), timeout=10).count == 1


def test_garbage_and_hangups_do_not_hurt(server: Process, kv) -> None:
    kv.Put(pb.PutRequest(key=b"before", value=b"1"), timeout=10)
    # raw junk on the socket, and a connection closed in the middle of an HTTP/2 preface
    for junk in (b"\x00\x01garbage" * 100, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00", b"GET / HTTP/1.1\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(junk)
    # a well-framed gRPC call whose body is not a valid protobuf
    with grpc.insecure_channel(server.endpoint) as channel:
        raw = channel.unary_unary("/etcdserverpb.KV/Put", request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError):
            raw(b"\xff\xff\xff\xff\x0f", timeout=5)
        # clients that give up at once, many times
        stub = rpc_pb2_grpc.KVStub(channel)
        for i in range(50):
            with contextlib.suppress(grpc.RpcError):
                stub.Put(pb.PutRequest(key=b"hangup%d" % i, value=b"v"), timeout=0.0005)
    assert kv.Range(pb.RangeRequest(key=b"before"), timeout=10).kvs[0].value == b"1"
    kv.Put(pb.PutRequest(key=b"after", value=b"2"), timeout=10)
    assert kv.Range(pb.RangeRequest(key=b"after"), timeout=10).kvs[0].value == b"2"


def test_flood_of_concurrent_writers(server: Process) -> None:
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            with grpc.insecure_channel(server.endpoint) as channel:
                stub = rpc_pb2_grpc.KVStub(channel)
                futures = [stub.Put.future(pb.PutRequest(key=b"flood/%d/%d" % (n, i), value=b"v")) for i in range(300)]
                for f in futures:
                    f.result(timeout=60)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with grpc.insecure_channel(server.endpoint) as channel:
        got = rpc_pb2_grpc.KVStub(channel).Range(
            pb.RangeRequest(key=b"flood/", range_end=b"flood0", count_only=True), timeout=10
        )
    assert got.count == 8 * 300
