"""JSON as Go's ``encoding/json`` reads and writes it, byte for byte, for the gateway's codec.

etcd's gateway decodes request bodies with Go's ``json.Decoder`` and ``jsonpb``; clients see Go's
error strings (``invalid character 'x' looking for beginning of value``, ``unexpected EOF``,
``json: cannot unmarshal number 1.5 into Go value of type int64``, ``illegal base64 data at input
byte 4``). This module reproduces them: a scanner with the states and messages of Go's
``scanner.go`` (regular expressions take the long runs: strings, digits, whitespace), a stream
``Decoder`` of successive values, Go's ``json.Unmarshal`` into the scalar types jsonpb hands it,
Go's standard base64 decoding (with its error offsets), and Go's string encoding (HTML-safe).
"""

from __future__ import annotations

import base64
import json
import re
import unicodedata

MAX_DEPTH = 10000  # Go's maxNestingDepth

_WS = re.compile(rb"[ \t\r\n]*")
_STR_RUN = re.compile(rb'[^"\\\x00-\x1f]*')
_DIGITS = re.compile(rb"[0-9]*")
_HEX = b"0123456789abcdefABCDEF"


class GoJSONError(Exception):
    """A decoding error, with Go's message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Incomplete(Exception):
    """The input ended inside a value."""


# ---- Go's strconv.Quote, as the scanner and jsonpb use it in messages ----


def _go_printable(cp: int) -> bool:
    if cp < 0x80:
        return 0x20 <= cp < 0x7F
    cat = unicodedata.category(chr(cp))
    return cat[0] in "LMNPS" or cp == 0x20


def _quote_rune(cp: int, quote: str) -> str:
    ch = chr(cp)
    if ch == quote or ch == "\\":
        return "\\" + ch
    if _go_printable(cp):
        return ch
    special = {7: "\\a", 8: "\\b", 0xC: "\\f", 0xA: "\\n", 0xD: "\\r", 9: "\\t", 0xB: "\\v"}.get(cp)
    if special is not None:
        return special
    if cp < 0x20 or cp == 0x7F:
        return f"\\x{cp:02x}"
    if cp < 0x10000:
        return f"\\u{cp:04x}"
    return f"\\U{cp:08x}"


def go_quote(data: bytes) -> str:
    """strconv.Quote of data (a Go string of these bytes): invalid UTF-8 bytes as \\xNN."""
    out = ['"']
    text = data.decode("utf-8", "surrogateescape")
    for ch in text:
        cp = ord(ch)
        if 0xDC80 <= cp <= 0xDCFF:  # an undecodable byte
            out.append(f"\\x{cp - 0xDC00:02x}")
        else:
            out.append(_quote_rune(cp, '"'))
    out.append('"')
    return "".join(out)


def quote_char(c: int) -> str:
    """Go's scanner quoteChar: a byte as a quoted character (a byte >= 0x80 as the rune U+00XX)."""
    if c == 0x27:
        return "'\\''"
    if c == 0x22:
        return "'\"'"
    return "'" + _quote_rune(c, '"') + "'"


def _invalid(c: int, context: str) -> GoJSONError:
    return GoJSONError(f"invalid character {quote_char(c)} {context}")


# ---- the scanner ----


