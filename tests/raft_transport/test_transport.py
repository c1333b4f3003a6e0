"""raft.transport over real sockets on 127.0.0.1: delivery, batching, loss policy, reconnect,
rejection of strangers and garbage, snapshot streaming and its failures, peer changes, stop.

Raw peers (plain asyncio streams speaking the frame format by hand) stand in for a remote
member when a test needs to see or forge the bytes on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import struct
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import msgpack
import pytest
import uvloop

from raft import snapshot as snapfiles
from raft import transport as tr
from raft.core.types import ConfState, Entry, Message, MessageType, Snapshot, SnapshotMetadata
from raft.net import framing, outgoing
from raft.snapshot import SnapshotDir
from raft.transport import Transport
from tests.procs import free_port

CLUSTER = 0xC1
LOCAL = "127.0.0.1:0"
HELLO_BODY = [tr.PROTOCOL_VERSION, b"n" * tr.NONCE_BYTES]
UNVERIFIED = tr.PeerSecurity(verify_identity=False)  # frame checks alone, for raw peers posing as members


class Member:
    """A Transport and everything its callbacks saw."""

    def __init__(self, member_id: int, tmp_path: Path, cluster_id: int = CLUSTER, **kw) -> None:
        self.id = member_id
        self.delivered: list[Message] = []
        self.unreachable: list[int] = []
        self.snap_status: list[tuple[int, bool]] = []
        self.snapshots: list[tuple[Message, Path]] = []
        self.snap_dir = tmp_path / f"snap-{member_id}"
        self.snap_dir.mkdir()
        self.source: Path | None = None
        self.t = Transport(
            member_id,
            cluster_id,
            deliver=self.delivered.append,
            on_unreachable=self.unreachable.append,
            on_snapshot_status=lambda peer, ok: self.snap_status.append((peer, ok)),
            snapshot_source=self._source,
            snapshot_dir=SnapshotDir(self.snap_dir),
            deliver_snapshot=lambda m, p: self.snapshots.append((m, p)),
            **kw,
        )
        self.addr = ""

    async def _source(self, m: Message) -> Path:
        assert self.source is not None
        return self.source

    async def start(self, listen: str = LOCAL) -> Member:
        await self.t.start([listen])
        self.addr = f"127.0.0.1:{self.t.bound_ports[0]}"
        return self

    def from_peer(self, peer: int) -> list[Message]:
        return [m for m in self.delivered if m.frm == peer]


def app(frm: int, to: int, index: int, data: bytes = b"v") -> Message:
    return Message(
        MessageType.APP,
        to=to,
        frm=frm,
        term=3,
        log_term=3,
        index=index - 1,
        entries=[Entry(3, index, data=data)],
        commit=index - 1,
    )


def heartbeat(frm: int, to: int, commit: int) -> Message:
    return Message(MessageType.HEARTBEAT, to=to, frm=frm, term=3, commit=commit, context=b"ctx")


def snap_msg(frm: int, to: int, index: int = 50) -> Message:
    md = SnapshotMetadata(index=index, term=2, conf_state=ConfState((1, 2, 3)))
    return Message(MessageType.SNAP, to=to, frm=frm, term=2, snapshot=Snapshot(md, b"meta"))


def frame(kind: int, body: object, frm: int = 9, to: int = 2, cluster: int = CLUSTER) -> bytes:
    payload = msgpack.packb([cluster, frm, to, kind, body])
    return struct.pack(">I", len(payload)) + payload


async def read_frame(reader: asyncio.StreamReader) -> list:
    (n,) = struct.unpack(">I", await reader.readexactly(4))
    return msgpack.unpackb(await reader.readexactly(n))


async def wait_until(cond: Callable[[], bool], timeout: float = 30.0) -> None:
    """Polls cond; the timeout bounds a hang (a busy machine only makes the wait longer)."""
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.005)


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    try:
        async with asyncio.timeout(30.0):
            return await reader.read() == b""
    except ConnectionResetError:
        return True


def rejections(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [getattr(r, "reason", "") for r in caplog.records if r.name == "raftkv.transport"]


@contextlib.asynccontextmanager
async def three(tmp_path: Path, **kw) -> AsyncIterator[list[Member]]:
    """Three started transports (ids 1, 2, 3) that know each other."""
    members = [await Member(i, tmp_path, **kw).start() for i in (1, 2, 3)]
    for m in members:
        m.t.set_peers({o.id: o.addr for o in members})
    try:
        yield members
    finally:
        for m in members:
            await m.t.stop()


@pytest.fixture
async def trio_(tmp_path: Path) -> AsyncIterator[list[Member]]:
    async with three(tmp_path) as members:
        yield members


@pytest.fixture
async def trio_unverified(tmp_path: Path) -> AsyncIterator[list[Member]]:
    """Members that take a HELLO's word for who sent it, so raw frames can pose as member 3."""
    async with three(tmp_path, security=UNVERIFIED) as members:
        yield members


