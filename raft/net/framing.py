"""Peer frames: the wire format of raft.transport, and reading and encoding one frame.

Wire format. Every frame is ``u32 length (big-endian) | msgpack payload`` where the payload is
``[cluster_id, from_id, to_id, kind, body]``:

====  ==========  ==========================================================================
kind  name        body
====  ==========  ==========================================================================
1     HELLO       ``[protocol version, nonce]`` (16 random bytes); the first frame of a connection
2     MSG         list of ``Message.to_wire()``: everything queued for the peer at once
3     SNAP_BEGIN  ``[Message.to_wire() of the MsgSnap, file size]``
4     SNAP_CHUNK  bytes (about 1 MiB) of the snapshot file, in order
5     SNAP_END    CRC-32 of the whole file
6     SNAP_ACK    the snapshot index; receiver -> sender once the file is durable
7     VERIFY      a nonce: "did you open a connection to me with this HELLO?" (the first frame)
8     VERIFIED    true or false, the answer to VERIFY
9     REQUEST     bytes: one request for the application (``request``), on a fresh connection
10    RESPONSE    ``[ok, bytes]``: the answer to a REQUEST (ok False: bytes is an error text)
11    REMOVED     nothing: listener -> dialer, "you were removed from the cluster"
====  ==========  ==========================================================================
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import msgpack

PROTOCOL_VERSION = 2
NONCE_BYTES = 16

HELLO = 1
MSG = 2
SNAP_BEGIN = 3
SNAP_CHUNK = 4
SNAP_END = 5
SNAP_ACK = 6
VERIFY = 7
VERIFIED = 8
REQUEST = 9
RESPONSE = 10
REMOVED = 11

MAX_FRAME = 64 << 20
"""Largest frame accepted (and produced) once a connection said HELLO."""
HELLO_MAX_FRAME = 4096
"""Largest first frame: a stranger cannot make us buffer more than this."""

READ_LIMIT = 1 << 20  # StreamReader buffer size before it pauses the socket
LEN = struct.Struct(">I")


class PeerRequestError(Exception):
    """A request to a peer failed: unreachable, timed out, refused, or answered with an error."""


class Rejected(Exception):
    """A frame or connection we refuse; `reason` is a short stable token for logs."""

    def __init__(self, reason: str, **fields: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fields = fields


async def read_raw(reader: asyncio.StreamReader, cap: int) -> tuple[list[Any], int]:
    """Reads one frame of the right shape, whoever it is from: ([cluster_id, from, to, kind, body], its size)."""
    (n,) = LEN.unpack(await reader.readexactly(4))
    if n > cap:
        raise Rejected("frame_too_large", size=n, max_frame=cap)
    payload = await reader.readexactly(n)
    try:
        frame = msgpack.unpackb(payload)
    except Exception:
        raise Rejected("undecodable_frame", size=n) from None
    if type(frame) is not list or len(frame) != 5:
        raise Rejected("malformed_frame", size=n)
    return frame, n


def encode_frame(packer: msgpack.Packer, cluster_id: int, frm: int, to: int, kind: int, body: Any) -> bytes:
    """One frame: its length, then ``[cluster_id, from, to, kind, body]``."""
    payload = packer.pack([cluster_id, frm, to, kind, body])
    return LEN.pack(len(payload)) + payload
