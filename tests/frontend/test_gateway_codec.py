"""The gateway's JSON codec against what etcd's grpc-gateway (golang/protobuf jsonpb, Go's
encoding/json) answers: the error strings below were read from etcd 3.4.23 for the same bodies."""

from __future__ import annotations

import pytest

from frontend.gateway import Codec, Decoder, GoJSONError
from frontend.gateway._gojson import check_valid, encode_string, go_quote, quote_char, std_b64decode
from proto.etcdserverpb import rpc_pb2 as pb
from proto.mvccpb import kv_pb2

codec = Codec()


def decode(body: bytes) -> str:
    decoder = Decoder()
    decoder.feed(body)
    decoder.end()
    try:
        raw = decoder.next_value()
    except EOFError:
        return "<empty>"
    except GoJSONError as exc:
        return "ERR " + exc.message
    assert raw is not None
    try:
        return codec.encode(codec.unmarshal(pb.RangeRequest, raw))
    except GoJSONError as exc:
        return "ERR " + exc.message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"key":"Zm9v","foo":1}', '{"key":"Zm9v"}'),
        (b'{"key":"Zm9"}', "ERR illegal base64 data at input byte 0"),
        (b'{"key":"Zm9v!"}', "ERR illegal base64 data at input byte 4"),
        (b'{"key":"Zm9v_-"}', "ERR illegal base64 data at input byte 4"),
        (b'{"key":"Zm9v","limit":"x"}', "ERR invalid character 'x' looking for beginning of value"),
        (b'{"key":"Zm9v","limit":1.5}', "ERR json: cannot unmarshal number 1.5 into Go value of type int64"),
        (b'{"key":"Zm9v","limit":"2"}', '{"key":"Zm9v","limit":"2"}'),
        (b'{"key":"Zm9v","limit":true}', "ERR json: cannot unmarshal bool into Go value of type int64"),
        (b'{"key":1}', "ERR json: cannot unmarshal number into Go value of type []uint8"),
        (b'{"key":"Zm9v","sort_order":"DESCEND"}', '{"key":"Zm9v","sort_order":"DESCEND"}'),
        (
            b'{"key":"Zm9v","sort_order":"BAD"}',
            'ERR unknown value "BAD" for enum etcdserverpb.RangeRequest_SortOrder',
        ),
        (b'{"key":"Zm9v","sort_order":7}', '{"key":"Zm9v","sort_order":7}'),
        (b'{"key":"Zm9v","sortOrder":1}', '{"key":"Zm9v","sort_order":"ASCEND"}'),
        (b'{"key":"Zm9v","serializable":"true"}', "ERR json: cannot unmarshal string into Go value of type bool"),
        (b'{"key":"Zm9v"} trailing', '{"key":"Zm9v"}'),
        (b"", "<empty>"),
        (b" \n\t", "<empty>"),
        (b"[]", "ERR json: cannot unmarshal array into Go value of type map[string]json.RawMessage"),
        (b"null", "{}"),
        (b'{"key":null}', "{}"),
        (b"{x}", "ERR invalid character 'x' looking for beginning of object key string"),
        (b'{"key":"Zm9v",}', "ERR invalid character '}' looking for beginning of object key string"),
        (b'{"key" "Zm9v"}', "ERR invalid character '\"' after object key"),
        (b'{"key":"Zm9v","key":"YmFy"}', '{"key":"YmFy"}'),
        (b'{"key":"\\u0041"}', "ERR illegal base64 data at input byte 0"),
        (b'"str"', "ERR json: cannot unmarshal string into Go value of type map[string]json.RawMessage"),
        (b"12", "ERR json: cannot unmarshal number into Go value of type map[string]json.RawMessage"),
        (b'{"key":"Zm9v","limit":-1}', '{"key":"Zm9v","limit":"-1"}'),
        (
            b'{"key":"Zm9v","limit":99999999999999999999}',
            "ERR json: cannot unmarshal number 99999999999999999999 into Go value of type int64",
        ),
        (b'{"key":"Zm9v","limit":1e3}', "ERR json: cannot unmarshal number 1e3 into Go value of type int64"),
        (b'{"key":"Zm9v"', "ERR unexpected EOF"),
        (b'{"key":[102,111,111]}', '{"key":"Zm9v"}'),
        (b'{"key":[102,111,256]}', "ERR json: cannot unmarshal number 256 into Go value of type uint8"),
        (b'{"key":"Zm\\n9v"}', '{"key":"Zm9v"}'),  # Go's base64 skips newlines
        (b'{"key":tru}', "ERR invalid character '}' in literal true (expecting 'e')"),
        (b'{"key":"a\x01"}', "ERR invalid character '\\x01' in string literal"),
        (b'{"key":"\\q"}', "ERR invalid character 'q' in string escape code"),
        (b'{"limit":-}', "ERR invalid character '}' in numeric literal"),
        (b'{"limit":1.}', "ERR invalid character '}' after decimal point in numeric literal"),
        (b'{"limit":01}', "ERR invalid character '1' after object key:value pair"),
        (b'{"limit":"1 2"}', "ERR invalid character '2' after top-level value"),
        (b'{"limit":""}', "ERR unexpected end of JSON input"),
        (b'{"key":"Zm9v","limit":"null"}', '{"key":"Zm9v"}'),
        (b"\xff", "ERR invalid character '\u00ff' looking for beginning of value"),
    ],
)
def test_decoding_as_etcd_s_gateway(body: bytes, expected: str) -> None:
    assert decode(body) == expected