@pytest.fixture(autouse=True)
def no_asyncio_complaints(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """asyncio logs (never raises) unretrieved task exceptions, unclosed transports and failed callbacks."""
    yield
    records = [*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records]
    assert not [r.getMessage() for r in records if r.name == "asyncio" and r.levelno >= logging.WARNING]


@pytest.fixture
def warnings_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="raftkv.transport")
    return caplog


# ---- delivery ----


async def test_messages_delivered_in_order_between_three(trio_: list[Member]) -> None:
    sent: dict[tuple[int, int], list[Message]] = {}
    for i in range(1, 101):
        for src in trio_:
            batch = [app(src.id, dst.id, i, b"x" * i) for dst in trio_ if dst is not src]
            batch += [heartbeat(src.id, dst.id, i) for dst in trio_ if dst is not src]
            for m in batch:
                sent.setdefault((m.frm, m.to), []).append(m)
            src.t.send(batch)
        if i % 10 == 0:
            await asyncio.sleep(0)  # spread the sends over several loop iterations
    await wait_until(lambda: all(len(m.delivered) == 400 for m in trio_))
    for dst in trio_:
        for src in trio_:
            if src is not dst:
                assert dst.from_peer(src.id) == sent[(src.id, dst.id)]
    assert all(not m.unreachable for m in trio_)


async def raw_listener() -> tuple[asyncio.Server, int, list[list], list[bytes]]:
    """A fake peer that records every frame it is sent, and the raw bytes."""
    frames: list[list] = []
    raw: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                hdr = await reader.readexactly(4)
                body = await reader.readexactly(struct.unpack(">I", hdr)[0])
                raw.append(hdr + body)
                frames.append(msgpack.unpackb(body))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], frames, raw


async def test_batching_many_sends_become_few_frames(tmp_path: Path) -> None:
    server, port, frames, _ = await raw_listener()
    a = await Member(1, tmp_path).start()
    a.t.set_peers({2: f"127.0.0.1:{port}"})
    try:
        for call in range(30):  # 30 send() calls in one loop iteration, 3000 messages
            a.t.send([app(1, 2, call * 100 + i) for i in range(1, 101)])
        await wait_until(lambda: sum(len(f[4]) for f in frames if f[3] == tr.MSG) == 3000)
        assert frames[0][:4] == [CLUSTER, 1, 2, tr.HELLO] and frames[0][4][0] == tr.PROTOCOL_VERSION
        assert len(frames[0][4][1]) == tr.NONCE_BYTES
        msg_frames = [f for f in frames if f[3] == tr.MSG]
        assert len(msg_frames) <= 2
        got = [Message.from_wire(w) for f in msg_frames for w in f[4]]
        assert [m.entries[0].index for m in got] == list(range(1, 3001))
    finally:
        await a.t.stop()
        server.close()
        await server.wait_closed()


async def test_an_idle_connection_is_written_at_once_and_later_sends_of_the_turn_are_batched(tmp_path: Path) -> None:
    server, port, frames, _ = await raw_listener()
    a = await Member(1, tmp_path).start()
    a.t.set_peers({2: f"127.0.0.1:{port}"})
    sent = a.t.stats.sent_bytes
    try:
        a.t.send([heartbeat(1, 2, 1)])
        await wait_until(lambda: sum(f[3] == tr.MSG for f in frames) == 1)
        for _ in range(5):
            await asyncio.sleep(0)  # the writer task is back to waiting: the connection is idle
        before = sent[2]
        a.t.send([app(1, 2, 1)])
        assert sent[2] > before  # written inside send(), before the writer task ran
        written = sent[2]
        for i in range(2, 12):  # the rest of this loop turn's sends are queued, not written one by one
            a.t.send([app(1, 2, i)])
        assert sent[2] == written
        await wait_until(lambda: sum(len(f[4]) for f in frames if f[3] == tr.MSG) == 12)
        msg_frames = [f for f in frames if f[3] == tr.MSG]
        assert [len(f[4]) for f in msg_frames] == [1, 1, 10]
        got = [Message.from_wire(w) for f in msg_frames[1:] for w in f[4]]
        assert [m.entries[0].index for m in got] == list(range(1, 12))
    finally:
        await a.t.stop()
        server.close()
        await server.wait_closed()


