"""Header blocks: decoding requests through the ``hpack`` library with a per-connection cache, and
encoding responses into blocks that never touch the peer's dynamic table.

Decoding
--------
``RequestDecoder.decode(block)`` turns a complete request header block into a validated ``Request``
(RFC 9113 §8.2 and §8.3.1). The ``hpack.Decoder`` holds the connection's dynamic table, so every
block must reach it in order unless skipping it provably changes nothing. The cache maps a block's
raw bytes to the ``Request`` it decoded to, and is used under these rules:

1. Before a block is decoded, ``classify`` walks its representations (RFC 7541 §6) without
   decoding any string: an *indexed field* (``1xxxxxxx``), a *literal without indexing*
   (``0000xxxx``) or a *never-indexed literal* (``0001xxxx``) leaves the dynamic table as it is; a
   *literal with incremental indexing* (``01xxxxxx``) inserts and a *dynamic table size update*
   (``001xxxxx``) resizes. A block with either of the last two, or that ``classify`` cannot walk to
   its end, is ``MUTATING``: it is always decoded by ``hpack`` and never cached, and decoding it
   advances ``generation``.
2. A non-mutating block whose indices (of indexed fields and of literal names) are all at most 61
   refers to the static table only (RFC 7541 Appendix A): it is ``STATIC``, and what it decodes to
   depends on its bytes alone, forever. It is cached with no generation.
3. A non-mutating block with an index above 61 refers to the dynamic table: it is ``DYNAMIC``, and
   it is cached with the ``generation`` in force when it was decoded.
4. A cached entry is used only for the same bytes, and (rule 3) only while ``generation`` is unchanged.

Why this is exactly what decoding would give: the dynamic table changes only while a block with an
insertion or a size update is decoded (this side never changes its SETTINGS_HEADER_TABLE_SIZE, so
no setting resizes it), and by rule 1 each of those is decoded and bumps ``generation``. So while
``generation`` is unchanged the table holds the same entries as when a DYNAMIC entry was cached, and
decoding the same bytes against the same table gives the same fields; a STATIC block does not read
the table at all. And skipping a block is harmless because a non-mutating block leaves the table
(``hpack``'s only decoder state besides its fixed limits) as it found it: the table after a hit is
the table after a decode. A block that fails to decode ends the connection and is never cached.
The cache holds at most ``CACHE_ENTRIES`` blocks of at most ``CACHE_BLOCK_BYTES`` each.

Encoding
--------
``encode_block`` emits only indexed fields from the static table and never-indexed literals, so
the peer's dynamic table stays empty and a block encoded once is valid on every connection, for
ever: responses are sent from blocks built once (see ``frontend.grpc``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import hpack

STATIC_ENTRIES = 61
CACHE_ENTRIES = 256
CACHE_BLOCK_BYTES = 1024
HEADER_ENTRY_OVERHEAD = 32  # RFC 9113 §6.5.2: a field's size is name + value + 32

MUTATING = 0
STATIC = 1
DYNAMIC = 2

_CONNECTION_SPECIFIC = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"))
_REQUEST_PSEUDO = frozenset((b":method", b":scheme", b":authority", b":path"))
_BAD_VALUE_BYTES = frozenset(b"\x00\r\n")


class HeaderBlockError(Exception):
    """The peer's header block cannot be decoded: the HPACK state is lost (COMPRESSION_ERROR)."""


class HeaderListTooLarge(Exception):
    """The decoded header list is larger than this side accepts."""

    def __init__(self, size: int) -> None:
        super().__init__(f"header list of {size} bytes")
        self.size = size


class MalformedHeaders(Exception):
    """The header list breaks RFC 9113 §8.2/§8.3 (a malformed request: stream PROTOCOL_ERROR)."""


