"""Protobuf messages to and from JSON exactly as etcd's grpc-gateway does (golang/protobuf's jsonpb).

The gateway marshals with ``OrigName: true`` and ``EmitDefaults: false``: fields by their proto
names, in declaration order, scalars at their default and empty repeated fields left out, messages
that are present written even when empty, a oneof member whenever it is set; 64-bit integers as
strings, 32-bit ones as numbers, bytes as standard base64, enums by name (an unknown number bare),
strings as Go writes them (``<``, ``>`` and ``&`` escaped). ``google.protobuf.json_format`` differs
on several of these points (field order within oneofs aside: escaping, spacing, unknown enums), so
the encoding is written out here.

Unmarshalling follows jsonpb's ``Unmarshaler`` with unknown fields allowed, as the gateway sets it:
both the proto name and the lowerCamel JSON name are accepted (the latter wins when both appear),
``null`` leaves a field unset, 64- and 32-bit integers may be quoted (the quotes are stripped, not
unescaped), enums by name or number, bytes as standard base64 (or an array of byte values); every
error carries the text Go's jsonpb and ``encoding/json`` give (``_gojson``).

``hidden`` names fields a served API version does not know: they are neither written nor read.
Messages nested deeper than ``MAX_NESTING`` (100 levels of Txn) are refused: jsonpb has no such
limit, but the codec recurses once per message and must stay within Python's stack.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Collection
from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from frontend.gateway import _gojson as gj
from frontend.gateway._gojson import GoJSONError

_F = FieldDescriptor
MAX_NESTING = 200
_INT64 = {_F.TYPE_INT64, _F.TYPE_SINT64, _F.TYPE_SFIXED64}
_UINT64 = {_F.TYPE_UINT64, _F.TYPE_FIXED64}
_INT32 = {_F.TYPE_INT32, _F.TYPE_SINT32, _F.TYPE_SFIXED32}
_UINT32 = {_F.TYPE_UINT32, _F.TYPE_FIXED32}


def go_enum_name(enum: EnumDescriptor) -> str:
    """The Go type of an enum as gogo generates it: package.Outer_Inner."""
    package = enum.file.package
    local = enum.full_name[len(package) + 1 :] if package else enum.full_name
    return f"{package}.{local.replace('.', '_')}" if package else local.replace(".", "_")


def _go_type(fd: FieldDescriptor) -> str:
    t = fd.type
    if t in _INT64:
        return "int64"
    if t in _UINT64:
        return "uint64"
    if t in _INT32:
        return "int32"
    if t in _UINT32:
        return "uint32"
    if t == _F.TYPE_ENUM:
        return go_enum_name(fd.enum_type)
    return {_F.TYPE_BOOL: "bool", _F.TYPE_STRING: "string", _F.TYPE_BYTES: "[]uint8"}.get(t, "float64")


class Codec:
    """JSON for messages of one API: ``hidden`` is a set of (message full name, field name)."""

    def __init__(self, hidden: Collection[tuple[str, str]] = ()) -> None:
        self.hidden = frozenset(hidden)
        self._plans: dict[Descriptor, list[tuple[FieldDescriptor, str, Callable[[Any], str]]]] = {}
        self._fields: dict[Descriptor, tuple[list[FieldDescriptor], list[list[FieldDescriptor]]]] = {}

    # ---- marshal ----

    def marshal(self, msg: Message) -> bytes:
        return self.encode(msg).encode("utf-8")

    def encode(self, msg: Message) -> str:
        desc = msg.DESCRIPTOR
        plan = self._plans.get(desc)
        if plan is None:
            plan = self._plan(desc)
        parts = []
        for fd, value in msg.ListFields():
            entry = plan.get(fd)  # type: ignore[attr-defined]
            if entry is None:
                continue
            key, enc = entry
            if fd.label == _F.LABEL_REPEATED:
                parts.append(key + "[" + ",".join(enc(v) for v in value) + "]")
            else:
                parts.append(key + enc(value))
        return "{" + ",".join(parts) + "}"

    def _plan(self, desc: Descriptor) -> Any:
        plan = {}
        for fd in desc.fields:
            if (desc.full_name, fd.name) in self.hidden:
                continue
            plan[fd] = ('"' + fd.name + '":', self._encoder(fd))
        self._plans[desc] = plan  # type: ignore[assignment]
        return plan

    def _encoder(self, fd: FieldDescriptor) -> Callable[[Any], str]:
        t = fd.type
        if t in _INT64 or t in _UINT64:
            return lambda v: f'"{v}"'
        if t in _INT32 or t in _UINT32:
            return str
        if t == _F.TYPE_BOOL:
            return lambda v: "true" if v else "false"
        if t == _F.TYPE_STRING:
            return gj.encode_string
        if t == _F.TYPE_BYTES:
            return lambda v: '"' + base64.b64encode(v).decode("ascii") + '"'
        if t == _F.TYPE_ENUM:
            names = {v.number: v.name for v in fd.enum_type.values}
            return lambda v: f'"{names[v]}"' if v in names else str(v)
        if t == _F.TYPE_MESSAGE:
            return self.encode
        return repr

    # ---- unmarshal ----

    def unmarshal(self, cls: type[Message], raw: bytes) -> Message:
        """A message of cls from one raw JSON value (as the Decoder gives it); GoJSONError if it cannot be."""
        msg = cls()
        self._into(msg, raw, 0)
        return msg

    def _layout(self, desc: Descriptor) -> tuple[list[FieldDescriptor], list[list[FieldDescriptor]]]:
        layout = self._fields.get(desc)
        if layout is None:
            plain = [
                fd for fd in desc.fields if fd.containing_oneof is None and (desc.full_name, fd.name) not in self.hidden
            ]
            oneofs = [
                [fd for fd in oneof.fields if (desc.full_name, fd.name) not in self.hidden] for oneof in desc.oneofs
            ]
            layout = (plain, oneofs)
            self._fields[desc] = layout
        return layout

    def _into(self, msg: Message, raw: bytes, depth: int) -> None:
        if depth >= MAX_NESTING:
            raise GoJSONError(f"raftkv: messages nested deeper than {MAX_NESTING}")
        k = gj.kind(raw)
        if k == "null":
            return
        if k != "object":
            raise gj.type_error(k, "map[string]json.RawMessage")
        fields = gj.members(raw)
        plain, oneofs = self._layout(msg.DESCRIPTOR)
        for fd in plain:
            value = _consume(fields, fd)
            if value is not None:
                self._field(msg, fd, value, False, depth)
        if fields:
            for members in oneofs:
                for fd in members:
                    value = _consume(fields, fd)
                    if value is not None:
                        self._field(msg, fd, value, True, depth)
        # fields left over are unknown: the gateway allows them

    def _field(self, msg: Message, fd: FieldDescriptor, raw: bytes, oneof: bool, depth: int) -> None:
        if fd.label == _F.LABEL_REPEATED:
            k = gj.kind(raw)
            if k == "null":
                return
            if k != "array":
                raise gj.type_error(k, "[]json.RawMessage")
            target = getattr(msg, fd.name)
            for item in gj.items(raw):
                if fd.type == _F.TYPE_MESSAGE:
                    self._into(target.add(), item, depth + 1)
                else:
                    value = self._scalar(fd, item)
                    target.append(_default(fd) if value is None else value)
            return
        if fd.type == _F.TYPE_MESSAGE:
            if raw == b"null":
                return
            sub = getattr(msg, fd.name)
            sub.SetInParent()
            self._into(sub, raw, depth + 1)
            return
        value = self._scalar(fd, raw)
        if value is None:
            if not oneof or fd.type == _F.TYPE_BYTES:
                return  # null: unset (a oneof's bytes member too: nil bytes are not sent)
            value = _default(fd)
        setattr(msg, fd.name, value)

    def _scalar(self, fd: FieldDescriptor, raw: bytes) -> Any:
        """The value of raw for a scalar field, None for null."""
        t = fd.type
        if raw == b"null":
            return None
        if t == _F.TYPE_ENUM and raw[:1] == b'"':
            name = raw[1:-1]  # jsonpb does not unquote: valid names need no escapes
            value = fd.enum_type.values_by_name.get(name.decode("utf-8", "replace"))
            if value is None:
                raise GoJSONError(f"unknown value {gj.go_quote(name)} for enum {go_enum_name(fd.enum_type)}")
            return value.number
        if t in _INT64 or t in _UINT64 or t in _INT32 or t in _UINT32 or t == _F.TYPE_ENUM:
            if raw[:1] == b'"':
                raw = raw[1:-1]
            bits = 64 if (t in _INT64 or t in _UINT64) else 32
            signed = not (t in _UINT64 or t in _UINT32)
            return gj.unmarshal_int(raw, bits, signed, _go_type(fd))
        if t == _F.TYPE_BOOL:
            return gj.unmarshal_bool(raw)
        if t == _F.TYPE_STRING:
            return gj.unmarshal_string(raw)
        if t == _F.TYPE_BYTES:
            value = gj.unmarshal_bytes(raw)
            return b"" if value is None else value
        raise GoJSONError(f"raftkv: the gateway does not decode fields of type {_go_type(fd)}")


def _consume(fields: dict[str, bytes], fd: FieldDescriptor) -> bytes | None:
    """The raw value given for fd by its proto name or its JSON name (which wins), taking both out."""
    orig = fields.pop(fd.name, None)
    camel = fields.pop(fd.json_name, None) if fd.json_name != fd.name else None
    return camel if camel is not None else orig


def _default(fd: FieldDescriptor) -> Any:
    t = fd.type
    if t == _F.TYPE_BOOL:
        return False
    if t == _F.TYPE_STRING:
        return ""
    if t == _F.TYPE_BYTES:
        return b""
    return 0