class _Scanner:
    """Validates one value of data from i (Go's scanner states and messages); collects object members."""

    __slots__ = ("data", "n")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.n = len(data)

    def byte(self, j: int) -> int:
        if j >= self.n:
            raise _Incomplete()
        return self.data[j]

    def value(self, i: int) -> int:
        """The end of the value starting at i (after whitespace); containers kept on a stack, not
        in recursion, so Go's depth limit is the only one."""
        data = self.data
        stack: list[int] = []  # 0x7B for an object, 0x5B for an array
        j = i
        while True:
            j = _WS.match(data, j).end()
            c = self.byte(j)
            if c == 0x7B or c == 0x5B:
                if len(stack) >= MAX_DEPTH:
                    raise _invalid(c, "exceeded max depth")
                k = _WS.match(data, j + 1).end()
                close = self.byte(k)
                if close == c + 2:  # {} or []: an empty container is a whole value
                    j = k + 1
                else:
                    stack.append(c)
                    j = self._key(k) if c == 0x7B else k
                    continue
            elif c == 0x22:
                j = self.string(j)
            elif c == 0x2D or 0x30 <= c <= 0x39:
                j = self.number(j)
            elif c == 0x74:
                j = self.literal(j, b"true")
            elif c == 0x66:
                j = self.literal(j, b"false")
            elif c == 0x6E:
                j = self.literal(j, b"null")
            else:
                raise _invalid(c, "looking for beginning of value")
            # a value ended at j: close containers until one wants another value
            while True:
                if not stack:
                    return j
                j = _WS.match(data, j).end()
                c = self.byte(j)
                if stack[-1] == 0x7B:
                    if c == 0x2C:
                        j = self._key(_WS.match(data, j + 1).end())
                        break
                    if c == 0x7D:
                        stack.pop()
                        j += 1
                        continue
                    raise _invalid(c, "after object key:value pair")
                if c == 0x2C:
                    j += 1
                    break
                if c == 0x5D:
                    stack.pop()
                    j += 1
                    continue
                raise _invalid(c, "after array element")

    def _key(self, j: int) -> int:
        """Reads `"key" :` at j; returns where the value starts."""
        c = self.byte(j)
        if c != 0x22:
            raise _invalid(c, "looking for beginning of object key string")
        j = _WS.match(self.data, self.string(j)).end()
        c = self.byte(j)
        if c != 0x3A:
            raise _invalid(c, "after object key")
        return j + 1

    def object(self, i: int, members: list[tuple[int, int, int, int]]) -> None:
        """The members of the (valid) object at i: (key start, key end, value start, value end)."""
        data = self.data
        j = _WS.match(data, i + 1).end()
        if data[j] == 0x7D:
            return
        while True:
            key_start = j
            key_end = self.string(j)
            v_start = _WS.match(data, _WS.match(data, key_end).end() + 1).end()
            j = self.value(v_start)
            members.append((key_start, key_end, v_start, j))
            j = _WS.match(data, j).end()
            if data[j] == 0x7D:
                return
            j = _WS.match(data, j + 1).end()

    def array(self, i: int, items: list[tuple[int, int]]) -> None:
        """The elements of the (valid) array at i: (start, end)."""
        data = self.data
        j = _WS.match(data, i + 1).end()
        if data[j] == 0x5D:
            return
        while True:
            start = _WS.match(data, j).end()
            j = self.value(start)
            items.append((start, j))
            j = _WS.match(data, j).end()
            if data[j] == 0x5D:
                return
            j += 1

    def string(self, i: int) -> int:
        data = self.data
        j = i + 1
        while True:
            j = _STR_RUN.match(data, j).end()
            c = self.byte(j)
            if c == 0x22:
                return j + 1
            if c == 0x5C:
                e = self.byte(j + 1)
                if e in b'bfnrt\\/"':
                    j += 2
                    continue
                if e == 0x75:
                    for k in range(2, 6):
                        h = self.byte(j + k)
                        if h not in _HEX:
                            raise _invalid(h, "in \\u hexadecimal character escape")
                    j += 6
                    continue
                raise _invalid(e, "in string escape code")
            raise _invalid(c, "in string literal")

    def number(self, i: int) -> int:
        data = self.data
        n = self.n
        j = i
        if data[j] == 0x2D:
            j += 1
            c = self.byte(j)
            if not 0x30 <= c <= 0x39:
                raise _invalid(c, "in numeric literal")
        j = j + 1 if data[j] == 0x30 else _DIGITS.match(data, j).end()
        if j < n and data[j] == 0x2E:
            c = self.byte(j + 1)
            if not 0x30 <= c <= 0x39:
                raise _invalid(c, "after decimal point in numeric literal")
            j = _DIGITS.match(data, j + 1).end()
        if j < n and data[j] in b"eE":
            j += 1
            c = self.byte(j)
            if c in b"+-":
                j += 1
                c = self.byte(j)
            if not 0x30 <= c <= 0x39:
                raise _invalid(c, "in exponent of numeric literal")
            j = _DIGITS.match(data, j).end()
        return j

    def literal(self, i: int, word: bytes) -> int:
        for k in range(1, len(word)):
            c = self.byte(i + k)
            if c != word[k]:
                raise _invalid(c, f"in literal {word.decode()} (expecting {quote_char(word[k])})")
        return i + len(word)


