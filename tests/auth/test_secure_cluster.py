"""Three members with client and peer TLS (client certificates both ways) and auth enabled.

The chaos register workload runs on it under kills and partitions and stays linearizable, as the
``chaos`` user whose role covers only the workload's keys. Then strangers try the peer ports: in
plaintext, with a certificate of another CA, with the cluster's CA but another name than
--peer-cert-allowed-cn, with the members' own certificate (stolen) posing as another member; and a
whole member process started without the cluster's peer certificates tries to join. None gets a
message in: the term and the leader stay, and the cluster keeps serving.
"""

from __future__ import annotations

import io
import json
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

from chaos import security
from chaos.cluster import LocalCluster
from chaos.launch import RAFTKV, MemberProcess
from chaos.runner import RunConfig, run
from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc as rpc
from tests.auth import certs
from tests.auth import peer_attack as pa
from tests.procs import free_port

pytestmark = pytest.mark.integration
T = TypeVar("T")


def test_register_workload_under_kills_and_partitions_with_tls_and_auth(tmp_path: Path) -> None:
    log = io.StringIO()
    cfg = RunConfig(
        workload="register",
        nemesis="kill,partition",
        time_s=16,
        min_ok=300,
        out=tmp_path / "run",
        progress=False,
        seed=15,
        interval=2.0,
        fault_duration=1.5,
        secure=True,
    )
    try:
        code, verdict = run(cfg, stream=log)
    finally:
        security.use(None)
    assert code == 0, json.dumps(verdict, indent=1)[:3000] + log.getvalue()
    assert verdict["converged"] and verdict["ops"]["ok"] >= 300 and verdict["faults"]
    assert {f["kind"] for f in verdict["faults"]} >= {"kill", "partition"}
    assert verdict["security"] == {
        "auth_enabled": True,
        "outside_prefix_refused": True,
        "workload_prefix_served": True,
        "no_certificate_refused": True,
    }


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, security.Pki]]:
    base = tmp_path_factory.mktemp("secure")
    ports = [(free_port(), free_port()) for _ in range(3)]
    cluster = LocalCluster(base / "cluster", size=3, ports=ports, distinct_hosts=True)
    pki = security.Pki(base / "pki", [m.host for m in cluster.members])
    for m in cluster.members:
        m.args.extend(pki.member_flags())
        m.scheme = "https"
    security.use(pki.root)  # what the cluster's own readiness checks dial with, while it starts
    try:
        cluster.start(timeout=60)
        security.enable_auth(cluster.members[0].endpoint, pki)
        security.use(None)  # the tests name their credentials; others in this module dial plaintext
        yield cluster, pki
    finally:
        security.use(None)
        cluster.stop()


def learn(cluster: LocalCluster, pki: security.Pki) -> pa.Ids:
    with security.channel(cluster.members[0].endpoint, pki.root) as ch:
        return pa.learn(cluster.members[0].endpoint, ch)


