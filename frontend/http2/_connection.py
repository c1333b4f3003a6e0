"""The sans-I/O HTTP/2 server connection: bytes in, events out, bytes to send drained from a buffer.

``receive_data`` parses frames (RFC 9113 §4, §6) and returns events (``_events``); the ``send_*``
methods queue frames; ``data_to_send`` hands over what is queued. Nothing here reads a clock or a
socket: the driver (``frontend.protocol``) owns time and I/O.

Errors are answered as RFC 9113 names them: a connection error (§5.4.1) sends GOAWAY with the
code and ends the connection (the rest of the input is dropped, ``ConnectionTerminated`` is the
last event); a stream error (§5.4.2) sends RST_STREAM and the stream is gone (``StreamReset`` if
the user knew of it). Either way the header block of a HEADERS frame is decoded first whenever
the HPACK state can still be kept, so one bad stream never desynchronises the others.

Flow control (§5.2): what this side sends never passes the peer's connection and stream windows
(DATA waits in the stream's queue until a WINDOW_UPDATE or a SETTINGS change opens them). What the
peer sends is charged on arrival and given back with ``acknowledge`` once the user consumed it; a
WINDOW_UPDATE goes out when half a window has been given back, so windows are replenished in
batches. Bounds: frames up to SETTINGS_MAX_FRAME_SIZE, at most ``max_concurrent_streams`` streams
(REFUSED_STREAM past it), header lists up to ``max_header_list_size`` (a 431 response past it),
at most ``max_control_bytes`` of replies to the peer's control frames (PING, SETTINGS) queued and
not taken by the driver (ENHANCE_YOUR_CALM past it: a peer that floods and does not read), and a
budget of streams the peer may reset before they are answered (ENHANCE_YOUR_CALM past it).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from frontend.http2 import _frames as f
from frontend.http2._errors import ErrorCode, LocalUsageError, PeerConnectionError, PeerStreamError
from frontend.http2._events import (
    ConnectionTerminated,
    DataReceived,
    PingAcknowledged,
    RequestReceived,
    StreamDrained,
    StreamEnded,
    StreamReset,
)
from frontend.http2._hpack import (
    HeaderBlockError,
    HeaderListTooLarge,
    MalformedHeaders,
    RequestDecoder,
    check_trailers,
    encode_block,
)
from frontend.http2._stream import Stream

Event = object

# why a stream left the table: what a later frame on it means (RFC 9113 §5.1, "closed")
_SENT_RST = 0  # this side reset it: frames in flight are ignored
_RECV_RST = 1  # the peer reset it: anything but PRIORITY is a stream error STREAM_CLOSED
_ENDED = 2  # both sides ended it: DATA or HEADERS is a connection error STREAM_CLOSED
CLOSED_MEMORY = 1024

_431 = encode_block([(":status", "431")])
_TABLE_SIZE_ZERO = b"\x20"  # RFC 7541 §6.3: dynamic table size update to 0


class H2Connection:
    """One server-side HTTP/2 connection. Call ``receive_data`` with what the socket read."""

    def __init__(
        self,
        *,
        max_concurrent_streams: int = 1000,
        initial_window_size: int = 1 << 20,
        connection_window_size: int = 16 << 20,
        max_header_list_size: int = 16 << 10,
        max_control_bytes: int = 64 << 10,
        reset_budget: int = 1000,
    ) -> None:
        self.max_concurrent_streams = max_concurrent_streams
        self.local_initial_window = initial_window_size
        self.local_connection_window = connection_window_size
        self.max_header_list_size = max_header_list_size
        self.max_control_bytes = max_control_bytes
        self.max_frame_size = f.DEFAULT_MAX_FRAME  # what this side accepts (its SETTINGS leave it at the default)

        self.peer_initial_window = f.DEFAULT_WINDOW
        self.peer_max_frame_size = f.DEFAULT_MAX_FRAME
        self.peer_max_concurrent_streams: int | None = None
        self.send_window = f.DEFAULT_WINDOW  # the peer's connection window for our DATA
        self.recv_window = connection_window_size  # what the peer may still send on the connection
        self._recv_unacked = 0

        self.streams: dict[int, Stream] = {}
        self._closed: OrderedDict[int, int] = OrderedDict()
        self.last_stream_id = 0  # the highest stream id the peer opened
        self._blocked: dict[int, None] = {}  # streams with DATA waiting for a window, in order
        self._decoder = RequestDecoder(max_header_list_size)
        self._table_size_update = False

        self._inbuf = b""
        self._preface_seen = False
        self._settings_seen = False
        self._continuation: tuple[int, list[bytes], bool, int] | None = None  # stream, fragments, end, kind
        self._out = bytearray()
        self._control_bytes = 0
        self._resets_left = reset_budget
        self._reset_budget = reset_budget

        self.goaway_sent: int | None = None  # last stream id of the GOAWAY this side sent
        self.goaway_received = False
        self.terminated = False  # a connection error or the peer's error GOAWAY: nothing more is sent

        self._out += f.settings(
            {
                f.SETTINGS_MAX_CONCURRENT_STREAMS: max_concurrent_streams,
                f.SETTINGS_INITIAL_WINDOW_SIZE: initial_window_size,
                f.SETTINGS_MAX_HEADER_LIST_SIZE: max_header_list_size,
            }
        )
        if connection_window_size > f.DEFAULT_WINDOW:
            self._out += f.window_update(0, connection_window_size - f.DEFAULT_WINDOW)
        else:
            self.recv_window = f.DEFAULT_WINDOW

    # ---- output ----

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        self._control_bytes = 0
        return out

    @property
    def has_data_to_send(self) -> bool:
        return bool(self._out)

    @property
    def header_cache_hits(self) -> int:
        return self._decoder.hits

    def _control(self, frame: bytes) -> None:
        self._control_bytes += len(frame)
        if self._control_bytes > self.max_control_bytes:
            raise PeerConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "control frames flood: replies not read")
        self._out += frame

    # ---- input ----

    def receive_data(self, data: bytes) -> list[Event]:
        """Processes bytes read from the peer and returns what happened, in order."""
        events: list[Event] = []
        if self.terminated or not data:
            return events
        buf = self._inbuf + data if self._inbuf else data
        pos = 0
        try:
            if not self._preface_seen:
                n = len(f.PREFACE)
                if len(buf) < n:
                    if not f.PREFACE.startswith(buf):
                        raise PeerConnectionError(ErrorCode.PROTOCOL_ERROR, "invalid connection preface")
                    self._inbuf = buf
                    return events
                if buf[:n] != f.PREFACE:
                    raise PeerConnectionError(ErrorCode.PROTOCOL_ERROR, "invalid connection preface")
                self._preface_seen = True
                pos = n
            end = len(buf)
            while end - pos >= f.HEADER_LEN:
                length, frame_type, flags, stream_id = f.parse_header(buf, pos)
                if length > self.max_frame_size:
                    raise PeerConnectionError(ErrorCode.FRAME_SIZE_ERROR, f"frame of {length} bytes")
                start = pos + f.HEADER_LEN
                if end - start < length:
                    break
                pos = start + length
                payload = buf[start:pos]
                try:
                    self._frame(frame_type, flags, stream_id, payload, events)
                except PeerStreamError as exc:
                    self._stream_error(exc, events)
                if self.terminated:
                    break
            self._inbuf = buf[pos:] if pos < end else b""
        except PeerConnectionError as exc:
            self._connection_error(exc.code, exc.message, events)
        return events

    def _connection_error(self, code: ErrorCode, message: str, events: list[Event]) -> None:
        self._out += f.goaway(self.last_stream_id, code, message.encode()[:256])
        self.goaway_sent = self.last_stream_id
        self.terminated = True
        self._inbuf = b""
        events.append(ConnectionTerminated(int(code), self.last_stream_id, message, remote=False))

    def _stream_error(self, exc: PeerStreamError, events: list[Event]) -> None:
        stream = self.streams.pop(exc.stream_id, None)
        self._out += f.rst_stream(exc.stream_id, exc.code)
        self._forget(exc.stream_id, _SENT_RST)
        if stream is not None:
            self._blocked.pop(exc.stream_id, None)
            events.append(StreamReset(exc.stream_id, int(exc.code), remote=False))

    def _forget(self, stream_id: int, why: int) -> None:
        closed = self._closed
        closed[stream_id] = why
        if len(closed) > CLOSED_MEMORY:
            closed.popitem(last=False)

    def _frame(self, frame_type: int, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if not self._settings_seen and frame_type != f.SETTINGS:
            raise PeerConnectionError(ErrorCode.PROTOCOL_ERROR, "the first frame must be SETTINGS")
        if self._continuation is not None and frame_type != f.CONTINUATION:
            raise PeerConnectionError(ErrorCode.PROTOCOL_ERROR, "a header block was interrupted")
        if frame_type == f.DATA:
            self._data(flags, stream_id, payload, events)
        elif frame_type == f.HEADERS:
            self._headers(flags, stream_id, payload, events)
        elif frame_type == f.CONTINUATION:
            self._continuation_frame(flags, stream_id, payload, events)
        elif frame_type == f.SETTINGS:
            self._settings(flags, stream_id, payload, events)
        elif frame_type == f.WINDOW_UPDATE:
            self._window_update(stream_id, payload, events)
        elif frame_type == f.PING:
            if stream_id:
                raise PeerConnectionError(ErrorCode.PROTOCOL_ERROR, "PING on a stream")
            if len(payload) != 8:
                raise PeerConnectionError(ErrorCode.FRAME_SIZE_ERROR, "PING payload must be 8 bytes")
            if flags & f.FLAG_ACK:
                events.append(PingAcknowledged(bytes(payload)))
            else:
                self._control(f.ping(payload, ack=True))
        elif frame_type == f.RST_STREAM:
            self._rst_stream(stream_id, payload, events)
        elif frame_type == f.PRIORITY:
            if not stream_id:
                raise PeerConnectionError(ErrorCode.PROTOCOL_ERROR, "PRIORITY on stream 0")
            if len(payload) != 5:
                raise PeerStreamError(stream_id, ErrorCode.FRAME_SIZE_ERROR, "PRIORITY payload must be 5 bytes")
            if f.unpack_u32(payload, 0) & 0x7FFF_FFFF == stream_id:
                raise PeerStreamError(stream_id, ErrorCode.PROTOCOL_ERROR, "a stream cannot depend on itself")
        elif frame_type == f.GOAWAY:
            if stream_id:
                raise PeerConnectionError(ErrorCode.PROTOCOL_ERROR, "GOAWAY on a stream")
            if len(payload) < 8:
                raise PeerConnectionError(ErrorCode.FRAME_SIZE_ERROR, "GOAWAY payload too short")
            last, code = f.unpack_goaway(payload, 0)
            self.goaway_received = True
            events.append(
                ConnectionTerminated(code, last & 0x7FFF_FFFF, bytes(payload[8:]).decode("utf-8", "replace"), True)
            )
        elif frame_type == f.PUSH_PROMISE:
            raise PeerConnectionError(ErrorCode.PROTOCOL_ERROR, "a client cannot push")
        # other types are extensions: ignored (RFC 9113 §4.1)

    # ---- stream frames ----

    def _closed_stream_frame(self, stream_id: int, what: str) -> None:
        """DATA or HEADERS for a stream that is not open: the error RFC 9113 §5.1 names, or nothing."""
        if stream_id > self.last_stream_id:
            if self.goaway_sent is not None:
                return  # a stream the peer opened after our GOAWAY: ignored (RFC 9113 §6.8)
            raise PeerConnectionError(ErrorCode.PROTOCOL_ERROR, f"{what} on idle stream {stream_id}")
        why = self._closed.get(stream_id)
        if why == _SENT_RST:
            return
        if why == _ENDED:
            raise PeerConnectionError(ErrorCode.STREAM_CLOSED, f"{what} on closed stream {stream_id}")
        raise PeerStreamError(stream_id, ErrorCode.STREAM_CLOSED, f"{what} on closed stream {stream_id}")

    def _data(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if not stream_id:
            raise PeerConnectionError(ErrorCode.PROTOCOL_ERROR, "DATA on stream 0")
        flow = len(payload)
        if flow > self.recv_window:
            raise PeerConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "DATA past the connection window")
        self.recv_window -= flow
        data = payload
        if flags & f.FLAG_PADDED:
            if not payload or payload[0] >= len(payload):
                raise PeerConnectionError(ErrorCode.PROTOCOL_ERROR, "padding longer than the frame")
            data = payload[1 : len(payload) - payload[0]]
        stream = self.streams.get(stream_id)
        if stream is None or not stream.recv_open:
            self._give_back(flow)  # counted by the peer: return it to the connection window
            if stream is None:
                self._closed_stream_frame(stream_id, "DATA")
                return
            raise PeerStreamError(stream_id, ErrorCode.STREAM_CLOSED, "DATA after END_STREAM")
        if flow > stream.recv_window:
            self._give_back(flow)
            raise PeerStreamError(stream_id, ErrorCode.FLOW_CONTROL_ERROR, "DATA past the stream window")
        stream.recv_window -= flow
        stream.received += len(data)
        if stream.content_length is not None and stream.received > stream.content_length:
            self._give_back(flow)
            raise PeerStreamError(stream_id, ErrorCode.PROTOCOL_ERROR, "more DATA than content-length")
        padding = flow - len(data)
        if padding:
            self.acknowledge(stream_id, padding)
        if data:
            events.append(DataReceived(stream_id, bytes(data), len(data)))
        if flags & f.FLAG_END_STREAM:
            if stream.content_length is not None and stream.received != stream.content_length:
                raise PeerStreamError(stream_id, ErrorCode.PROTOCOL_ERROR, "less DATA than content-length")
            self._end_remote(stream, events)

    def _end_remote(self, stream: Stream, events: list[Event]) -> None:
        stream.recv_open = False
        events.append(StreamEnded(stream.stream_id))
        if not stream.send_open:
            self._close(stream, _ENDED)

    def _close(self, stream: Stream, why: int) -> None:
        sid = stream.stream_id
        self.streams.pop(sid, None)
        self._blocked.pop(sid, None)
        self._forget(sid, why)

    def _headers(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if not stream_id:
            raise PeerConnectionError(ErrorCode.PROTOCOL_ERROR, "HEADERS on stream 0")
        start, end = 0, len(payload)
        if flags & f.FLAG_PADDED:
            if not payload or payload[0] >= len(payload):
                raise PeerConnectionError(ErrorCode.PROTOCOL_ERROR, "padding longer than the frame")
            start, end = 1, len(payload) - payload[0]
        self_dependent = False
        if flags & f.FLAG_PRIORITY:
            if end - start < 5:
                raise PeerConnectionError(ErrorCode.FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            self_dependent = f.unpack_u32(payload, start) & 0x7FFF_FFFF == stream_id
            start += 5
        fragment = payload[start:end]
        end_stream = bool(flags & f.FLAG_END_STREAM)
        kind = 1 if self_dependent else 0
        if flags & f.FLAG_END_HEADERS:
            self._header_block(stream_id, fragment, end_stream, kind, events)
        else:
            self._continuation = (stream_id, [fragment], end_stream, kind)

    def _continuation_frame(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        pending = self._continuation
        if pending is None or pending[0] != stream_id:
            raise PeerConnectionError(ErrorCode.PROTOCOL_ERROR, "CONTINUATION without a header block")
        fragments = pending[1]
        fragments.append(payload)
        if sum(map(len, fragments)) > 4 * self.max_header_list_size + 4096:
            raise PeerConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "header block too large")
        if flags & f.FLAG_END_HEADERS:
            self._continuation = None
            self._header_block(stream_id, b"".join(fragments), pending[2], pending[3], events)

    def _decode_fields(self, block: bytes) -> list[tuple[bytes, bytes]]:
        try:
            return self._decoder.decode_fields(block)
        except HeaderBlockError as exc:
            raise PeerConnectionError(ErrorCode.COMPRESSION_ERROR, str(exc)) from exc

    def _header_block(self, stream_id: int, block: bytes, end_stream: bool, kind: int, events: list[Event]) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None:  # trailers
            self._decode_fields_checked(stream_id, block, trailers=True)
            if not stream.recv_open:
                raise PeerStreamError(stream_id, ErrorCode.STREAM_CLOSED, "HEADERS after END_STREAM")
            if not end_stream:
                raise PeerStreamError(stream_id, ErrorCode.PROTOCOL_ERROR, "trailers without END_STREAM")
            self._end_remote(stream, events)
            return
        if stream_id <= self.last_stream_id:
            self._decode_fields(block)
            if stream_id in self._closed:
                self._closed_stream_frame(stream_id, "HEADERS")
                return
            raise PeerConnectionError(ErrorCode.PROTOCOL_ERROR, f"stream id {stream_id} reused or out of order")
        if not stream_id & 1:
            raise PeerConnectionError(ErrorCode.PROTOCOL_ERROR, f"even stream id {stream_id} from a client")
        if self.goaway_sent is not None and stream_id > self.goaway_sent:
            self._decode_fields(block)  # after our GOAWAY: ignored (RFC 9113 §6.8), HPACK kept in step
            return
        self.last_stream_id = stream_id
        if kind == 1:
            self._decode_fields(block)
            raise PeerStreamError(stream_id, ErrorCode.PROTOCOL_ERROR, "a stream cannot depend on itself")
        if len(self.streams) >= self.max_concurrent_streams:
            self._decode_fields(block)
            raise PeerStreamError(stream_id, ErrorCode.REFUSED_STREAM, "too many concurrent streams")
        try:
            request = self._decoder.decode(block)
        except HeaderBlockError as exc:
            raise PeerConnectionError(ErrorCode.COMPRESSION_ERROR, str(exc)) from exc
        except MalformedHeaders as exc:
            raise PeerStreamError(stream_id, ErrorCode.PROTOCOL_ERROR, f"malformed request: {exc}") from exc
        except HeaderListTooLarge:
            # the block was decoded: answer 431 and ask the client to stop sending (RFC 9113 §8.1)
            self._out += self._headers_frames(stream_id, _431, end_stream=True)
            self._out += f.rst_stream(stream_id, ErrorCode.NO_ERROR)
            self._forget(stream_id, _SENT_RST)
            return
        stream = Stream(stream_id, self.peer_initial_window, self.local_initial_window)
        length = request.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                raise PeerStreamError(stream_id, ErrorCode.PROTOCOL_ERROR, "invalid content-length")
            stream.content_length = int(length)
        self.streams[stream_id] = stream
        events.append(RequestReceived(stream_id, request))
        if end_stream:
            if stream.content_length:
                raise PeerStreamError(stream_id, ErrorCode.PROTOCOL_ERROR, "less DATA than content-length")
            self._end_remote(stream, events)

    def _decode_fields_checked(self, stream_id: int, block: bytes, trailers: bool) -> None:
        fields = self._decode_fields(block)
        if trailers:
            try:
                check_trailers(fields)
            except MalformedHeaders as exc:
                raise PeerStreamError(stream_id, ErrorCode.PROTOCOL_ERROR, str(exc)) from exc

    def _rst_stream(self, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if not stream_id:
            raise PeerConnectionError(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise PeerConnectionError(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM payload must be 4 bytes")
        stream = self.streams.get(stream_id)
        if stream is None:
            if stream_id > self.last_stream_id and self.goaway_sent is None:
                raise PeerConnectionError(ErrorCode.PROTOCOL_ERROR, f"RST_STREAM on idle stream {stream_id}")
            return
        self._close(stream, _RECV_RST)
        if stream.send_open:
            self._resets_left -= 1
            if self._resets_left < 0:
                raise PeerConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "too many streams reset before an answer")
        events.append(StreamReset(stream_id, f.unpack_u32(payload, 0), remote=True))

    # ---- settings and windows ----

    def _settings(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id:
            raise PeerConnectionError(ErrorCode.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & f.FLAG_ACK:
            if payload:
                raise PeerConnectionError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            if not self._settings_seen:
                raise PeerConnectionError(ErrorCode.PROTOCOL_ERROR, "the first frame must be SETTINGS")
            return
        if len(payload) % 6:
            raise PeerConnectionError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS payload not a multiple of 6")
        self._settings_seen = True
        for pos in range(0, len(payload), 6):
            ident, value = f.unpack_setting(payload, pos)
            if ident == f.SETTINGS_ENABLE_PUSH:
                if value > 1:
                    raise PeerConnectionError(ErrorCode.PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH must be 0 or 1")
            elif ident == f.SETTINGS_INITIAL_WINDOW_SIZE:
                if value > f.MAX_WINDOW:
                    raise PeerConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE too large")
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
                    if stream.send_window > f.MAX_WINDOW:
                        raise PeerConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "a stream window overflowed")
            elif ident == f.SETTINGS_MAX_FRAME_SIZE:
                if not f.DEFAULT_MAX_FRAME <= value <= f.MAX_FRAME_LIMIT:
                    raise PeerConnectionError(ErrorCode.PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range")
                self.peer_max_frame_size = value
            elif ident == f.SETTINGS_HEADER_TABLE_SIZE:
                self._table_size_update = True  # our table stays empty; tell the peer so, at size 0
            elif ident == f.SETTINGS_MAX_CONCURRENT_STREAMS:
                self.peer_max_concurrent_streams = value
        self._control(f.SETTINGS_ACK)
        self._pump_blocked(events)

    def _window_update(self, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if len(payload) != 4:
            raise PeerConnectionError(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE payload must be 4 bytes")
        increment = f.unpack_u32(payload, 0) & 0x7FFF_FFFF
        if not stream_id:
            if not increment:
                raise PeerConnectionError(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self.send_window += increment
            if self.send_window > f.MAX_WINDOW:
                raise PeerConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "connection window overflowed")
            self._pump_blocked(events)
            return
        stream = self.streams.get(stream_id)
        if stream is None:
            if stream_id > self.last_stream_id and self.goaway_sent is None:
                raise PeerConnectionError(ErrorCode.PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {stream_id}")
            return  # closed: frames in flight are allowed
        if not increment:
            raise PeerStreamError(stream_id, ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
        stream.send_window += increment
        if stream.send_window > f.MAX_WINDOW:
            raise PeerStreamError(stream_id, ErrorCode.FLOW_CONTROL_ERROR, "stream window overflowed")
        if stream.outq or stream.closing:
            self._pump(stream, events)

    def _give_back(self, n: int) -> None:
        self._recv_unacked += n
        if self._recv_unacked >= self.local_connection_window // 2:
            self._out += f.window_update(0, self._recv_unacked)
            self.recv_window += self._recv_unacked
            self._recv_unacked = 0

    def acknowledge(self, stream_id: int, n: int) -> None:
        """The user consumed n bytes of the stream's data: they may be sent again (in batches)."""
        if n <= 0 or self.terminated:
            return
        self._give_back(n)
        stream = self.streams.get(stream_id)
        if stream is None or not stream.recv_open:
            return
        stream.recv_unacked += n
        if stream.recv_unacked >= self.local_initial_window // 2:
            self._out += f.window_update(stream_id, stream.recv_unacked)
            stream.recv_window += stream.recv_unacked
            stream.recv_unacked = 0

    # ---- sending ----

    def _stream_to_send(self, stream_id: int) -> Stream:
        stream = self.streams.get(stream_id)
        if stream is None or not stream.send_open or stream.closing:
            raise LocalUsageError(f"stream {stream_id} is not open for sending")
        return stream

    def _headers_frames(self, stream_id: int, block: bytes, end_stream: bool) -> bytes:
        if self._table_size_update:
            block = _TABLE_SIZE_ZERO + block
            self._table_size_update = False
        flags = f.FLAG_END_STREAM if end_stream else 0
        limit = self.peer_max_frame_size
        if len(block) <= limit:
            return f.header(len(block), f.HEADERS, flags | f.FLAG_END_HEADERS, stream_id) + block
        parts = [block[i : i + limit] for i in range(0, len(block), limit)]
        out = [f.header(len(parts[0]), f.HEADERS, flags, stream_id), parts[0]]
        for i, part in enumerate(parts[1:], 2):
            last = f.FLAG_END_HEADERS if i == len(parts) else 0
            out += [f.header(len(part), f.CONTINUATION, last, stream_id), part]
        return b"".join(out)

    def send_headers(self, stream_id: int, block: bytes, end_stream: bool = False) -> None:
        """Response headers (a block from ``encode_block``); with end_stream, a trailers-only response."""
        if self.terminated:
            return
        stream = self._stream_to_send(stream_id)
        if stream.headers_sent:
            raise LocalUsageError(f"stream {stream_id} already sent its headers")
        stream.headers_sent = True
        self._out += self._headers_frames(stream_id, block, end_stream)
        if end_stream:
            self._end_local(stream)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        """Queues DATA; it is framed as far as the windows allow, the rest when they open."""
        if self.terminated:
            return
        stream = self._stream_to_send(stream_id)
        if not stream.headers_sent:
            raise LocalUsageError(f"stream {stream_id}: DATA before headers")
        if data:
            stream.outq.append(data)
            stream.outq_bytes += len(data)
        if end_stream:
            stream.end_after_data = True
        self._pump(stream, None)

    def send_trailers(self, stream_id: int, block: bytes) -> None:
        """Ends the stream with trailers, once the DATA queued before them has gone out."""
        if self.terminated:
            return
        stream = self._stream_to_send(stream_id)
        stream.trailers = block
        self._pump(stream, None)

    def outbound_pending(self, stream_id: int) -> int:
        """Bytes queued on the stream and not yet framed (waiting for the peer's windows)."""
        stream = self.streams.get(stream_id)
        return stream.outq_bytes if stream is not None else 0

    def _pump(self, stream: Stream, events: list[Event] | None) -> None:
        out = self._out
        sid = stream.stream_id
        outq = stream.outq
        ended = False
        while outq:
            window = min(self.send_window, stream.send_window)
            if window <= 0:
                self._blocked[sid] = None
                return
            chunk = outq[0]
            n = min(len(chunk), window, self.peer_max_frame_size)
            if n == len(chunk):
                outq.popleft()
                piece = chunk
            else:
                piece = chunk[:n]
                outq[0] = chunk[n:]
            stream.outq_bytes -= n
            self.send_window -= n
            stream.send_window -= n
            ended = not outq and stream.end_after_data and stream.trailers is None
            out += f.header(n, f.DATA, f.FLAG_END_STREAM if ended else 0, sid)
            out += piece
        self._blocked.pop(sid, None)
        if stream.trailers is not None:
            out += self._headers_frames(sid, stream.trailers, end_stream=True)
            stream.trailers = None
            self._end_local(stream)
        elif stream.end_after_data:
            if not ended:  # nothing was framed in this pump: END_STREAM needs an empty DATA frame
                out += f.header(0, f.DATA, f.FLAG_END_STREAM, sid)
            self._end_local(stream)
        if events is not None:
            events.append(StreamDrained(sid))

    def _pump_blocked(self, events: list[Event]) -> None:
        for sid in list(self._blocked):
            if self.send_window <= 0:
                return
            stream = self.streams.get(sid)
            if stream is None:
                self._blocked.pop(sid, None)
                continue
            self._pump(stream, events)

    def _end_local(self, stream: Stream) -> None:
        stream.send_open = False
        self._resets_left = min(self._resets_left + 1, self._reset_budget)
        if not stream.recv_open:
            self._close(stream, _ENDED)

    def reset_stream(self, stream_id: int, code: ErrorCode = ErrorCode.CANCEL) -> None:
        """Ends a stream at once with RST_STREAM (e.g. its handler was cancelled)."""
        if self.terminated:
            return
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return
        self._blocked.pop(stream_id, None)
        self._out += f.rst_stream(stream_id, code)
        self._forget(stream_id, _SENT_RST)

    def ping(self, data: bytes) -> None:
        self._out += f.ping(data, ack=False)

    def close(self, code: ErrorCode = ErrorCode.NO_ERROR, message: str = "") -> None:
        """GOAWAY: with NO_ERROR the streams already open finish and new ones are ignored; any other
        code ends the connection at once."""
        if self.terminated:
            return
        last = self.last_stream_id
        if self.goaway_sent is None or code != ErrorCode.NO_ERROR:
            self._out += f.goaway(last, code, message.encode()[:256])
        self.goaway_sent = last
        if code != ErrorCode.NO_ERROR:
            self.terminated = True

    @property
    def open_streams(self) -> int:
        return len(self.streams)

    def stream_ids(self) -> Iterable[int]:
        return list(self.streams)