async def test_queue_overflow_drops_oldest_and_reports_once(tmp_path: Path) -> None:
    server, port, frames, _ = await raw_listener()
    a = await Member(1, tmp_path, max_queue=10).start()
    a.t.set_peers({2: f"127.0.0.1:{port}"})
    try:
        a.t.send([app(1, 2, i) for i in range(1, 26)])  # before the writer task has even dialled
        assert a.unreachable == []  # never called from inside send()
        await wait_until(lambda: sum(len(f[4]) for f in frames if f[3] == tr.MSG) >= 10)
        got = [Message.from_wire(w).entries[0].index for f in frames if f[3] == tr.MSG for w in f[4]]
        assert got == list(range(16, 26))
        assert a.unreachable == [2]
    finally:
        await a.t.stop()
        server.close()
        await server.wait_closed()


async def test_batches_over_the_frame_limit_are_split_and_oversized_messages_dropped(
    trio_: list[Member], monkeypatch: pytest.MonkeyPatch, warnings_log: pytest.LogCaptureFixture
) -> None:
    a, b, _ = trio_
    monkeypatch.setattr(framing, "MAX_FRAME", 10_000)
    sizes = [4000, 4000, 20_000, 4000, 100, 4000]
    a.t.send([app(1, 2, i, b"d" * n) for i, n in enumerate(sizes, 1)])
    a.t.send([app(1, 2, 7, b"marker")])  # the connection keeps order: once it is in, the rest was too
    await wait_until(lambda: b.delivered and b.delivered[-1].entries[0].index == 7)
    assert [m.entries[0].index for m in b.delivered] == [1, 2, 4, 5, 6, 7]
    assert any("larger than the frame limit" in r.getMessage() for r in warnings_log.records)


async def test_peer_that_stops_reading_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outgoing, "WRITE_STALL_TIMEOUT", 0.1)
    connected, release = asyncio.Event(), asyncio.Event()
    handlers: list[asyncio.Task] = []

    async def never_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())
        connected.set()
        await release.wait()
        writer.transport.abort()

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited by the accepted socket
    sock.bind(("127.0.0.1", 0))
    server = await asyncio.start_server(never_reads, sock=sock)
    a = await Member(1, tmp_path).start()
    a.t.set_peers({2: f"127.0.0.1:{sock.getsockname()[1]}"})
    try:
        await connected.wait()
        a.t.send([app(1, 2, i, b"s" * (1 << 20)) for i in range(1, 11)])  # more than the socket buffers hold
        await wait_until(lambda: a.unreachable == [2])
    finally:
        await a.t.stop()
        release.set()
        await asyncio.gather(*handlers)
        server.close()
        await server.wait_closed()


def most_failed_dials(elapsed: float) -> int:
    """How many dials can fail within elapsed seconds: the first at once, then one per backoff sleep."""
    dials, t, backoff = 1, 0.0, tr.BACKOFF_MIN
    while t + backoff / 2 <= elapsed:
        t += backoff / 2
        dials += 1
        backoff = min(backoff * 2, tr.BACKOFF_MAX)
    return dials


