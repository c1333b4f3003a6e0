"""Decoding untrusted protobuf bytes: a nesting-depth check before the upb decoder (see ``proto``).

``parser(cls)`` returns ``cls.FromString`` guarded by ``check_depth``: bytes nested deeper than
``MAX_DEPTH`` messages (submessages and groups, unknown fields included) raise ``DecodeError``
without reaching upb, whose recursion would overflow the C stack first. Each level of nesting takes
at least two bytes, so shorter inputs are not walked at all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

MAX_DEPTH = 2000  # messages; a Txn level is two (TxnRequest > RequestOp), so 1000 nested txns
M = TypeVar("M", bound=Message)

_children: dict[Descriptor, dict[int, Descriptor]] = {}


def _message_fields(desc: Descriptor) -> dict[int, Descriptor]:
    fields = _children.get(desc)
    if fields is None:
        fields = {
            f.number: f.message_type
            for f in desc.fields
            if f.type == FieldDescriptor.TYPE_MESSAGE and f.message_type is not None
        }
        _children[desc] = fields
    return fields


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise IndexError("varint too long")


def nesting_depth(data: bytes, desc: Descriptor, stop_at: int = MAX_DEPTH) -> int:
    """How deep messages nest in data (stops counting past stop_at); malformed input stops the walk."""
    stack: list[tuple[int, Descriptor | None]] = []  # (end, descriptor); end -1 for a group
    deepest = 0
    current: Descriptor | None = desc
    pos = 0
    end = len(data)
    try:
        while pos < end:
            while stack and stack[-1][0] == pos:
                current = stack.pop()[1]
            tag, pos = _varint(data, pos)
            wire = tag & 7
            if wire == 0:
                _, pos = _varint(data, pos)
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            elif wire == 2:
                length, pos = _varint(data, pos)
                child = _message_fields(current).get(tag >> 3) if current is not None else None
                if child is not None and length:
                    stack.append((pos + length, current))
                    current = child
                    deepest = max(deepest, len(stack))
                else:
                    pos += length
            elif wire == 3:
                stack.append((-1, current))
                current = None  # an unknown group: its fields are not known
                deepest = max(deepest, len(stack))
            elif wire == 4:
                if not stack or stack[-1][0] != -1:
                    return deepest
                current = stack.pop()[1]
            else:
                return deepest
            if deepest > stop_at:
                return deepest
    except IndexError:
        pass
    return deepest


def check_depth(data: bytes, desc: Descriptor) -> None:
    if len(data) >= 2 * MAX_DEPTH:
        depth = nesting_depth(data, desc)
        if depth > MAX_DEPTH:
            raise DecodeError(f"messages nested deeper than {MAX_DEPTH}")


def parser(cls: type[M]) -> Callable[[bytes], M]:
    desc = cls.DESCRIPTOR
    from_string: Callable[[bytes], Any] = cls.FromString

    def parse(data: bytes) -> M:
        if len(data) >= 2 * MAX_DEPTH:
            check_depth(data, desc)
        return from_string(data)

    return parse
