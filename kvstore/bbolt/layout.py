"""bbolt's on-disk layout: page headers, element headers, bucket headers and meta pages.

A bbolt file is an array of fixed-size pages (the size is in the meta pages; 4096 here). All
integers are little-endian (bbolt writes its structs in the machine's order, and every platform
etcd runs on is little-endian). Every page starts with a 16-byte header::

    id u64 | flags u16 | count u16 | overflow u32

``overflow`` counts the further pages a page spans (a page holding a large value occupies
``overflow + 1`` consecutive pages). ``flags`` says what the page is:

- **meta** (pages 0 and 1): after the header, ``magic u32, version u32, page_size u32,
  flags u32, root bucket (root pgid u64, sequence u64), freelist pgid u64, high-water pgid u64,
  txid u64, checksum u64``; the checksum is FNV-1a (64-bit) of the 56 bytes before it. A reader
  uses the valid meta page with the higher txid, so a torn write of one leaves the other.
- **freelist**: ``count`` page ids (u64) follow the header; when there are 0xFFFF or more, count
  is 0xFFFF and the real count is the first u64. A meta page's freelist pgid of all ones means
  the freelist was not written (etcd's NoFreelistSync): free pages are the unreachable ones.
- **branch**: ``count`` elements of ``pos u32, ksize u32, pgid u64``, then the keys; each
  element points at the child page whose first key is its key.
- **leaf**: ``count`` elements of ``flags u32, pos u32, ksize u32, vsize u32``, then each key
  followed by its value. ``pos`` is the distance from the element's own start to its key.
  Element flag 0x01 marks a nested bucket: its value is a 16-byte bucket header
  (``root pgid u64, sequence u64``) and, when root is 0, an *inline* bucket's whole leaf page
  (header and elements) right after it.

Keys within a page, and across the pages of a bucket, are in strictly increasing byte order.
The meta's root bucket is the top-level bucket whose entries are the named buckets.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAGIC = 0xED0CDAED
VERSION = 2
DEFAULT_PAGE_SIZE = 4096
NO_FREELIST = 0xFFFF_FFFF_FFFF_FFFF

BRANCH_PAGE = 0x01
LEAF_PAGE = 0x02
META_PAGE = 0x04
FREELIST_PAGE = 0x10

BUCKET_LEAF_FLAG = 0x01

MAX_KEY_SIZE = 32768
MAX_VALUE_SIZE = (1 << 31) - 2

PAGE_HEADER = struct.Struct("<QHHI")
LEAF_ELEMENT = struct.Struct("<IIII")
BRANCH_ELEMENT = struct.Struct("<IIQ")
BUCKET_HEADER = struct.Struct("<QQ")
META = struct.Struct("<IIII QQ QQQ Q")
PGID = struct.Struct("<Q")

PAGE_HEADER_SIZE = PAGE_HEADER.size  # 16
LEAF_ELEMENT_SIZE = LEAF_ELEMENT.size  # 16
BRANCH_ELEMENT_SIZE = BRANCH_ELEMENT.size  # 16
BUCKET_HEADER_SIZE = BUCKET_HEADER.size  # 16
META_CHECKSUMMED = META.size - 8  # the bytes the checksum covers

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK64 = (1 << 64) - 1


def fnv1a64(data: bytes) -> int:
    h = _FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & _MASK64
    return h


def page_type(flags: int) -> str:
    """bbolt's name for a page's type, for messages."""
    if flags & BRANCH_PAGE:
        return "branch"
    if flags & LEAF_PAGE:
        return "leaf"
    if flags & META_PAGE:
        return "meta"
    if flags & FREELIST_PAGE:
        return "freelist"
    return f"unknown<{flags:02x}>"


@dataclass(frozen=True, slots=True)
class Meta:
    """The contents of a meta page."""

    page_size: int
    root: int  # root page of the top-level bucket
    root_sequence: int
    freelist: int  # page id of the freelist, or NO_FREELIST
    pgid: int  # high-water mark: the number of pages in use
    txid: int
    flags: int = 0
    magic: int = MAGIC
    version: int = VERSION
    checksum: int = 0

    def pack(self) -> bytes:
        """The meta's bytes with a fresh checksum."""
        body = META.pack(
            self.magic,
            self.version,
            self.page_size,
            self.flags,
            self.root,
            self.root_sequence,
            self.freelist,
            self.pgid,
            self.txid,
            0,
        )[:META_CHECKSUMMED]
        return body + PGID.pack(fnv1a64(body))

    @staticmethod
    def unpack(data: bytes) -> Meta:
        magic, version, page_size, flags, root, seq, freelist, pgid, txid, checksum = META.unpack_from(data)
        return Meta(page_size, root, seq, freelist, pgid, txid, flags, magic, version, checksum)

    def problem(self, raw: bytes) -> str | None:
        """Why this meta (read from raw) is unusable, or None (bbolt's meta.validate)."""
        if self.magic != MAGIC:
            return f"bad magic {self.magic:#010x} (not a bbolt file)"
        if self.version != VERSION:
            return f"unsupported version {self.version} (want {VERSION})"
        if self.checksum != 0 and self.checksum != fnv1a64(bytes(raw[:META_CHECKSUMMED])):
            return "checksum mismatch"
        return None


def meta_page(meta: Meta, page_id: int) -> bytes:
    """A whole meta page (header and meta, zero-padded to the page size)."""
    head = PAGE_HEADER.pack(page_id, META_PAGE, 0, 0) + meta.pack()
    return head + bytes(meta.page_size - len(head))


def pages_for(size: int, page_size: int) -> int:
    """How many pages a page of size bytes occupies (1 + its overflow)."""
    return max(1, -(-size // page_size))