async def test_peer_down_then_up_gets_later_messages(tmp_path: Path) -> None:
    port = free_port()
    a = await Member(1, tmp_path).start()
    a.t.set_peers({2: f"127.0.0.1:{port}"})
    b = Member(2, tmp_path)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        a.t.send([heartbeat(1, 2, 0)])
        await wait_until(lambda: 2 in a.unreachable)
        for _ in range(30):  # a few failed dials, and many messages meanwhile
            a.t.send([heartbeat(1, 2, 0)])
            await asyncio.sleep(0.005)
        steps = len(a.unreachable)
        # once per failed dial, not once per message: dials are backoff/2 apart at least, the
        # backoff doubling from 50 ms, so a slow machine (more time gone by) allows more of them
        assert 1 <= steps <= most_failed_dials(loop.time() - started), steps
        await b.start(f"127.0.0.1:{port}")
        b.t.set_peers({1: a.addr})
        commit = 0
        deadline = loop.time() + 30
        while not b.delivered:  # messages sent during backoff are dropped; keep sending like a leader
            commit += 1
            a.t.send([heartbeat(1, 2, commit)])
            await asyncio.sleep(0.02)
            assert loop.time() < deadline, "peer never reconnected"
        await wait_until(lambda: b.delivered[-1].commit == commit)
        commits = [m.commit for m in b.delivered]
        assert commits == sorted(commits)
    finally:
        await a.t.stop()
        await b.t.stop()


# ---- rejection ----


async def raw_connect(member: Member) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", member.t.bound_ports[0])


async def test_stranger_rejected_while_right_cluster_delivered(
    trio_unverified: list[Member], warnings_log: pytest.LogCaptureFixture
) -> None:
    a, b, _ = trio_unverified
    # a raw client posing as member 3: the same frames, once with our cluster id and once without
    reader, writer = await raw_connect(b)
    good = heartbeat(3, 2, 7)
    writer.write(frame(tr.HELLO, HELLO_BODY, frm=3) + frame(tr.MSG, [good.to_wire()], frm=3))
    await writer.drain()
    await wait_until(lambda: good in b.delivered)
    bad = heartbeat(3, 2, 8)
    writer.write(frame(tr.MSG, [bad.to_wire()], frm=3, cluster=0xBAD))
    writer.write(frame(tr.MSG, [heartbeat(3, 2, 9).to_wire()], frm=3))  # after the bad one: never read
    await writer.drain()
    assert await closed_by_peer(reader)
    writer.close()

    reader, writer = await raw_connect(b)  # a stranger from another cluster, from its first frame
    writer.write(frame(tr.HELLO, HELLO_BODY, frm=3, cluster=0xBAD) + frame(tr.MSG, [bad.to_wire()], frm=3))
    await writer.drain()
    assert await closed_by_peer(reader)
    writer.close()

    a.t.send([heartbeat(1, 2, 10)])  # legitimate traffic is unaffected
    await wait_until(lambda: any(m.frm == 1 and m.commit == 10 for m in b.delivered))
    assert [m.commit for m in b.from_peer(3)] == [7]
    assert rejections(warnings_log).count("cluster_id_mismatch") == 1  # the second one is rate-limited
    record = next(r for r in warnings_log.records if getattr(r, "reason", "") == "cluster_id_mismatch")
    assert record.levelno == logging.WARNING and record.remote_addr and record.their_cluster_id == str(0xBAD)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x00\x00\x00\x05hello", "undecodable_frame"),
        (os.urandom(64) + b"\x00\x00\x00\x00" * 4, None),  # anything: just must not crash or deliver
        (b"\xff\xff\xff\xff", "frame_too_large"),
        (frame(tr.HELLO, HELLO_BODY, frm=3, to=7), "to_id_mismatch"),
        (frame(tr.HELLO, HELLO_BODY, frm=99), "unknown_peer"),
        (frame(tr.HELLO, [99, b"n" * 16], frm=3), "protocol_version"),
        (frame(tr.MSG, [], frm=3), "expected_hello"),
        (struct.pack(">I", 3) + msgpack.packb([1, 2]), "malformed_frame"),
        (
            frame(tr.HELLO, HELLO_BODY, frm=3) + struct.pack(">I", tr.MAX_FRAME + 1) + b"\x00" * 100,
            "frame_too_large",
        ),
        (
            frame(tr.HELLO, HELLO_BODY, frm=3) + frame(tr.MSG, [heartbeat(3, 1, 1).to_wire()], frm=3),
            "bad_message",
        ),  # the frame is for us but the message inside is addressed to member 1
        (
            frame(tr.HELLO, HELLO_BODY, frm=3) + frame(tr.MSG, [snap_msg(3, 2).to_wire()], frm=3),
            "undecodable_message",
        ),  # MsgSnap only travels with its file
        (frame(tr.HELLO, HELLO_BODY, frm=3) + frame(tr.MSG, [[1, 2, 3]], frm=3), "undecodable_message"),
        (
            frame(tr.HELLO, HELLO_BODY, frm=3) + frame(tr.MSG, [heartbeat(1, 2, 1).to_wire()], frm=1),
            "from_id_mismatch",
        ),
    ],
    ids=[
        "garbage",
        "random",
        "huge-length",
        "to-id",
        "unknown-from",
        "version",
        "no-hello",
        "short-list",
        "huge-after-hello",
        "message-to",
        "snap-in-msg",
        "bad-message",
        "from-switch",
    ],
)
async def test_bad_input_rejected_and_logged(
    trio_unverified: list[Member], warnings_log: pytest.LogCaptureFixture, data: bytes, reason: str | None
) -> None:
    a, b, _ = trio_unverified
    reader, writer = await raw_connect(b)
    writer.write(data)
    await writer.drain()
    if reason is not None:
        assert await closed_by_peer(reader)
        assert reason in rejections(warnings_log)
    writer.close()
    a.t.send([heartbeat(1, 2, 5)])
    await wait_until(lambda: len(b.delivered) == 1)
    assert b.delivered == [heartbeat(1, 2, 5)]


