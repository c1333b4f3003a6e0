"""Transcripts for side-by-side tests: the same calls against raftkv and etcd, answers compared line by line.

An answer is recorded as its text form with the header reduced to its revision, or as its gRPC
code and message. Revisions (``revision``, ``create_revision``, ``mod_revision``, ``rev``,
``compact_revision``) are made relative to the revision the transcript started at, so two servers
that did the same writes from different starting points give the same lines.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import text_format
from google.protobuf.message import Message

from proto.etcdserverpb import rpc_pb2 as pb

_REV = re.compile(r"\b(revision|create_revision|mod_revision|rev|compact_revision): (\d+)")


class Transcript:
    def __init__(self, base: int) -> None:
        self.base = base
        self.log: list[str] = []

    def text(self, msg: Message) -> str:
        copy = type(msg)()
        copy.CopyFrom(msg)
        if copy.DESCRIPTOR.fields_by_name.get("header") is not None and copy.HasField("header"):
            copy.header.CopyFrom(pb.ResponseHeader(revision=copy.header.revision))  # type: ignore[attr-defined]
        text = text_format.MessageToString(copy, as_one_line=True)
        return _REV.sub(lambda m: f"{m.group(1)}: +{int(m.group(2)) - self.base}", text)

    def rel(self, revision: int) -> str:
        return f"+{revision - self.base}"

    def note(self, what: str, outcome: str) -> None:
        self.log.append(f"{what}: {outcome}")

    def error(self, what: str, err: grpc.RpcError) -> None:
        self.note(what, f"{err.code().name} {err.details()!r}")  # type: ignore[attr-defined]

    def call(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            resp = fn()
        except grpc.RpcError as err:
            self.error(what, err)
            return None
        self.note(what, self.text(resp) if isinstance(resp, Message) else repr(resp))
        return resp


def assert_same(logs: dict[str, list[str]]) -> None:
    ours, ref = logs["raftkv"], logs["etcd"]
    if ours != ref:
        lines = [f"{'=' if a == b else '!'} raftkv: {a}\n  etcd:   {b}" for a, b in itertools.zip_longest(ours, ref)]
        pytest.fail("raftkv and etcd answered differently:\n" + "\n".join(lines))