def peer_context(cert: Path | None, key: Path | None, ca: Path | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    if ca is not None:
        ctx.load_verify_locations(cafile=str(ca))
    else:
        ctx.verify_mode = ssl.CERT_NONE
    if cert is not None and key is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def still_serving(cluster: LocalCluster, pki: security.Pki, before: pa.Ids, tag: str) -> None:
    assert all(m.running() for m in cluster.members)
    after = learn(cluster, pki)
    assert (after.term, after.leader) == (before.term, before.leader)
    for i, m in enumerate(cluster.members):
        with security.channel(m.endpoint, pki.client) as ch:
            rpc.KVStub(ch).Put(pb.PutRequest(key=f"r/{tag}/{i}".encode(), value=b"ok"), timeout=10)


def test_strangers_on_the_peer_port_get_nothing_in(secured: tuple[LocalCluster, security.Pki], tmp_path: Path) -> None:
    cluster, pki = secured
    ids = learn(cluster, pki)
    other = certs.Pki(tmp_path / "other")  # another CA
    wrong_cert, wrong_key = _issue_with(pki, "intruder")
    contexts = {
        "plaintext": None,
        "other-ca": peer_context(other.server_cert, other.server_key, None),
        "wrong-cn": peer_context(wrong_cert, wrong_key, pki.ca),
        "stolen-member-cert": peer_context(pki.member_cert, pki.member_key, pki.ca),
    }
    names = [m.name for m in cluster.members]
    for what, ctx in contexts.items():
        for i, target in enumerate(cluster.members):
            frm = ids.member_ids[names[(i + 1) % 3]]
            to = ids.member_ids[target.name]
            data = pa.hello(ids, frm, to) + pa.messages(ids, frm, to, pa.heartbeat(frm, to, ids.term + 1000))
            try:
                sock = pa.connect((target.host, target.peer_port), ctx)
            except (ssl.SSLError, ConnectionError):
                continue  # refused in the handshake
            assert pa.send_and_wait_closed(sock, data), f"{what}: the member kept the connection"
    still_serving(cluster, pki, ids, "strangers")


def _issue_with(pki: security.Pki, cn: str) -> tuple[Path, Path]:
    """A certificate of the cluster's own CA, for another name than the members'."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ca_cert = x509.load_pem_x509_certificate(pki.ca.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(ca_cert.not_valid_before_utc)
        .not_valid_after(ca_cert.not_valid_after_utc)
        .sign(pki.ca_key, hashes.SHA256())
    )
    c, k = pki.dir / f"{cn}.pem", pki.dir / f"{cn}-key.pem"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return c, k


def test_a_member_without_the_peer_certificates_cannot_join(
    secured: tuple[LocalCluster, security.Pki], tmp_path: Path
) -> None:
    cluster, pki = secured
    ids = learn(cluster, pki)
    real = cluster.members[1]
    client_port, peer_port = free_port(), free_port()
    impostor_log = tmp_path / "impostor.log"
    impostor = MemberProcess(real.name, "127.0.0.1", client_port, peer_port, tmp_path / "impostor.etcd", impostor_log)
    impostor.spawn(
        [
            *RAFTKV,
            f"--name={real.name}",
            f"--data-dir={impostor.data_dir}",
            f"--listen-client-urls={impostor.client_url}",
            f"--advertise-client-urls={impostor.client_url}",
            f"--listen-peer-urls={impostor.peer_url}",
            f"--initial-advertise-peer-urls={real.peer_url}",  # the real member's id
            f"--initial-cluster={cluster.initial_cluster}",
            f"--initial-cluster-token={cluster.token}",
            "--log-level=info",
        ]
    )
    try:
        deadline = time.monotonic() + 60
        while (
            impostor_log.read_text().count("peer unreachable") + impostor_log.read_text().count("peer connection lost")
            < 2
        ):  # it tried both other members, and failed
            assert impostor.running(), impostor_log.read_text()[-2000:]
            assert time.monotonic() < deadline, impostor_log.read_text()[-2000:]
            time.sleep(0.1)
        still_serving(cluster, pki, ids, "impostor")
    finally:
        impostor.stop()


def test_leases_through_a_follower_with_tls_and_certificate_users(secured: tuple[LocalCluster, security.Pki]) -> None:
    cluster, pki = secured
    ids = learn(cluster, pki)
    follower = next(m for m in cluster.members if ids.member_ids[m.name] != ids.leader)
    nosy_cert, nosy_key = _issue_with(pki, "nosy")
    nosy = security.ClientCredentials(pki.ca, nosy_cert, nosy_key)
    with security.channel(follower.endpoint, pki.client) as ch:
        lease = rpc.LeaseStub(ch)
        lid = lease.LeaseGrant(pb.LeaseGrantRequest(TTL=30), timeout=10).ID
        rpc.KVStub(ch).Put(pb.PutRequest(key=b"r/leased", value=b"v", lease=lid), timeout=10)
        renewed = next(lease.LeaseKeepAlive(iter([pb.LeaseKeepAliveRequest(ID=lid)]), timeout=10))
        assert lid == renewed.ID and renewed.TTL > 0  # forwarded to the leader over TLS
        ttl = lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=lid, keys=True), timeout=10)
        assert list(ttl.keys) == [b"r/leased"] and ttl.TTL > 0
    with security.channel(follower.endpoint, nosy) as ch:  # a certificate user who may not read the key
        with pytest.raises(grpc.RpcError) as info:
            rpc.LeaseStub(ch).LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=lid, keys=True), timeout=10)
        assert info.value.details() == "etcdserver: permission denied"
        with pytest.raises(grpc.RpcError) as info:
            rpc.LeaseStub(ch).LeaseRevoke(pb.LeaseRevokeRequest(ID=lid), timeout=10)
        assert info.value.details() == "etcdserver: permission denied"


def _when_healthy(call: Callable[[], T], timeout: float = 60.0) -> T:
    """call, asked again while the cluster answers UNAVAILABLE (``unhealthy cluster``, no leader)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def test_membership_changes_are_for_admins_and_a_member_joins_over_peer_tls(
    secured: tuple[LocalCluster, security.Pki],
) -> None:
    """MemberAdd needs the root role; the added member, which knows nobody's id yet, asks for the
    cluster over peer TLS with its certificate (a stranger's one question), joins and catches up;
    removed again, it stops."""
    cluster, pki = secured
    new = cluster.add_process("m4", free_port(), free_port())
    try:
        with security.channel(cluster.members[0].endpoint, pki.client) as ch:
            with pytest.raises(grpc.RpcError) as info:
                rpc.ClusterStub(ch).MemberAdd(pb.MemberAddRequest(peerURLs=[new.peer_url]), timeout=10)
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            rpc.KVStub(ch).Put(pb.PutRequest(key=b"r/before-m4", value=b"v"), timeout=10)
        with security.channel(cluster.members[0].endpoint, pki.root) as ch:
            # asked again while etcd's strict reconfiguration check finds the members connected too briefly
            added = _when_healthy(
                lambda: rpc.ClusterStub(ch).MemberAdd(pb.MemberAddRequest(peerURLs=[new.peer_url]), timeout=30)
            )
        security.use(pki.root)  # what the readiness check dials with
        try:
            cluster.start_member(new.name, timeout=60)
        finally:
            security.use(None)
        assert "joining an existing cluster" in new.log_path.read_text()
        deadline = time.monotonic() + 60
        with security.channel(new.endpoint, pki.client) as ch:
            while True:
                got = rpc.KVStub(ch).Range(pb.RangeRequest(key=b"r/before-m4", serializable=True), timeout=10)
                if got.kvs:
                    break
                assert time.monotonic() < deadline, "the joined member did not catch up"
                time.sleep(0.2)
        with security.channel(cluster.members[0].endpoint, pki.root) as ch:
            _when_healthy(
                lambda: rpc.ClusterStub(ch).MemberRemove(pb.MemberRemoveRequest(ID=added.member.ID), timeout=30)
            )
        assert new.proc is not None and new.proc.wait(60) == 0  # told it was removed, it stops
    finally:
        cluster.stop_member(new.name)
        cluster.forget(new.name)
    still_serving(cluster, pki, learn(cluster, pki), "after-m4")


def test_peer_auto_tls_cluster_replicates(tmp_path: Path) -> None:
    ports = [(free_port(), free_port()) for _ in range(3)]
    cluster = LocalCluster(tmp_path / "cluster", size=3, ports=ports, extra_args=["--peer-auto-tls"])
    for m in cluster.members:
        m.peer_scheme = "https"
    try:
        cluster.start(timeout=60)
        for i, m in enumerate(cluster.members):
            with grpc.insecure_channel(m.endpoint) as ch:
                rpc.KVStub(ch).Put(pb.PutRequest(key=f"k{i}".encode(), value=b"v"), timeout=10)
        for m in cluster.members:
            assert (m.data_dir / "fixtures" / "peer" / "cert.pem").exists()
            with grpc.insecure_channel(m.endpoint) as ch:
                assert rpc.KVStub(ch).Range(pb.RangeRequest(key=b"k", range_end=b"l"), timeout=10).count == 3
    finally:
        cluster.stop()
