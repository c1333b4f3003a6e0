"""Client TLS on one member: grpcio and etcdctl with certificates, and every way to get it wrong.

Certificates are made at test time (tests/auth/certs.py). The member requires client certificates
(--client-cert-auth with a trusted CA). Checked: a certificate of another CA, an expired one, no
certificate, a plaintext client on the TLS port and a TLS client on a plaintext port, a handshake
that never finishes, ALPN (h2 for gRPC, http/1.1 on the same port), the certificate rotated on
disk and picked up by the next handshake, TLS versions and cipher suites, and --auto-tls. After
each, the member still serves.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc as rpc
from tests.auth.certs import Pki
from tests.procs import ClientTLS, RaftkvMember, etcdctl, free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


METRICS_PORT = free_port()  # the module member's https:// --listen-metrics-urls


@pytest.fixture(scope="module")
def member(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RaftkvMember]:
    m = RaftkvMember(
        "m1",
        tmp_path_factory.mktemp("tls") / "m1.etcd",
        extra=[*pki.server_flags(), f"--listen-metrics-urls=https://127.0.0.1:{METRICS_PORT}"],
        tls=pki.client("admin"),
    )
    m.start()
    yield m
    m.stop()


def put_get(endpoint: str, creds: grpc.ChannelCredentials, key: bytes) -> bytes:
    with grpc.secure_channel(endpoint, creds) as ch:
        kv = rpc.KVStub(ch)
        kv.Put(pb.PutRequest(key=key, value=b"v-" + key), timeout=10)
        return kv.Range(pb.RangeRequest(key=key), timeout=10).kvs[0].value


def refused(endpoint: str, creds: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    ch = grpc.secure_channel(endpoint, creds) if creds is not None else grpc.insecure_channel(endpoint)
    with ch, pytest.raises(grpc.RpcError) as info:
        rpc.KVStub(ch).Range(pb.RangeRequest(key=b"k"), timeout=5)
    return info.value.code()


@contextlib.contextmanager
def tls_socket(port: int, ctx: ssl.SSLContext) -> Iterator[ssl.SSLSocket]:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        yield tls


def client_context(pki: Pki, tls: ClientTLS | None = None, alpn: list[str] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    if tls is not None and tls.cert and tls.key:
        ctx.load_cert_chain(str(tls.cert), str(tls.key))
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def test_grpc_and_etcdctl_with_client_certificates(member: RaftkvMember, pki: Pki) -> None:
    alice = pki.client("alice")
    assert put_get(member.endpoint, alice.credentials(), b"k1") == b"v-k1"
    out = etcdctl(member.endpoint, *alice.etcdctl_args(), "get", "k1", check=True).stdout
    assert out == "k1\nv-k1\n"


def test_wrong_certificates_and_plaintext_are_refused(member: RaftkvMember, pki: Pki) -> None:
    assert refused(member.endpoint, pki.foreign_client("alice").credentials()) == grpc.StatusCode.UNAVAILABLE
    assert refused(member.endpoint, pki.expired_client("alice").credentials()) == grpc.StatusCode.UNAVAILABLE
    no_cert = grpc.ssl_channel_credentials(pki.ca_file.read_bytes())
    assert refused(member.endpoint, no_cert) == grpc.StatusCode.UNAVAILABLE
    assert refused(member.endpoint, None) == grpc.StatusCode.UNAVAILABLE  # plaintext on the TLS port
    other_ca = Pki(pki.dir / "other")  # the member's certificate is not one the client trusts
    bad_trust = grpc.ssl_channel_credentials(other_ca.ca_file.read_bytes(), *_key_cert(pki.client("alice")))
    assert refused(member.endpoint, bad_trust) == grpc.StatusCode.UNAVAILABLE
    assert put_get(member.endpoint, pki.client("alice").credentials(), b"still") == b"v-still"


def _key_cert(tls: ClientTLS) -> tuple[bytes, bytes]:
    assert tls.key and tls.cert
    return tls.key.read_bytes(), tls.cert.read_bytes()


def test_tls_client_on_a_plaintext_port_is_refused(tmp_path: Path, pki: Pki) -> None:
    plain = RaftkvMember("p1", tmp_path / "p1.etcd").start()
    try:
        with socket.create_connection(("127.0.0.1", plain.port), timeout=10) as raw:
            ctx = client_context(pki)
            with pytest.raises((ssl.SSLError, ConnectionError)):
                ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        assert refused(plain.endpoint, pki.client("alice").credentials()) == grpc.StatusCode.UNAVAILABLE
        with grpc.insecure_channel(plain.endpoint) as ch:
            rpc.KVStub(ch).Put(pb.PutRequest(key=b"k", value=b"v"), timeout=10)
    finally:
        plain.stop()


def test_a_handshake_that_never_finishes_is_dropped(member: RaftkvMember, pki: Pki) -> None:
    stalled = [socket.create_connection(("127.0.0.1", member.port), timeout=60) for _ in range(20)]
    stalled[0].sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # the start of a ClientHello, then nothing
    try:
        assert put_get(member.endpoint, pki.client("alice").credentials(), b"during") == b"v-during"
        for sock in stalled:  # closed by the member's handshake timeout, not by us
            assert sock.recv(1) == b""
    finally:
        for sock in stalled:
            sock.close()


def test_alpn_selects_http2_or_http1_on_the_same_port(member: RaftkvMember, pki: Pki) -> None:
    alice = pki.client("alice")
    for offered, expected in ((["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1")):
        with tls_socket(member.port, client_context(pki, alice, offered)) as tls:
            assert tls.selected_alpn_protocol() == expected
            if expected == "http/1.1":
                tls.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert tls.recv(12).startswith(b"HTTP/1.1 ")
            else:
                tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
                head = tls.recv(9)
                assert head[3] == 0x04  # the member's SETTINGS frame


def test_an_https_metrics_url_is_served_with_the_client_certificate(member: RaftkvMember, pki: Pki) -> None:
    """As etcd: the metrics listener of an https:// URL speaks TLS with the client port's settings."""
    with tls_socket(METRICS_PORT, client_context(pki, pki.client("alice"), ["http/1.1"])) as tls:
        tls.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got = b""
        while chunk := tls.recv(65536):
            got += chunk
    assert got.startswith(b"HTTP/1.1 200 ") and b"etcd_server_has_leader 1.0" in got
    with socket.create_connection(("127.0.0.1", METRICS_PORT), timeout=10) as raw:  # no plaintext beside it
        raw.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        try:
            answer = raw.recv(65536)
        except ConnectionResetError:
            answer = b""
        assert not answer.startswith(b"HTTP/1.1 200")


