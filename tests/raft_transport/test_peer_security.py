"""raft.transport's defenses, over real sockets: who is on the other end, and what it may send.

A raw client posing as member 3 (the cluster and member ids are no secret) is asked about by
dialling member 3 at its address, which knows no such connection, so nothing it sends is read;
the real member 3 is verified and delivered. Then: every message must come from the member that
connected, terms and ids are range-checked, a connection that sends nothing is dropped, at most
MAX_PENDING wait for verification, and with peer TLS a certificate of another CA, or one whose
common name is not --peer-cert-allowed-cn, is refused. A member's REQUEST is verified like its
messages; a stranger (member 0 of cluster 0) reaches only the request handler, as peer 0.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import msgpack
import pytest
import trustme

from raft import transport as tr
from raft.core.types import Message, MessageType
from raft.net import listener
from tests.raft_transport.test_transport import (
    CLUSTER,
    HELLO_BODY,
    UNVERIFIED,
    Member,
    closed_by_peer,
    frame,
    heartbeat,
    raw_connect,
    rejections,
    three,
    wait_until,
)


@pytest.fixture
async def trio_(tmp_path: Path) -> AsyncIterator[list[Member]]:
    async with three(tmp_path) as members:
        yield members


@pytest.fixture
def warnings_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="raftkv.transport")
    return caplog


async def test_a_raw_client_posing_as_a_member_is_not_verified(
    trio_: list[Member], warnings_log: pytest.LogCaptureFixture
) -> None:
    _, b, c = trio_
    reader, writer = await raw_connect(b)
    writer.write(frame(tr.HELLO, HELLO_BODY, frm=3) + frame(tr.MSG, [heartbeat(3, 2, 99).to_wire()], frm=3))
    await writer.drain()
    assert await closed_by_peer(reader)
    writer.close()
    c.t.send([heartbeat(3, 2, 7)])  # the real member 3 is verified and heard
    await wait_until(lambda: heartbeat(3, 2, 7) in b.delivered)
    assert [m.commit for m in b.from_peer(3)] == [7]
    assert "identity_not_verified" in rejections(warnings_log)


async def test_a_request_posing_as_a_member_is_not_verified_while_strangers_may_only_ask(
    tmp_path: Path, warnings_log: pytest.LogCaptureFixture
) -> None:
    asked: list[tuple[int, bytes]] = []

    async def handler(peer: int, body: bytes) -> bytes:
        asked.append((peer, body))
        return b"answer"

    async with three(tmp_path) as (_a, b, c):
        b.t._on_request = handler  # member 2 answers requests
        reader, writer = await raw_connect(b)
        writer.write(frame(tr.HELLO, HELLO_BODY, frm=3) + frame(tr.REQUEST, b"promote", frm=3))
        await writer.drain()
        assert await closed_by_peer(reader)  # member 3 knows no such connection: nothing is read
        writer.close()
        assert "identity_not_verified" in rejections(warnings_log)
        assert asked == []
        # the real member 3 passes the dial-back; a member that knows no cluster asks as member 0
        assert await c.t.request(b"hashkv", peer=2) == b"answer"
        assert await tr.ask(b.addr, b"members") == b"answer"
        assert asked == [(3, b"hashkv"), (0, b"members")]


async def test_verify_answers_only_for_its_own_connections(trio_: list[Member]) -> None:
    a, b, _ = trio_
    a.t.send([heartbeat(1, 2, 1)])
    await wait_until(lambda: len(b.delivered) == 1)
    (nonce,) = [n for n, peer in a.t._nonces.items() if peer == 2]
    for frm, asked, expected in ((2, nonce, True), (3, nonce, False), (2, b"x" * tr.NONCE_BYTES, False)):
        reader, writer = await raw_connect(a)
        writer.write(frame(tr.VERIFY, asked, frm=frm, to=1))
        await writer.drain()
        n = int.from_bytes(await reader.readexactly(4), "big")
        assert msgpack.unpackb(await reader.readexactly(n)) == [CLUSTER, 1, frm, tr.VERIFIED, expected]
        writer.close()


async def test_messages_must_come_from_the_member_that_connected(
    tmp_path: Path, warnings_log: pytest.LogCaptureFixture
) -> None:
    async with three(tmp_path, security=UNVERIFIED) as (_, b, _c):
        for msg, reason in (
            (heartbeat(1, 2, 5), "bad_message"),  # member 3's connection carrying member 1's message
            (Message(MessageType.HEARTBEAT, to=2, frm=3, term=2**64 - 1), "undecodable_message"),
            (Message(MessageType.HUP, to=2, frm=3, term=1), "undecodable_message"),  # a local message
            (Message(MessageType.APP, to=2, frm=3, term=2, index=5, entries=[]), None),  # fine
        ):
            reader, writer = await raw_connect(b)
            writer.write(frame(tr.HELLO, HELLO_BODY, frm=3) + frame(tr.MSG, [msg.to_wire()], frm=3))
            await writer.drain()
            if reason is None:
                await wait_until(lambda: any(m.type == MessageType.APP for m in b.delivered))
            else:
                assert await closed_by_peer(reader)
                assert reason in rejections(warnings_log)
            writer.close()
        assert [m.type for m in b.delivered] == [MessageType.APP]


async def test_silent_connections_are_dropped_and_bounded(
    trio_: list[Member], monkeypatch: pytest.MonkeyPatch, warnings_log: pytest.LogCaptureFixture
) -> None:
    a, b, _ = trio_
    monkeypatch.setattr(listener, "FIRST_FRAME_TIMEOUT", 0.3)
    conns = [await raw_connect(b) for _ in range(tr.MAX_PENDING + 3)]
    for reader, _ in conns[tr.MAX_PENDING :]:
        assert await closed_by_peer(reader)  # over the limit: at once
    assert "too_many_pending_connections" in rejections(warnings_log)
    for reader, writer in conns:
        async with asyncio.timeout(10):
            assert await reader.read() == b""  # every silent one, after the first-frame timeout
        writer.close()
    assert "slow_first_frame" in rejections(warnings_log)
    a.t.send([heartbeat(1, 2, 3)])
    await wait_until(lambda: heartbeat(1, 2, 3) in b.delivered)


def _tls(ca: trustme.CA, cn: str, tmp_path: Path, allowed_cn: str = "member") -> tr.PeerSecurity:
    leaf = ca.issue_cert("127.0.0.1", common_name=cn)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(server)
    ca.configure_trust(server)
    server.verify_mode = ssl.CERT_REQUIRED
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    leaf.configure_cert(client)
    ca.configure_trust(client)
    client.check_hostname = False

    def allow(cert: dict | None) -> bool:
        return bool(cert) and dict(x[0] for x in cert["subject"]).get("commonName") == allowed_cn

    return tr.PeerSecurity(server_ssl=server, client_ssl=client, allow_certificate=allow)


async def test_peer_tls_refuses_other_cas_and_other_names(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="raftkv.transport")
    ca = trustme.CA()
    good = [await Member(i, tmp_path, security=_tls(ca, "member", tmp_path)).start() for i in (1, 2)]
    stranger = await Member(3, tmp_path, security=_tls(trustme.CA(), "member", tmp_path)).start()
    misnamed_dir = tmp_path / "misnamed"
    misnamed_dir.mkdir()
    misnamed = await Member(4, misnamed_dir, security=_tls(ca, "intruder", tmp_path)).start()
    everyone = [*good, stranger, misnamed]
    try:
        for m in everyone:
            m.t.set_peers({o.id: o.addr for o in everyone})
        good[0].t.send([heartbeat(1, 2, 1)])
        stranger.t.send([heartbeat(3, 2, 1)])
        misnamed.t.send([heartbeat(4, 2, 1)])
        await wait_until(lambda: heartbeat(1, 2, 1) in good[1].delivered, timeout=10)
        await wait_until(lambda: "certificate_not_allowed" in rejections(caplog), timeout=10)
        assert [m.frm for m in good[1].delivered] == [1]
    finally:
        for m in everyone:
            await m.t.stop()


async def test_a_newer_connection_of_a_member_replaces_its_oldest(tmp_path: Path) -> None:
    """A partition can leave a member's old connection open forever on our side: past
    MAX_CONNECTIONS_PER_PEER the oldest goes, and the member's new connection is served."""
    async with three(tmp_path, security=UNVERIFIED) as (_, b, _c):
        conns = []
        for i in range(tr.MAX_CONNECTIONS_PER_PEER + 1):
            reader, writer = await raw_connect(b)
            writer.write(frame(tr.HELLO, HELLO_BODY, frm=3) + frame(tr.MSG, [heartbeat(3, 2, i + 1).to_wire()], frm=3))
            await writer.drain()
            await wait_until(lambda i=i: heartbeat(3, 2, i + 1) in b.delivered)
            conns.append((reader, writer))
        assert await closed_by_peer(conns[0][0])  # the oldest was let go
        reader, writer = conns[-1]
        writer.write(frame(tr.MSG, [heartbeat(3, 2, 99).to_wire()], frm=3))
        await writer.drain()
        await wait_until(lambda: heartbeat(3, 2, 99) in b.delivered)
        for _, w in conns:
            w.close()