# ---- snapshots ----


async def test_snapshot_streams_byte_identical(trio_: list[Member], tmp_path: Path) -> None:
    a, b, _ = trio_
    payload = os.urandom(3 * snapfiles.CHUNK_SIZE + 12345)
    a.source = tmp_path / "backend-copy.db"
    a.source.write_bytes(payload)
    m = snap_msg(1, 2, index=50)
    a.t.send([m, heartbeat(1, 2, 1)])
    await wait_until(lambda: a.snap_status == [(2, True)])
    assert len(b.snapshots) == 1
    got_msg, path = b.snapshots[0]
    assert got_msg == m
    assert path.parent == b.snap_dir and "1" in path.name and "32" in path.name  # from-id and index (hex)
    assert path.read_bytes() == payload
    assert [p.name for p in b.snap_dir.iterdir()] == [path.name]  # no temp file left
    assert heartbeat(1, 2, 1) in b.delivered and m not in b.delivered  # MsgSnap only via deliver_snapshot
    assert a.source.exists()  # the source file is the caller's


async def test_second_snapshot_while_one_in_flight_fails_fast(trio_: list[Member], tmp_path: Path) -> None:
    a, b, _ = trio_
    a.source = tmp_path / "s.db"
    a.source.write_bytes(b"s" * 1000)
    a.t.send([snap_msg(1, 2, 50), snap_msg(1, 2, 51)])
    await wait_until(lambda: len(a.snap_status) == 2)
    assert sorted(a.snap_status) == [(2, False), (2, True)]
    assert [m.snapshot.metadata.index for m, _ in b.snapshots] == [50]


async def test_snapshot_connection_dies_midway_sender_reports_failure(tmp_path: Path) -> None:
    got = 0

    async def dies_after_a_chunk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal got
        try:
            assert (await read_frame(reader))[3] == tr.HELLO
            if (await read_frame(reader))[3] == tr.SNAP_BEGIN:  # (the message connection sends nothing more)
                got = len((await read_frame(reader))[4])
        except asyncio.IncompleteReadError:
            pass
        writer.transport.abort()

    server = await asyncio.start_server(dies_after_a_chunk, "127.0.0.1", 0)
    a = await Member(1, tmp_path).start()
    a.t.set_peers({2: f"127.0.0.1:{server.sockets[0].getsockname()[1]}"})
    a.source = tmp_path / "big.db"
    a.source.write_bytes(b"z" * (6 * snapfiles.CHUNK_SIZE))
    try:
        a.t.send([snap_msg(1, 2)])
        await wait_until(lambda: a.snap_status == [(2, False)])
        assert got == snapfiles.CHUNK_SIZE
    finally:
        await a.t.stop()
        server.close()
        await server.wait_closed()


