"""One HTTP/2 stream's state on the server side: which halves are open, windows, queued output.

States (RFC 9113 §5.1) are kept as two flags: ``recv_open`` (the peer has not ended its side) and
``send_open`` (this side has not); open is both, half-closed (remote) is ``send_open`` only,
half-closed (local) is ``recv_open`` only, and a stream with neither is closed and leaves the
connection's table. Idle streams have no object; reserved states do not exist (no server push).
"""

from __future__ import annotations

from collections import deque


class Stream:
    __slots__ = (
        "content_length",
        "end_after_data",
        "headers_sent",
        "outq",
        "outq_bytes",
        "received",
        "recv_open",
        "recv_unacked",
        "recv_window",
        "send_open",
        "send_window",
        "stream_id",
        "trailers",
    )

    def __init__(self, stream_id: int, send_window: int, recv_window: int) -> None:
        self.stream_id = stream_id
        self.recv_open = True
        self.send_open = True
        self.send_window = send_window
        self.recv_window = recv_window
        self.recv_unacked = 0
        self.outq: deque[bytes | memoryview] = deque()
        self.outq_bytes = 0
        self.trailers: bytes | None = None  # a header block to send with END_STREAM once outq is empty
        self.end_after_data = False  # END_STREAM on the last DATA frame (no trailers)
        self.headers_sent = False
        self.content_length: int | None = None
        self.received = 0

    @property
    def closing(self) -> bool:
        """This side has asked to end the stream (trailers or END_STREAM queued behind data)."""
        return self.trailers is not None or self.end_after_data