def server_cn(member: RaftkvMember, pki: Pki) -> str:
    with tls_socket(member.port, client_context(pki, pki.client("alice"))) as tls:
        cert = tls.getpeercert()
    return dict(x[0] for x in cert["subject"])["commonName"]


def test_rotated_certificate_is_used_by_the_next_handshake(member: RaftkvMember, pki: Pki) -> None:
    assert server_cn(member, pki) == "member"
    with grpc.secure_channel(member.endpoint, pki.client("alice").credentials()) as kept:
        rpc.KVStub(kept).Put(pb.PutRequest(key=b"before", value=b"v"), timeout=10)
        cert, key = pki.issue("rotated", "127.0.0.1", "localhost", cn="member-rotated")
        for new, live in ((key, pki.server_key), (cert, pki.server_cert)):  # each file replaced at once
            tmp = live.with_suffix(".tmp")
            tmp.write_bytes(new.read_bytes())
            os.replace(tmp, live)
        deadline = time.monotonic() + 30
        while server_cn(member, pki) != "member-rotated":  # a key and certificate that match, on some handshake
            assert time.monotonic() < deadline, "the rotated certificate was never served"
            time.sleep(0.1)
        rpc.KVStub(kept).Put(pb.PutRequest(key=b"after", value=b"v"), timeout=10)  # the open connection goes on
    assert put_get(member.endpoint, pki.client("alice").credentials(), b"fresh") == b"v-fresh"


def test_versions_and_cipher_suites(tmp_path: Path, pki: Pki) -> None:
    flags = [
        *pki.server_flags(),
        "--tls-max-version=TLS1.2",
        "--cipher-suites=TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    ]
    alice = pki.client("alice")
    m = RaftkvMember("v1", tmp_path / "v1.etcd", extra=flags, tls=alice).start()
    try:
        with tls_socket(m.port, client_context(pki, alice)) as tls:
            assert tls.version() == "TLSv1.2" and tls.cipher()[0] == "ECDHE-ECDSA-AES256-GCM-SHA384"
        only13 = client_context(pki, alice)
        only13.minimum_version = ssl.TLSVersion.TLSv1_3
        with socket.create_connection(("127.0.0.1", m.port), timeout=10) as raw, pytest.raises(ssl.SSLError):
            only13.wrap_socket(raw, server_hostname="127.0.0.1")
        assert put_get(m.endpoint, alice.credentials(), b"k") == b"v-k"
    finally:
        m.stop()


def test_auto_tls_makes_its_own_certificate(tmp_path: Path) -> None:
    m = RaftkvMember("a1", tmp_path / "a1.etcd", extra=["--auto-tls"])
    m.tls = ClientTLS(tmp_path / "a1.etcd" / "fixtures" / "client" / "cert.pem")  # written at start
    m.start(wait=False)
    deadline = time.monotonic() + 30
    while not m.tls.ca.exists():
        assert time.monotonic() < deadline and m.proc is not None and m.proc.poll() is None
        time.sleep(0.05)
    m.wait_ready()
    try:
        out = etcdctl(m.endpoint, "--insecure-skip-tls-verify", "--insecure-transport=false", "put", "k", "v")
        assert out.returncode == 0, out.stderr
        assert refused(m.endpoint, None) == grpc.StatusCode.UNAVAILABLE
    finally:
        m.stop()