async def test_snapshot_connection_dies_midway_receiver_leaves_no_file(
    trio_unverified: list[Member], warnings_log: pytest.LogCaptureFixture
) -> None:
    _, b, _ = trio_unverified
    _, writer = await raw_connect(b)
    writer.write(frame(tr.HELLO, HELLO_BODY, frm=3))
    writer.write(frame(tr.SNAP_BEGIN, [snap_msg(3, 2).to_wire(), 3 << 20], frm=3))
    writer.write(frame(tr.SNAP_CHUNK, b"a" * (1 << 20), frm=3))
    await writer.drain()
    await wait_until(lambda: any(b.snap_dir.glob("*.tmp")))  # the receiver is writing its temp file
    writer.transport.abort()
    await wait_until(lambda: not any(b.snap_dir.iterdir()))
    assert b.snapshots == []
    assert any("snapshot stream broke" in r.getMessage() for r in warnings_log.records)


async def test_snapshot_with_wrong_crc_is_discarded(
    trio_unverified: list[Member], warnings_log: pytest.LogCaptureFixture
) -> None:
    _, b, _ = trio_unverified
    data = b"q" * 5000
    reader, writer = await raw_connect(b)
    writer.write(frame(tr.HELLO, HELLO_BODY, frm=3))
    writer.write(frame(tr.SNAP_BEGIN, [snap_msg(3, 2).to_wire(), len(data)], frm=3))
    writer.write(frame(tr.SNAP_CHUNK, data, frm=3))
    writer.write(frame(tr.SNAP_END, zlib.crc32(data) ^ 1, frm=3))
    await writer.drain()
    assert await closed_by_peer(reader)  # no ACK
    writer.close()
    await wait_until(lambda: not any(b.snap_dir.iterdir()))
    assert b.snapshots == []
    assert "snapshot_crc_mismatch" in rejections(warnings_log)


async def test_raw_snapshot_with_right_crc_is_acked(trio_unverified: list[Member]) -> None:
    """The counterpart of the test above: the same stream with the right CRC is accepted."""
    _, b, _ = trio_unverified
    data = b"q" * 5000
    reader, writer = await raw_connect(b)
    writer.write(frame(tr.HELLO, HELLO_BODY, frm=3))
    writer.write(frame(tr.SNAP_BEGIN, [snap_msg(3, 2).to_wire(), len(data)], frm=3))
    writer.write(frame(tr.SNAP_CHUNK, data, frm=3))
    writer.write(frame(tr.SNAP_END, zlib.crc32(data), frm=3))
    await writer.drain()
    async with asyncio.timeout(30.0):
        assert await read_frame(reader) == [CLUSTER, 2, 3, tr.SNAP_ACK, 50]
    writer.close()
    assert len(b.snapshots) == 1 and b.snapshots[0][1].read_bytes() == data


# ---- peer changes and stop ----


async def test_set_peers_removing_a_peer_stops_traffic(trio_: list[Member], tmp_path: Path) -> None:
    a, b, c = trio_
    a.t.send([heartbeat(1, 2, 1), heartbeat(1, 3, 1)])
    await wait_until(lambda: len(b.delivered) == 1 and len(c.delivered) == 1)
    a.t.set_peers({3: c.addr})  # 2 removed on a's side
    b.t.set_peers({1: a.addr})  # 3 removed on b's side
    a.t.send([heartbeat(1, 2, 2), heartbeat(1, 3, 2)])
    c.t.send([heartbeat(3, 2, 2)])
    await wait_until(lambda: len(c.delivered) == 2)
    await asyncio.sleep(0.2)
    assert b.delivered == [heartbeat(1, 2, 1)]
    assert a.unreachable == [] and a.snap_status == []


async def test_set_peers_new_address_redials(trio_: list[Member], tmp_path: Path) -> None:
    a, b, _ = trio_
    (tmp_path / "b2").mkdir()
    b2 = await Member(2, tmp_path / "b2").start()
    b2.t.set_peers({1: a.addr})
    try:
        a.t.send([heartbeat(1, 2, 1)])
        await wait_until(lambda: len(b.delivered) == 1)
        a.t.set_peers({2: b2.addr, 3: trio_[2].addr})
        a.t.send([heartbeat(1, 2, 2)])
        await wait_until(lambda: len(b2.delivered) == 1)
        assert b2.delivered == [heartbeat(1, 2, 2)]
    finally:
        await b2.t.stop()