@dataclass(frozen=True, slots=True)
class Request:
    """A validated request header list. ``headers`` are the regular fields, names lowercase, in order."""

    method: bytes
    scheme: bytes
    path: bytes
    authority: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    size: int

    def get(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


def _integer(block: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
    """RFC 7541 §5.1 integer at pos; IndexError if the block ends inside it."""
    mask = (1 << prefix_bits) - 1
    value = block[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    while True:
        byte = block[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos
        if shift > 28:
            raise IndexError("integer too long")


def _skip_string(block: bytes, pos: int) -> int:
    length, pos = _integer(block, pos, 7)
    end = pos + length
    if end > len(block):
        raise IndexError("string past the block")
    return end


def classify(block: bytes) -> int:
    """MUTATING, STATIC or DYNAMIC (see the module docstring); MUTATING if the block cannot be walked."""
    dynamic = False
    pos = 0
    end = len(block)
    try:
        while pos < end:
            byte = block[pos]
            if byte & 0x80:
                index, pos = _integer(block, pos, 7)
                if index == 0:
                    return MUTATING  # an error: let hpack report it
                if index > STATIC_ENTRIES:
                    dynamic = True
            elif byte & 0x60:
                return MUTATING  # 01xxxxxx insertion or 001xxxxx size update
            else:
                index, pos = _integer(block, pos, 4)
                if index == 0:
                    pos = _skip_string(block, pos)
                elif index > STATIC_ENTRIES:
                    dynamic = True
                pos = _skip_string(block, pos)
    except IndexError:
        return MUTATING
    return DYNAMIC if dynamic else STATIC


def parse_request(fields: Iterable[tuple[bytes, bytes]], max_size: int) -> Request:
    """Validates a decoded request header list (RFC 9113 §8.2, §8.3.1) into a Request."""
    pseudo: dict[bytes, bytes] = {}
    regular: list[tuple[bytes, bytes]] = []
    size = 0
    for name, value in fields:
        size += len(name) + len(value) + HEADER_ENTRY_OVERHEAD
        if not name:
            raise MalformedHeaders("empty field name")
        if name != name.lower():
            raise MalformedHeaders(f"uppercase field name {name!r}")
        if _BAD_VALUE_BYTES.intersection(value) or (value and (value[0] in b" \t" or value[-1] in b" \t")):
            raise MalformedHeaders(f"invalid value of {name!r}")
        if name[0] == 0x3A:  # ':'
            if regular:
                raise MalformedHeaders("pseudo-header after a regular field")
            if name not in _REQUEST_PSEUDO:
                raise MalformedHeaders(f"unknown pseudo-header {name!r}")
            if name in pseudo:
                raise MalformedHeaders(f"repeated pseudo-header {name!r}")
            pseudo[name] = value
            continue
        if name in _CONNECTION_SPECIFIC:
            raise MalformedHeaders(f"connection-specific field {name!r}")
        if name == b"te" and value != b"trailers":
            raise MalformedHeaders("te other than trailers")
        regular.append((name, value))
    if size > max_size:
        raise HeaderListTooLarge(size)
    method = pseudo.get(b":method")
    if method is None:
        raise MalformedHeaders("no :method")
    if method == b"CONNECT":
        raise MalformedHeaders("CONNECT is not served")
    scheme = pseudo.get(b":scheme")
    path = pseudo.get(b":path")
    if not scheme or not path:
        raise MalformedHeaders("no :scheme or :path")
    return Request(method, scheme, path, pseudo.get(b":authority", b""), tuple(regular), size)


def check_trailers(fields: Iterable[tuple[bytes, bytes]]) -> None:
    for name, _ in fields:
        if name[:1] == b":":
            raise MalformedHeaders("pseudo-header in trailers")
        if name != name.lower():
            raise MalformedHeaders(f"uppercase field name {name!r}")


class RequestDecoder:
    """One connection's HPACK decoding state and its cache of decoded request blocks."""

    def __init__(self, max_header_list_size: int) -> None:
        self.max_header_list_size = max_header_list_size
        # hpack stops decoding (and the connection ends) far past the size a request may have: a
        # few bytes of indices can expand to kilobytes each
        self._hpack = hpack.Decoder(max_header_list_size=4 * max_header_list_size + 4096)
        self.generation = 0
        self._cache: dict[bytes, tuple[int | None, Request]] = {}
        self.hits = 0

    def _fields(self, block: bytes) -> list[tuple[bytes, bytes]]:
        try:
            return self._hpack.decode(block, raw=True)  # type: ignore[return-value]
        except hpack.OversizedHeaderListError as exc:
            raise HeaderBlockError(f"header list too large to decode: {exc}") from exc
        except (hpack.HPACKError, ValueError, IndexError, UnicodeDecodeError) as exc:
            raise HeaderBlockError(str(exc) or type(exc).__name__) from exc

    def decode_fields(self, block: bytes) -> list[tuple[bytes, bytes]]:
        """Decodes a block that is not a request (trailers, refused or ignored streams), keeping the state."""
        kind = classify(block)
        fields = self._fields(block)
        if kind == MUTATING:
            self.generation += 1
        return fields

    def decode(self, block: bytes) -> Request:
        """The block's Request; MalformedHeaders or HeaderListTooLarge leave the HPACK state in step."""
        cached = self._cache.get(block)
        if cached is not None:
            generation, request = cached
            if generation is None or generation == self.generation:
                self.hits += 1
                return request
        kind = classify(block)
        fields = self._fields(block)
        if kind == MUTATING:
            self.generation += 1
        request = parse_request(fields, self.max_header_list_size)
        if kind != MUTATING and len(block) <= CACHE_BLOCK_BYTES:
            cache = self._cache
            if len(cache) >= CACHE_ENTRIES:
                cache.clear()
            cache[bytes(block)] = (None if kind == STATIC else self.generation, request)
        return request


_encoder = hpack.Encoder()


def encode_block(fields: Iterable[tuple[str, str]]) -> bytes:
    """A header block of static-table references and never-indexed literals (the peer's table stays empty)."""
    block = _encoder.encode([hpack.NeverIndexedHeaderTuple(name, value) for name, value in fields], huffman=True)
    if _encoder.header_table.dynamic_entries:  # pragma: no cover - hpack never indexes never-indexed fields
        raise AssertionError("hpack inserted into the dynamic table")
    return block
