"""Reading a bbolt file: the meta page to trust, buckets (inline and nested), their keys in order,
and an integrity check equivalent to bbolt's ``Tx.Check``.

Nothing here trusts the file: every page id, offset and length is checked against the file and
the meta's high-water mark before it is used, so a torn, truncated or corrupt file raises a
``BboltError`` naming the page and the problem (never an IndexError, a wrong answer or a hang on
a cycle of pages).
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from kvstore.bbolt.errors import BboltError
from kvstore.bbolt.layout import (
    BRANCH_ELEMENT,
    BRANCH_ELEMENT_SIZE,
    BRANCH_PAGE,
    BUCKET_HEADER,
    BUCKET_HEADER_SIZE,
    BUCKET_LEAF_FLAG,
    DEFAULT_PAGE_SIZE,
    FREELIST_PAGE,
    LEAF_ELEMENT,
    LEAF_ELEMENT_SIZE,
    LEAF_PAGE,
    META,
    META_PAGE,
    NO_FREELIST,
    PAGE_HEADER,
    PAGE_HEADER_SIZE,
    PGID,
    Meta,
    page_type,
)

MAX_DEPTH = 64  # a B+tree of 4 KiB pages is never this deep; deeper means a cycle or garbage

Entry = tuple[bytes, bytes, int]  # key, value, element flags


class BoltFile:
    """A read-only view of a whole bbolt file (bytes, or a file mapped into memory)."""

    def __init__(self, data: bytes | mmap.mmap | memoryview, name: str = "") -> None:
        self.name = name
        self._map: mmap.mmap | None = data if isinstance(data, mmap.mmap) else None
        self.data = memoryview(data)
        try:
            self._validate()
        except BaseException:
            self.data.release()  # so that whoever owns the mapping can close it
            raise

    def _validate(self) -> None:
        self.meta = self._choose_meta()
        self.page_size = self.meta.page_size
        need = self.meta.pgid * self.page_size
        if len(self.data) < need:
            raise self.error(
                f"file is truncated: the meta page says {self.meta.pgid} pages ({need} bytes) are in use, "
                f"but the file has {len(self.data)} bytes"
            )
        if self.meta.root < 2 or self.meta.root >= self.meta.pgid:
            raise self.error(f"root bucket page {self.meta.root} is outside the pages in use (2..{self.meta.pgid - 1})")
        if self.meta.freelist != NO_FREELIST and not 2 <= self.meta.freelist < self.meta.pgid:
            raise self.error(f"freelist page {self.meta.freelist} is outside the pages in use")

    @classmethod
    def open(cls, path: Path | str) -> BoltFile:
        """Maps the file at path read-only (close() unmaps it)."""
        path = Path(path)
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise BboltError("file is empty", file=str(path))
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            return cls(mapped, str(path))
        except BaseException:
            mapped.close()
            raise

    def attach(self, owner: mmap.mmap) -> None:
        """Makes close() close owner too (data is a view of it)."""
        self._map = owner

    def close(self) -> None:
        """Releases the mapping. A view still held elsewhere (an iterator left half-way) keeps it
        alive until that view is garbage, which then frees it."""
        try:
            self.data.release()
            if self._map is not None:
                self._map.close()
        except BufferError:
            pass
        self._map = None

    def __enter__(self) -> BoltFile:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def error(self, problem: str, page: int | None = None) -> BboltError:
        return BboltError(problem, page, self.name or None)

    # ---- meta ----

    def _read_meta(self, page_id: int, page_size: int) -> tuple[Meta | None, str]:
        start = page_id * page_size
        end = start + PAGE_HEADER_SIZE + META.size
        if len(self.data) < end:
            return None, f"the file ({len(self.data)} bytes) is too short to hold it"
        _, flags, _, _ = PAGE_HEADER.unpack_from(self.data, start)
        raw = self.data[start + PAGE_HEADER_SIZE : end]
        meta = Meta.unpack(raw)
        problem = meta.problem(raw)
        if problem is None and not flags & META_PAGE:
            problem = f"page type is {page_type(flags)}, not meta"
        if problem is None and meta.page_size != page_size:
            problem = f"page size {meta.page_size} differs from {page_size}"
        return (meta, "") if problem is None else (None, problem)

    def _choose_meta(self) -> Meta:
        """The valid meta page with the higher txid (bbolt's DB.meta)."""
        meta0, why0 = self._read_meta(0, DEFAULT_PAGE_SIZE)
        page_size = DEFAULT_PAGE_SIZE
        if meta0 is None and len(self.data) >= PAGE_HEADER_SIZE + META.size:
            # meta 0 is damaged: its page size field may still say where meta 1 is
            guess = Meta.unpack(self.data[PAGE_HEADER_SIZE : PAGE_HEADER_SIZE + META.size]).page_size
            if guess in (1024, 2048, 4096, 8192, 16384, 32768, 65536):
                page_size = guess
        elif meta0 is not None:
            page_size = meta0.page_size
        meta1, why1 = self._read_meta(1, page_size)
        candidates = [m for m in (meta0, meta1) if m is not None]
        if not candidates:
            raise self.error(f"no valid meta page (meta 0: {why0}; meta 1: {why1})")
        return max(candidates, key=lambda m: m.txid)

    # ---- pages ----

    def page(self, pgid: int) -> tuple[int, int, memoryview]:
        """(flags, count, bytes of the page and its overflow) of page pgid, checked."""
        if pgid < 2 or pgid >= self.meta.pgid:
            raise self.error(f"page id {pgid} is outside the pages in use (2..{self.meta.pgid - 1})")
        ps = self.page_size
        start = pgid * ps
        page_id, flags, count, overflow = PAGE_HEADER.unpack_from(self.data, start)
        if page_id != pgid:
            raise self.error(f"page header says it is page {page_id}", pgid)
        if pgid + overflow >= self.meta.pgid:
            raise self.error(f"overflow of {overflow} pages runs past the pages in use ({self.meta.pgid})", pgid)
        return flags, count, self.data[start : start + (overflow + 1) * ps]

    def overflow(self, pgid: int) -> int:
        return PAGE_HEADER.unpack_from(self.data, pgid * self.page_size)[3]

    def root(self) -> Bucket:
        return Bucket(self, self.meta.root, self.meta.root_sequence, None, "root bucket")

    def size(self) -> int:
        """Bytes in use (bbolt's Tx.Size): the high-water mark times the page size."""
        return self.meta.pgid * self.page_size

    def freelist(self) -> list[int]:
        """The free page ids the freelist page records (empty when it was not written)."""
        if self.meta.freelist == NO_FREELIST:
            return []
        pgid = self.meta.freelist
        flags, count, buf = self.page(pgid)
        if not flags & FREELIST_PAGE:
            raise self.error(f"meta points at a {page_type(flags)} page as the freelist", pgid)
        start = PAGE_HEADER_SIZE
        if count == 0xFFFF:
            if len(buf) < start + 8:
                raise self.error("freelist count does not fit in the page", pgid)
            count = PGID.unpack_from(buf, start)[0]
            start += 8
        if start + 8 * count > len(buf):
            raise self.error(f"freelist of {count} ids does not fit in {len(buf)} bytes", pgid)
        return [PGID.unpack_from(buf, start + 8 * i)[0] for i in range(count)]

    # ---- the integrity check (bbolt's Tx.Check) ----

    def check(self) -> list[str]:
        """Every problem found: double-freed pages, pages referenced twice, freed pages in use,
        pages of the wrong type, pages neither reachable nor free, and any damage met on the way."""
        problems: list[str] = []
        try:
            free = self.freelist()
        except BboltError as exc:
            return [str(exc)]
        freed: set[int] = set()
        for pgid in free:
            if pgid in freed:
                problems.append(f"page {pgid}: already freed")
            freed.add(pgid)
        reachable: set[int] = {0, 1}
        if self.meta.freelist != NO_FREELIST:
            reachable.update(range(self.meta.freelist, self.meta.freelist + self.overflow(self.meta.freelist) + 1))
        try:
            self._check_bucket(self.root(), reachable, freed, problems)
        except BboltError as exc:
            problems.append(str(exc))
            return problems
        if self.meta.freelist != NO_FREELIST:  # without a freelist, what is unreachable is free
            for pgid in range(self.meta.pgid):
                if pgid not in reachable and pgid not in freed:
                    problems.append(f"page {pgid}: unreachable unfreed")
        return problems

    def _check_bucket(
        self, bucket: Bucket, reachable: set[int], freed: set[int], problems: list[str], depth: int = 0
    ) -> None:
        if depth > MAX_DEPTH:
            problems.append(f"{bucket.label}: buckets nested deeper than {MAX_DEPTH} levels")
            return
        for pgid in bucket.page_ids():
            for pid in range(pgid, pgid + self.overflow(pgid) + 1):
                if pid in reachable:
                    problems.append(f"page {pid}: multiple references")
                reachable.add(pid)
            if pgid in freed:
                problems.append(f"page {pgid}: reachable freed")
        for _key, child in bucket.buckets():
            if child.root and child.root in reachable:  # another bucket's tree (a loop of buckets)
                problems.append(f"page {child.root}: multiple references ({child.label}'s root)")
                continue
            self._check_bucket(child, reachable, freed, problems, depth + 1)


class Bucket:
    """One bucket: a B+tree of pages rooted at ``root``, or (root 0) one inline leaf page."""

    def __init__(self, db: BoltFile, root: int, sequence: int, inline: memoryview | None, label: str) -> None:
        self.db = db
        self.root = root
        self.sequence = sequence
        self.inline = inline
        self.label = label

    def __repr__(self) -> str:
        return f"Bucket({self.label}, root={self.root}, sequence={self.sequence})"

    # ---- walking ----

    def entries(self) -> Iterator[Entry]:
        """(key, value, flags) of every element, in key order (keys checked strictly increasing)."""
        last: bytes | None = None
        for key, value, flags in self._walk(None):
            if last is not None and key <= last:
                raise self.db.error(f"{self.label}: key {key!r} does not sort after {last!r}")
            last = key
            yield key, value, flags

    def page_ids(self) -> list[int]:
        """Every page this bucket's tree uses (not its sub-buckets'); empty for an inline bucket."""
        pages: list[int] = []
        for _ in self._walk(pages):
            pass
        return pages

    def _walk(self, pages: list[int] | None) -> Iterator[Entry]:
        if self.root == 0:
            if self.inline is None:
                raise self.db.error(f"{self.label}: inline bucket without a page")
            yield from _leaf_entries(self.db, self.inline, None, self.label)
            return
        seen: set[int] = set()
        stack: list[tuple[int, int]] = [(self.root, 0)]
        while stack:
            pgid, depth = stack.pop()
            if pgid in seen:
                raise self.db.error(f"{self.label}: page referenced twice (a cycle or a shared page)", pgid)
            if depth > MAX_DEPTH:
                raise self.db.error(f"{self.label}: tree deeper than {MAX_DEPTH} levels", pgid)
            seen.add(pgid)
            if pages is not None:
                pages.append(pgid)
            flags, count, buf = self.db.page(pgid)
            if flags & LEAF_PAGE:
                yield from _leaf_entries(self.db, buf, pgid, self.label)
            elif flags & BRANCH_PAGE:
                children = _branch_children(self.db, buf, count, pgid, self.label)
                stack.extend((child, depth + 1) for child in reversed(children))
            else:
                raise self.db.error(f"{self.label}: invalid type {page_type(flags)} in a bucket's tree", pgid)

    # ---- convenience ----

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) of every plain key (nested buckets skipped)."""
        for key, value, flags in self.entries():
            if not flags & BUCKET_LEAF_FLAG:
                yield key, value

    def get(self, key: bytes) -> bytes | None:
        for k, v, flags in self.entries():
            if k == key:
                return None if flags & BUCKET_LEAF_FLAG else v
            if k > key:
                return None
        return None

    def buckets(self) -> Iterator[tuple[bytes, Bucket]]:
        for key, value, flags in self.entries():
            if flags & BUCKET_LEAF_FLAG:
                yield key, self._child(key, value)

    def bucket(self, name: bytes) -> Bucket | None:
        for key, value, flags in self.entries():
            if key == name:
                return self._child(key, value) if flags & BUCKET_LEAF_FLAG else None
            if key > name:
                return None
        return None

    def _child(self, key: bytes, value: bytes) -> Bucket:
        label = f"bucket {key!r}" if self.label == "root bucket" else f"{self.label}/{key!r}"
        if len(value) < BUCKET_HEADER_SIZE:
            raise self.db.error(f"{label}: bucket header of {len(value)} bytes (want {BUCKET_HEADER_SIZE})")
        root, sequence = BUCKET_HEADER.unpack_from(value)
        if root == 0:
            return Bucket(self.db, 0, sequence, memoryview(value)[BUCKET_HEADER_SIZE:], label)
        return Bucket(self.db, root, sequence, None, label)


def _leaf_entries(db: BoltFile, buf: memoryview, pgid: int | None, label: str) -> Iterator[Entry]:
    where = label if pgid is not None else f"{label} (inline page)"
    if len(buf) < PAGE_HEADER_SIZE:
        raise db.error(f"{where}: inline page of {len(buf)} bytes has no header", pgid)
    _, flags, count, _ = PAGE_HEADER.unpack_from(buf)
    if not flags & LEAF_PAGE:
        raise db.error(f"{where}: expected a leaf page, found {page_type(flags)}", pgid)
    end = len(buf)
    if PAGE_HEADER_SIZE + count * LEAF_ELEMENT_SIZE > end:
        raise db.error(f"{where}: {count} elements do not fit in {end} bytes", pgid)
    out = []
    for i in range(count):
        at = PAGE_HEADER_SIZE + i * LEAF_ELEMENT_SIZE
        eflags, pos, ksize, vsize = LEAF_ELEMENT.unpack_from(buf, at)
        start = at + pos
        if ksize == 0:
            raise db.error(f"{where}: element {i} has an empty key", pgid)
        if pos < LEAF_ELEMENT_SIZE or start + ksize + vsize > end:
            raise db.error(f"{where}: element {i} (key {ksize} bytes, value {vsize}) lies outside the page", pgid)
        out.append((bytes(buf[start : start + ksize]), bytes(buf[start + ksize : start + ksize + vsize]), eflags))
    yield from out


def _branch_children(db: BoltFile, buf: memoryview, count: int, pgid: int, label: str) -> list[int]:
    end = len(buf)
    if count == 0:
        raise db.error(f"{label}: branch page with no elements", pgid)
    if PAGE_HEADER_SIZE + count * BRANCH_ELEMENT_SIZE > end:
        raise db.error(f"{label}: {count} branch elements do not fit in {end} bytes", pgid)
    children = []
    last: bytes | None = None
    for i in range(count):
        at = PAGE_HEADER_SIZE + i * BRANCH_ELEMENT_SIZE
        pos, ksize, child = BRANCH_ELEMENT.unpack_from(buf, at)
        if ksize == 0 or pos < BRANCH_ELEMENT_SIZE or at + pos + ksize > end:
            raise db.error(f"{label}: branch element {i} lies outside the page", pgid)
        key = bytes(buf[at + pos : at + pos + ksize])
        if last is not None and key <= last:
            raise db.error(f"{label}: branch keys out of order at element {i}", pgid)
        last = key
        children.append(child)
    return children