async def test_stop_is_clean(tmp_path: Path, recwarn: pytest.WarningsRecorder) -> None:
    members = [await Member(i, tmp_path).start() for i in (1, 2)]
    a, b = members
    for m in members:
        m.t.set_peers({o.id: o.addr for o in members})
    a.source = tmp_path / "big.db"
    a.source.write_bytes(b"z" * (8 * snapfiles.CHUNK_SIZE))
    a.t.send([heartbeat(1, 2, 1)])
    await wait_until(lambda: len(b.delivered) == 1)
    a.t.send([snap_msg(1, 2), heartbeat(1, 2, 2)])  # a snapshot in flight while stopping
    await wait_until(lambda: any(b.snap_dir.glob("*.tmp")))
    for m in members:
        await m.t.stop()
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert not any(b.snap_dir.iterdir())
    assert a.snap_status == []  # no callbacks after stop
    for m in members:
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", m.t.bound_ports[0])
    a.t.send([heartbeat(1, 2, 3)])  # harmless after stop
    await a.t.stop()  # idempotent
    gc.collect()
    assert not [w for w in recwarn if issubclass(w.category, ResourceWarning | RuntimeWarning)]


async def test_start_raises_oserror_when_port_taken(tmp_path: Path) -> None:
    a = await Member(1, tmp_path).start()
    b = Member(2, tmp_path)
    try:
        with pytest.raises(OSError):
            await b.t.start([a.addr])
        assert b.t.bound_ports == []
    finally:
        await a.t.stop()
        await b.t.stop()


def test_parse_address() -> None:
    assert tr.parse_address("127.0.0.1:2380") == ("127.0.0.1", 2380)
    assert tr.parse_address("[::1]:0") == ("::1", 0)
    assert tr.parse_address("http://node-1:2380") == ("node-1", 2380)
    for bad in ("nohost", "h:x", "https://h:1"):
        with pytest.raises(ValueError):
            tr.parse_address(bad)


# ---- the same scenarios under uvloop ----


async def _in_three(tmp_path: Path, scenario: Callable, *args: object, **kw: object) -> None:
    async with three(tmp_path, **kw) as members:
        await scenario(members, *args)


UVLOOP_SCENARIOS: dict[str, Callable] = {
    "order": lambda tmp, log: _in_three(tmp, test_messages_delivered_in_order_between_three),
    "stranger": lambda tmp, log: _in_three(
        tmp, test_stranger_rejected_while_right_cluster_delivered, log, security=UNVERIFIED
    ),
    "snapshot": lambda tmp, log: _in_three(tmp, test_snapshot_streams_byte_identical, tmp),
    "snapshot-receiver-dies": lambda tmp, log: _in_three(
        tmp, test_snapshot_connection_dies_midway_receiver_leaves_no_file, log, security=UNVERIFIED
    ),
    "snapshot-sender-dies": lambda tmp, log: test_snapshot_connection_dies_midway_sender_reports_failure(tmp),
    "reconnect": lambda tmp, log: test_peer_down_then_up_gets_later_messages(tmp),
    "batching": lambda tmp, log: test_batching_many_sends_become_few_frames(tmp),
}


@pytest.mark.parametrize("name", sorted(UVLOOP_SCENARIOS))
def test_under_uvloop(tmp_path: Path, warnings_log: pytest.LogCaptureFixture, name: str) -> None:
    async def main() -> None:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        await UVLOOP_SCENARIOS[name](tmp_path, warnings_log)
        assert asyncio.all_tasks() == {asyncio.current_task()}

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
    assert not [r for r in warnings_log.records if r.name == "asyncio"]


# ---- requests, strangers, removed members ----


async def echo_handler(peer: int, body: bytes) -> bytes:
    if body == b"fail":
        raise tr.PeerRequestError("refused: fail")
    if body == b"boom":
        raise RuntimeError("a bug")
    return b"%d:%s" % (peer, body)


