"""Writing a bbolt file in one pass from sorted input: a bulk load, not a B+tree that is edited.

``write_file`` takes the top-level buckets, each an iterable of ``(key, value)`` in strictly
increasing key order, where a value is bytes or a ``Nested`` bucket, and streams pages to the
file as leaves fill, so memory holds one leaf per open bucket plus one (first key, page id) per
leaf, whatever the size of the data. Each bucket is laid out as bbolt would leave it:

- leaves are filled up to the page size; an element too large for one page gets a page of its
  own with overflow pages after it;
- when a bucket needs more than one leaf, branch pages are built bottom-up (each element the
  first key of a child) until one page, the bucket's root, remains;
- a bucket with no nested buckets whose single leaf is at most a quarter page is stored
  *inline*, in its parent's value, as bbolt's ``Bucket.inlineable`` would decide;
- the file ends with an empty freelist page (every page is in use) and starts with the two meta
  pages, written last with their checksums (meta 1 with the lower txid, as ``Tx.WriteTo`` does).

The output needs ``seek`` (the meta pages go at the front once the root is known).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import BinaryIO

from kvstore.bbolt.errors import BboltError
from kvstore.bbolt.layout import (
    BRANCH_ELEMENT,
    BRANCH_ELEMENT_SIZE,
    BRANCH_PAGE,
    BUCKET_HEADER,
    BUCKET_LEAF_FLAG,
    DEFAULT_PAGE_SIZE,
    FREELIST_PAGE,
    LEAF_ELEMENT,
    LEAF_ELEMENT_SIZE,
    LEAF_PAGE,
    MAX_KEY_SIZE,
    MAX_VALUE_SIZE,
    PAGE_HEADER,
    PAGE_HEADER_SIZE,
    Meta,
    meta_page,
    pages_for,
)


@dataclass
class Nested:
    """A bucket stored under a key of its parent: its items in strictly increasing key order."""

    items: Iterable[tuple[bytes, bytes | Nested]] = ()
    sequence: int = 0


Items = Iterable[tuple[bytes, "bytes | Nested"]]
_Element = tuple[bytes, bytes, int]  # key, value, flags


def _leaf_bytes(elements: list[_Element]) -> bytearray:
    """A leaf page (header id 0, overflow 0) holding elements, not padded."""
    count = len(elements)
    buf = bytearray(PAGE_HEADER.pack(0, LEAF_PAGE, count, 0))
    data_at = PAGE_HEADER_SIZE + count * LEAF_ELEMENT_SIZE
    headers = bytearray()
    for i, (key, value, flags) in enumerate(elements):
        elem_at = PAGE_HEADER_SIZE + i * LEAF_ELEMENT_SIZE
        headers += LEAF_ELEMENT.pack(flags, data_at - elem_at, len(key), len(value))
        data_at += len(key) + len(value)
    buf += headers
    for key, value, _ in elements:
        buf += key
        buf += value
    return buf


def _branch_bytes(children: list[tuple[bytes, int]]) -> bytearray:
    count = len(children)
    buf = bytearray(PAGE_HEADER.pack(0, BRANCH_PAGE, count, 0))
    data_at = PAGE_HEADER_SIZE + count * BRANCH_ELEMENT_SIZE
    for i, (key, pgid) in enumerate(children):
        elem_at = PAGE_HEADER_SIZE + i * BRANCH_ELEMENT_SIZE
        buf += BRANCH_ELEMENT.pack(data_at - elem_at, len(key), pgid)
        data_at += len(key)
    for key, _ in children:
        buf += key
    return buf


@dataclass
class _Leaf:
    """The leaf being filled for one bucket, and the leaves it already wrote."""

    elements: list[_Element] = field(default_factory=list)
    size: int = PAGE_HEADER_SIZE
    written: list[tuple[bytes, int]] = field(default_factory=list)  # (first key, page id)
    nested: bool = False


class Writer:
    def __init__(self, out: BinaryIO, page_size: int = DEFAULT_PAGE_SIZE) -> None:
        if page_size < 1024 or page_size & (page_size - 1):
            raise BboltError(f"page size {page_size} is not a power of two of at least 1024")
        self.out = out
        self.page_size = page_size
        self.next_pgid = 2  # pages 0 and 1 are the meta pages

    def _emit(self, page: bytearray) -> int:
        """Writes page (its header's id and overflow filled in here) at the next free page id."""
        pgid = self.next_pgid
        npages = pages_for(len(page), self.page_size)
        _, flags, count, _ = PAGE_HEADER.unpack_from(page)
        PAGE_HEADER.pack_into(page, 0, pgid, flags, count, npages - 1)
        page += bytes(npages * self.page_size - len(page))
        self.out.write(page)
        self.next_pgid += npages
        return pgid

    def _flush_leaf(self, leaf: _Leaf) -> None:
        first = leaf.elements[0][0] if leaf.elements else b""
        leaf.written.append((first, self._emit(_leaf_bytes(leaf.elements))))
        leaf.elements = []
        leaf.size = PAGE_HEADER_SIZE

    def bucket(self, items: Items, sequence: int = 0, inline_ok: bool = True, label: str = "root") -> bytes:
        """Writes a bucket's pages; returns its value for the parent (header, and page if inline)."""
        leaf = _Leaf()
        last: bytes | None = None
        limit = self.page_size
        for key, value in items:
            if not isinstance(key, bytes | bytearray) or not key:
                raise BboltError(f"bucket {label}: keys must be non-empty bytes, got {key!r}")
            if len(key) > MAX_KEY_SIZE:
                raise BboltError(f"bucket {label}: key of {len(key)} bytes exceeds bbolt's {MAX_KEY_SIZE}")
            if last is not None and key <= last:
                raise BboltError(f"bucket {label}: key {key!r} does not sort after {last!r}")
            last = bytes(key)
            flags = 0
            if isinstance(value, Nested):
                value = self.bucket(value.items, value.sequence, True, f"{label}/{key!r}")
                flags = BUCKET_LEAF_FLAG
                leaf.nested = True
            elif not isinstance(value, bytes | bytearray):
                raise BboltError(f"bucket {label}: value of {key!r} must be bytes or Nested, got {type(value)}")
            if len(value) > MAX_VALUE_SIZE:
                raise BboltError(f"bucket {label}: value of {len(value)} bytes exceeds bbolt's {MAX_VALUE_SIZE}")
            size = LEAF_ELEMENT_SIZE + len(key) + len(value)
            if leaf.elements and leaf.size + size > limit:
                self._flush_leaf(leaf)
            leaf.elements.append((last, bytes(value), flags))
            leaf.size += size
        if inline_ok and not leaf.written and not leaf.nested and leaf.size <= self.page_size // 4:
            return BUCKET_HEADER.pack(0, sequence) + bytes(_leaf_bytes(leaf.elements))
        if leaf.elements or not leaf.written:
            self._flush_leaf(leaf)
        return BUCKET_HEADER.pack(self._branches(leaf.written), sequence)

    def _branches(self, level: list[tuple[bytes, int]]) -> int:
        """Builds branch levels over level (first key, page id) until one root page remains."""
        limit = self.page_size
        while len(level) > 1:
            above: list[tuple[bytes, int]] = []
            group: list[tuple[bytes, int]] = []
            size = PAGE_HEADER_SIZE
            for key, pgid in level:
                elem = BRANCH_ELEMENT_SIZE + len(key)
                if group and size + elem > limit:
                    above.append((group[0][0], self._emit(_branch_bytes(group))))
                    group, size = [], PAGE_HEADER_SIZE
                group.append((key, pgid))
                size += elem
            above.append((group[0][0], self._emit(_branch_bytes(group))))
            level = above
        return level[0][1]

    def finish(self, root_value: bytes, txid: int = 1) -> int:
        """Writes the freelist and both meta pages; returns the file's size in bytes."""
        root, sequence = BUCKET_HEADER.unpack_from(root_value)
        freelist = self._emit(bytearray(PAGE_HEADER.pack(0, FREELIST_PAGE, 0, 0)))
        meta = Meta(self.page_size, root, sequence, freelist, self.next_pgid, txid)
        end = self.out.tell()
        self.out.seek(0)
        self.out.write(meta_page(meta, 0))
        self.out.write(meta_page(Meta(self.page_size, root, sequence, freelist, self.next_pgid, txid - 1), 1))
        self.out.seek(end)
        return self.next_pgid * self.page_size


def write_file(
    out: BinaryIO, buckets: Iterable[tuple[bytes, Nested]], page_size: int = DEFAULT_PAGE_SIZE, txid: int = 1
) -> int:
    """Writes a whole bbolt file holding the top-level buckets (in key order); returns its size.

    out must be positioned at the start of an empty file; it is left positioned at the end.
    """
    if txid < 1:
        raise BboltError(f"txid must be at least 1, not {txid}")
    writer = Writer(out, page_size)
    out.write(bytes(2 * page_size))  # room for the meta pages

    def top_level() -> Iterable[tuple[bytes, Nested]]:
        for name, bucket in buckets:
            if not isinstance(bucket, Nested):
                raise BboltError(f"the top level holds only buckets, but {name!r} is {type(bucket).__name__}")
            yield name, bucket

    root_value = writer.bucket(top_level(), 0, inline_ok=False, label="root")
    return writer.finish(root_value, txid)