def check_valid(data: bytes) -> None:
    """Go's checkValid: data must be exactly one JSON value (whitespace around it allowed)."""
    scanner = _Scanner(data)
    try:
        end = scanner.value(0)
    except _Incomplete:
        raise GoJSONError("unexpected end of JSON input") from None
    end = _WS.match(data, end).end()
    if end < len(data):
        raise _invalid(data[end], "after top-level value")


def members(raw: bytes) -> dict[str, bytes]:
    """The members of a valid JSON object, key (unquoted) to raw value; a repeated key: the last wins."""
    found: list[tuple[int, int, int, int]] = []
    _Scanner(raw).object(0, found)
    return {_unquote(raw[ks:ke]): raw[vs:ve] for ks, ke, vs, ve in found}


def items(raw: bytes) -> list[bytes]:
    """The elements of a valid JSON array, raw."""
    found: list[tuple[int, int]] = []
    _Scanner(raw).array(0, found)
    return [raw[s:e] for s, e in found]


def _unquote(raw: bytes) -> str:
    return json.loads(raw)


def kind(raw: bytes) -> str:
    """Go's name for the kind of a valid raw value, as UnmarshalTypeError spells it."""
    c = raw[0]
    if c == 0x7B:
        return "object"
    if c == 0x5B:
        return "array"
    if c == 0x22:
        return "string"
    if c in (0x74, 0x66):
        return "bool"
    if c == 0x6E:
        return "null"
    return "number"


def type_error(value: str, go_type: str) -> GoJSONError:
    return GoJSONError(f"json: cannot unmarshal {value} into Go value of type {go_type}")


# ---- the stream decoder ----


class UnexpectedEOF(GoJSONError):
    def __init__(self) -> None:
        super().__init__("unexpected EOF")


