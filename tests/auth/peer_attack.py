"""An attacker on the peer port: frames forged with the cluster id and member ids that anyone can
read from ``etcdctl member list -w json``, sent over plain TCP or TLS (tests/auth/test_peer_attacks.py,
tests/auth/test_secure_cluster.py)."""

from __future__ import annotations

import os
import socket
import ssl
import struct
import time
from dataclasses import dataclass

import grpc
import msgpack

from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc
from raft import transport as tr
from raft.core.types import Entry, Message, MessageType


@dataclass(frozen=True)
class Ids:
    cluster_id: int
    member_ids: dict[str, int]  # member name -> id
    leader: int
    term: int


def learn(endpoint: str, channel: grpc.Channel | None = None) -> Ids:
    """What the member list and status tell anyone who can reach a client port."""
    ch = channel or grpc.insecure_channel(endpoint)
    try:
        members = rpc_pb2_grpc.ClusterStub(ch).MemberList(pb.MemberListRequest(), timeout=10)
        st = rpc_pb2_grpc.MaintenanceStub(ch).Status(pb.StatusRequest(), timeout=10)
    finally:
        if channel is None:
            ch.close()
    return Ids(members.header.cluster_id, {m.name: m.ID for m in members.members}, st.leader, st.raftTerm)


def frame(ids: Ids, frm: int, to: int, kind: int, body: object) -> bytes:
    payload = msgpack.packb([ids.cluster_id, frm, to, kind, body])
    return struct.pack(">I", len(payload)) + payload


def hello(ids: Ids, frm: int, to: int) -> bytes:
    return frame(ids, frm, to, tr.HELLO, [tr.PROTOCOL_VERSION, os.urandom(tr.NONCE_BYTES)])


def messages(ids: Ids, frm: int, to: int, *msgs: Message) -> bytes:
    return frame(ids, frm, to, tr.MSG, [m.to_wire() for m in msgs])


def heartbeat(frm: int, to: int, term: int, commit: int = 0) -> Message:
    return Message(MessageType.HEARTBEAT, to=to, frm=frm, term=term, commit=commit)


def append(frm: int, to: int, term: int, index: int, log_term: int, data: bytes, commit: int = 0) -> Message:
    return Message(
        MessageType.APP,
        to=to,
        frm=frm,
        term=term,
        log_term=log_term,
        index=index,
        entries=[Entry(term, index + 1, data=data)],
        commit=commit,
    )


def connect(address: tuple[str, int], context: ssl.SSLContext | None = None, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(address, timeout=timeout)
    if context is not None:
        return context.wrap_socket(sock, server_hostname=address[0])
    return sock


def send_and_wait_closed(sock: socket.socket, data: bytes, timeout: float = 30.0) -> bool:
    """Sends data, then waits (up to timeout) for the member to close the connection; True if it did."""
    deadline = time.monotonic() + timeout
    try:
        sock.sendall(data)
        while time.monotonic() < deadline:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            if sock.recv(65536) == b"":
                return True
    except (ConnectionError, ssl.SSLError, OSError):
        return True
    finally:
        sock.close()
    return False