def test_a_stream_of_values_arrives_in_pieces() -> None:
    decoder = Decoder()
    decoder.feed(b'{"create_request":{"key":"Zm')
    assert decoder.next_value() is None
    decoder.feed(b'9v"}}\n{"cancel_request":{}} 12')
    assert decoder.next_value() == b'{"create_request":{"key":"Zm9v"}}'
    assert decoder.next_value() == b'{"cancel_request":{}}'
    assert decoder.next_value() is None  # a number may go on
    decoder.end()
    assert decoder.next_value() == b"12"
    with pytest.raises(EOFError):
        decoder.next_value()
    bad = Decoder()
    bad.feed(b"{}}")
    assert bad.next_value() == b"{}"
    with pytest.raises(GoJSONError, match="invalid character '}' looking for beginning of value"):
        bad.next_value()
    with pytest.raises(GoJSONError):  # the error sticks, as Go's Decoder's does
        bad.next_value()


def test_nesting_is_limited_as_go_limits_it() -> None:
    with pytest.raises(GoJSONError, match="invalid character '\\[' exceeded max depth"):
        check_valid(b"[" * 10001 + b"]" * 10001)
    check_valid(b"[" * 10000 + b"]" * 10000)
    with pytest.raises(GoJSONError, match="unexpected end of JSON input"):
        check_valid(b'{"a":' * 5000)


def test_nested_txns_decode_up_to_a_depth_and_are_refused_past_it() -> None:
    def txn(levels: int) -> bytes:
        return b'{"success":[{"request_txn":' * levels + b"{}" + b"}]}" * levels

    msg = codec.unmarshal(pb.TxnRequest, txn(90))
    assert msg.ByteSize() > 0
    assert codec.encode(msg).count("request_txn") == 90
    with pytest.raises(GoJSONError, match="nested deeper than"):
        codec.unmarshal(pb.TxnRequest, txn(150))


def test_oneofs_and_nested_messages() -> None:
    raw = (
        b'{"compare":[{"key":"Zm9v","target":"VERSION","version":"0"},{"target":"VALUE","value":null}],'
        b'"success":[{"request_put":{"key":"YQ==","value":"Yg=="}},{"requestRange":{}},{"request_range":null}]}'
    )
    txn = codec.unmarshal(pb.TxnRequest, raw)
    assert txn.compare[0].WhichOneof("target_union") == "version"  # set, though zero
    assert txn.compare[1].WhichOneof("target_union") is None  # null bytes: nil, not sent
    assert txn.success[1].WhichOneof("request") == "request_range"
    assert txn.success[2].WhichOneof("request") is None
    assert codec.encode(txn) == (
        '{"compare":[{"key":"Zm9v","version":"0"},{"target":"VALUE"}],'
        '"success":[{"request_put":{"key":"YQ==","value":"Yg=="}},{"request_range":{}},{}]}'
    )


def test_encoding_as_jsonpb_with_orig_names() -> None:
    resp = pb.RangeResponse(
        header=pb.ResponseHeader(cluster_id=12101053776118486841, member_id=1, revision=2, raft_term=2),
        kvs=[kv_pb2.KeyValue(key=b"foo", value=b"bar", create_revision=2, mod_revision=2, version=1)],
        count=1,
    )
    assert codec.encode(resp) == (
        '{"header":{"cluster_id":"12101053776118486841","member_id":"1","revision":"2","raft_term":"2"},'
        '"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"}],"count":"1"}'
    )
    assert codec.encode(pb.WatchResponse(events=[kv_pb2.Event(type=1, kv=kv_pb2.KeyValue(key=b"k"))])) == (
        '{"events":[{"type":"DELETE","kv":{"key":"aw=="}}]}'
    )
    assert codec.encode(pb.WatchResponse(events=[kv_pb2.Event(type=7)])) == '{"events":[{"type":7}]}'
    assert codec.encode(pb.HashResponse(hash=4294967295)) == '{"hash":4294967295}'
    assert codec.encode(pb.AlarmResponse()) == "{}"
    hidden = Codec([("etcdserverpb.StatusResponse", "dbSizeQuota")])
    assert hidden.encode(pb.StatusResponse(version="3.5.17", dbSizeQuota=5)) == '{"version":"3.5.17"}'


def test_strings_as_go_writes_them() -> None:
    assert encode_string("a<b>&c") == '"a\\u003cb\\u003e\\u0026c"'
    assert encode_string('q"\\\n\r\t\x01\x08\x0c\u2028é') == '"q\\"\\\\\\n\\r\\t\\u0001\\u0008\\u000c\\u2028é"'
    assert encode_string("plain") == '"plain"'


def test_go_quoting_in_messages() -> None:
    assert quote_char(ord("'")) == "'\\''"
    assert quote_char(ord('"')) == "'\"'"
    assert quote_char(0x0A) == "'\\n'"
    assert quote_char(0x7F) == "'\\x7f'"
    assert quote_char(0xE9) == "'é'"
    assert quote_char(0xA0) == "'\\u00a0'"
    assert go_quote(b'a"b\xff') == '"a\\"b\\xff"'


def test_base64_as_go_decodes_it() -> None:
    assert std_b64decode(b"Zm9v") == b"foo"
    assert std_b64decode(b"Zm8=") == b"fo"
    assert std_b64decode(b"Zg==") == b"f"
    assert std_b64decode(b"Zm\r\n9v") == b"foo"
    for data, offset in ((b"Zg=", 3), (b"Z===", 1), (b"Zm9vZ", 4), (b"Zg==Zg==", 4), (b"Zm9v*", 4), (b"=", 0)):
        with pytest.raises(GoJSONError, match=f"illegal base64 data at input byte {offset}$"):
            std_b64decode(data)
