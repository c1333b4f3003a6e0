"""Revisions and their byte encoding in the backend.

A revision is a pair (main, sub): ``main`` is the store revision of a transaction and ``sub``
numbers the changes inside it. In the backend a revision is the key of a stored KeyValue, encoded
as etcd does: 8 bytes of big-endian main, ``_``, 8 bytes of big-endian sub (17 bytes), with a
trailing ``t`` when the change is a deletion (a tombstone). Big-endian keeps the byte order of
encoded revisions equal to their numeric order, so a cursor walks them in history order.

In memory a revision is a plain ``tuple[int, int]``: tuples compare lexicographically, exactly
as revisions do, and cost no Python-level object.
"""

from __future__ import annotations

import struct

Revision = tuple[int, int]

REV_BYTES_LEN = 17
TOMBSTONE_MARK = b"t"
_REV = struct.Struct(">Q1sQ")


def rev_to_bytes(main: int, sub: int) -> bytes:
    return _REV.pack(main, b"_", sub)


def tombstone_to_bytes(main: int, sub: int) -> bytes:
    return _REV.pack(main, b"_", sub) + TOMBSTONE_MARK


def bytes_to_rev(data: bytes) -> tuple[int, int, bool]:
    """Decodes a backend key into (main, sub, is_tombstone); raises ValueError if malformed."""
    if len(data) == REV_BYTES_LEN:
        tombstone = False
    elif len(data) == REV_BYTES_LEN + 1 and data[-1:] == TOMBSTONE_MARK:
        tombstone = True
    else:
        raise ValueError(f"malformed revision key of {len(data)} bytes: {data!r}")
    main, sep, sub = _REV.unpack_from(data)
    if sep != b"_":
        raise ValueError(f"malformed revision key: {data!r}")
    return main, sub, tombstone
