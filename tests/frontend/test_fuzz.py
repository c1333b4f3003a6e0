"""Hypothesis over the frame parser: any bytes after a valid handshake, and any sequence of frames
with any type, flags, stream and payload, end in events or a clean connection error, never an
exception, and never leave more buffered than one frame."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from frontend.http2 import PREFACE, ConnectionTerminated, H2Connection
from frontend.http2 import _frames as f
from tests.frontend.peer import frame, parse

HANDSHAKE = PREFACE + frame(f.SETTINGS, 0, 0)

frames = st.builds(
    frame,
    st.integers(0, 12),
    st.integers(0, 255),
    st.sampled_from([0, 1, 2, 3, 5, 7, 2**31 - 1]),
    st.binary(max_size=64),
)


def check(conn: H2Connection, events: list[object]) -> None:
    for i, event in enumerate(events):
        if isinstance(event, ConnectionTerminated) and not event.remote:
            assert i == len(events) - 1 and conn.terminated
    assert len(conn._inbuf) < f.HEADER_LEN + conn.max_frame_size
    parse(conn.data_to_send())  # whatever was queued is whole frames


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_arbitrary_bytes_after_the_handshake(data: bytes) -> None:
    conn = H2Connection()
    conn.receive_data(HANDSHAKE)
    check(conn, conn.receive_data(data))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frames, max_size=20), st.integers(1, 40))
def test_arbitrary_frames_in_arbitrary_chunks(sequence: list[bytes], chunk: int) -> None:
    conn = H2Connection(max_concurrent_streams=4)
    conn.receive_data(HANDSHAKE)
    data = b"".join(sequence)
    for pos in range(0, len(data), chunk):
        check(conn, conn.receive_data(data[pos : pos + chunk]))