async def test_request_to_a_peer_and_from_a_stranger(tmp_path: Path) -> None:
    a = await Member(1, tmp_path).start()
    b = await Member(2, tmp_path, on_request=echo_handler).start()
    stranger = await Member(77, tmp_path, cluster_id=0xBAD).start()
    a.t.set_peers({2: b.addr})
    b.t.set_peers({1: a.addr})
    try:
        assert await a.t.request(b"hi", peer=2) == b"1:hi"
        # a member that knows neither the cluster nor its own id asks by address, as member 0
        assert await stranger.t.request(b"who", address=b.addr) == b"0:who"
        with pytest.raises(tr.PeerRequestError, match="refused: fail"):
            await a.t.request(b"fail", peer=2)
        with pytest.raises(tr.PeerRequestError, match="internal error"):
            await a.t.request(b"boom", peer=2)
        with pytest.raises(tr.PeerRequestError, match="answers no requests"):
            await b.t.request(b"x", peer=1)  # a has no handler
        with pytest.raises(tr.PeerRequestError, match="unknown peer"):
            await a.t.request(b"x", peer=9)
        with pytest.raises(tr.PeerRequestError, match="cannot ask"):
            await a.t.request(b"x", address=f"127.0.0.1:{free_port()}")
        a.t.send([heartbeat(1, 2, 4)])  # messages still flow beside requests
        await wait_until(lambda: b.from_peer(1) == [heartbeat(1, 2, 4)])
    finally:
        for m in (a, b, stranger):
            await m.t.stop()


async def test_a_stranger_may_only_ask(trio_: list[Member], warnings_log: pytest.LogCaptureFixture) -> None:
    _, b, _ = trio_
    reader, writer = await raw_connect(b)
    writer.write(frame(tr.HELLO, HELLO_BODY, frm=0, to=0, cluster=0))
    writer.write(frame(tr.MSG, [heartbeat(0, 2, 1).to_wire()], frm=0, to=0, cluster=0))
    await writer.drain()
    assert await closed_by_peer(reader)
    writer.close()
    assert "stranger_not_a_request" in rejections(warnings_log)
    assert b.delivered == []


async def test_request_that_gets_no_answer_times_out(tmp_path: Path) -> None:
    async def slow(peer: int, body: bytes) -> bytes:
        await asyncio.sleep(30)
        return b""

    a = await Member(1, tmp_path).start()
    b = await Member(2, tmp_path, on_request=slow).start()
    a.t.set_peers({2: b.addr})
    b.t.set_peers({1: a.addr})
    try:
        with pytest.raises(tr.PeerRequestError, match="no answer"):
            await a.t.request(b"x", peer=2, timeout=0.3)
    finally:
        await a.t.stop()
        await b.t.stop()


async def test_a_removed_member_is_told_so_on_every_kind_of_connection(tmp_path: Path) -> None:
    removed: list[int] = []
    a = await Member(1, tmp_path).start()
    b = await Member(2, tmp_path, on_request=echo_handler).start()
    gone = await Member(3, tmp_path, on_removed=lambda: removed.append(3)).start()
    a.t.set_peers({2: b.addr, 3: gone.addr})
    gone.t.set_peers({1: a.addr, 2: b.addr})
    b.t.set_peers({1: a.addr}, removed=[3])  # b applied the removal of 3; a not yet
    try:
        gone.t.send([heartbeat(3, 2, 1)])
        await wait_until(lambda: removed == [3])
        with pytest.raises(tr.PeerRequestError, match="permanently removed"):
            await gone.t.request(b"x", peer=2)
        await asyncio.sleep(0.05)
        assert removed == [3]  # reported once
        assert b.delivered == []
        gone.t.send([heartbeat(3, 1, 1)])  # a still takes it
        await wait_until(lambda: a.from_peer(3) == [heartbeat(3, 1, 1)])
    finally:
        for m in (a, b, gone):
            await m.t.stop()


async def test_active_since_follows_the_connection(tmp_path: Path) -> None:
    a = await Member(1, tmp_path).start()
    b = await Member(2, tmp_path).start()
    a.t.set_peers({2: b.addr})
    b.t.set_peers({1: a.addr})
    loop = asyncio.get_running_loop()
    try:
        await wait_until(lambda: a.t.active_since(2) is not None)
        since = a.t.active_since(2)
        assert since is not None and since <= loop.time()
        assert a.t.active_since(9) is None
        await b.t.stop()
        a.t.send([heartbeat(1, 2, 1)])
        await wait_until(lambda: a.t.active_since(2) is None, timeout=5)
    finally:
        await a.t.stop()