class Decoder:
    """Go's json.Decoder over a body that arrives in pieces: ``next_value`` gives each value's raw bytes.

    ``next_value`` returns None while the next value is not complete yet, raises EOFError at a clean
    end (nothing but whitespace left once ``end`` was called), UnexpectedEOF at an end inside a value
    and GoJSONError at a syntax error (after which every call raises it again, as Go's does).
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._eof = False
        self._error: GoJSONError | None = None

    def feed(self, data: bytes) -> None:
        self._buf += data

    def end(self) -> None:
        self._eof = True

    def next_value(self) -> bytes | None:
        if self._error is not None:
            raise self._error
        buf = bytes(self._buf)
        start = _WS.match(buf).end()
        if start >= len(buf):
            del self._buf[:start]
            if self._eof:
                raise EOFError()
            return None
        try:
            end = _Scanner(buf).value(start)
        except _Incomplete:
            if self._eof:
                self._error = UnexpectedEOF()
                raise self._error from None
            return None
        except GoJSONError as exc:
            self._error = exc
            raise
        if end == len(buf) and not self._eof and buf[start] not in b'{["tfn':
            return None  # a number may go on in the next piece
        del self._buf[:end]
        return buf[start:end]


# ---- Go's json.Unmarshal into scalars ----


def unmarshal_int(raw: bytes, bits: int, signed: bool, go_type: str, default: int = 0) -> int:
    """json.Unmarshal(raw, &int64 / uint64 / int32 / ...): default for null."""
    check_valid(raw)
    raw = raw.strip(b" \t\r\n")
    k = kind(raw)
    if k == "null":
        return default
    if k != "number":
        raise type_error(k, go_type)
    text = raw.decode("ascii")
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if text.lstrip("-").isdigit() and (signed or not text.startswith("-")):
        value = int(text)
        if lo <= value <= hi:
            return value
    raise type_error("number " + text, go_type)


def unmarshal_bool(raw: bytes) -> bool:
    check_valid(raw)
    raw = raw.strip(b" \t\r\n")
    k = kind(raw)
    if k == "null":
        return False
    if k != "bool":
        raise type_error(k, "bool")
    return raw == b"true"


def unmarshal_string(raw: bytes) -> str:
    check_valid(raw)
    raw = raw.strip(b" \t\r\n")
    k = kind(raw)
    if k == "null":
        return ""
    if k != "string":
        raise type_error(k, "string")
    return _unquote(raw)


def unmarshal_bytes(raw: bytes) -> bytes | None:
    """json.Unmarshal(raw, &[]byte): base64 (Go's standard encoding) or an array of bytes; None for null."""
    check_valid(raw)
    raw = raw.strip(b" \t\r\n")
    k = kind(raw)
    if k == "null":
        return None
    if k == "string":
        return std_b64decode(_unquote(raw).encode("utf-8", "surrogatepass"))
    if k == "array":
        out = bytearray()
        first: GoJSONError | None = None
        for item in items(raw):
            try:
                out.append(unmarshal_int(item, 8, False, "uint8"))
            except GoJSONError as exc:  # Go keeps the first error and goes on
                first = first or exc
                out.append(0)
        if first is not None:
            raise first
        return bytes(out)
    raise type_error(k, "[]uint8")


_B64_VALID = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_B64_MAP = {c: i for i, c in enumerate(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def std_b64decode(src: bytes) -> bytes:
    """Go's base64.StdEncoding.Decode: padded, \\r and \\n skipped, errors at Go's offsets."""
    if _B64_VALID.fullmatch(src):
        return base64.b64decode(src)
    out = bytearray()
    si = 0
    n = len(src)
    while si < n:
        si, chunk, err = _quantum(src, si)
        out += chunk
        if err is not None:
            raise GoJSONError(f"illegal base64 data at input byte {err}")
    return bytes(out)


def _quantum(src: bytes, si: int) -> tuple[int, bytes, int | None]:
    """Go's decodeQuantum: (next si, decoded bytes, error offset or None)."""
    n = len(src)
    dbuf = [0, 0, 0, 0]
    dlen = 4
    err: int | None = None
    j = 0
    while j < 4:
        if si == n:
            if j == 0:
                return si, b"", None
            return si, b"", si - j  # padding is required
        c = src[si]
        si += 1
        v = _B64_MAP.get(c)
        if v is not None:
            dbuf[j] = v
            j += 1
            continue
        if c in (0x0A, 0x0D):
            continue
        if c != 0x3D:
            return si, b"", si - 1
        if j in (0, 1):
            return si, b"", si - 1
        if j == 2:
            while si < n and src[si] in (0x0A, 0x0D):
                si += 1
            if si == n:
                return si, b"", n
            if src[si] != 0x3D:
                return si, b"", si - 1
            si += 1
        while si < n and src[si] in (0x0A, 0x0D):
            si += 1
        if si < n:
            err = si
        dlen = j
        break
    val = (dbuf[0] << 18) | (dbuf[1] << 12) | (dbuf[2] << 6) | dbuf[3]
    decoded = bytes(((val >> 16) & 0xFF, (val >> 8) & 0xFF, val & 0xFF))[: dlen - 1]
    return si, decoded, err


# ---- Go's string encoding (encoding/json with HTML escaping) ----

_UNSAFE = re.compile('[\x00-\x1f"\\\\<>&\u2028\u2029]')
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(m: re.Match[str]) -> str:
    ch = m.group(0)
    return _ESCAPES.get(ch) or f"\\u{ord(ch):04x}"


def encode_string(s: str) -> str:
    """s as Go's json.Marshal writes a string."""
    if _UNSAFE.search(s) is None:
        return '"' + s + '"'
    return '"' + _UNSAFE.sub(_escape, s) + '"'
