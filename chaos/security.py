"""Chaos runs against a secured cluster (``raftkv chaos run --secure``): client and peer TLS with
client certificates, and auth enabled, for raftkv and for etcd alike.

``Pki`` makes a CA and certificates at run time in ``<out>/pki`` (never kept anywhere else): one for
the members (every loopback address the local cluster uses, usable as server and as client), one
for the harness's admin (CN ``root``) and one for the workload's clients (CN ``chaos``). The members
get etcd's TLS flags for both ports with client certificate authentication, so the CN is the user.
``enable_auth`` then makes the root user and role and a ``chaos`` user without a password whose role
may read and write only the workloads' key prefixes, and enables auth: every request of the run is
authenticated and permission-checked.

Every gRPC channel of the harness comes from ``channel`` / ``aio_channel``, which use the
credentials set with ``use`` (plaintext when none are).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

WORKLOAD_PREFIXES = (b"r/", b"a/", b"l/", b"w/")


@dataclass(frozen=True)
class ClientCredentials:
    ca: Path
    cert: Path
    key: Path

    def grpc(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self.ca.read_bytes(), self.key.read_bytes(), self.cert.read_bytes())


_current: ClientCredentials | None = None


def use(credentials: ClientCredentials | None) -> None:
    global _current
    _current = credentials


def current() -> ClientCredentials | None:
    return _current


def channel(endpoint: str, credentials: ClientCredentials | None = None) -> grpc.Channel:
    creds = credentials or _current
    if creds is None:
        return grpc.insecure_channel(endpoint)
    return grpc.secure_channel(endpoint, creds.grpc())


def aio_channel(endpoint: str, options: list[tuple[str, Any]] | None = None) -> grpc.aio.Channel:
    if _current is None:
        return grpc.aio.insecure_channel(endpoint, options=options)
    return grpc.aio.secure_channel(endpoint, _current.grpc(), options=options)


class Pki:
    """A CA and the certificates of a secured run, made with ``cryptography``."""

    def __init__(self, directory: Path, hosts: list[str]) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "raftkv chaos CA")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        self.ca = directory / "ca.pem"
        self.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.ca_key = ca_key  # in memory only: tests issue more certificates with it

        def issue(name: str, cn: str, sans: list[str]) -> tuple[Path, Path]:
            key = ec.generate_private_key(ec.SECP256R1())
            alt: list[x509.GeneralName] = []
            for host in sans:
                try:
                    alt.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    alt.append(x509.DNSName(host))
            builder = (
                x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                .issuer_name(ca_name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=2))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(
                    x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                    critical=False,
                )
            )
            if alt:
                builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
            cert = builder.sign(ca_key, hashes.SHA256())
            cert_path, key_path = directory / f"{name}.pem", directory / f"{name}-key.pem"
            cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            key_path.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
            return cert_path, key_path

        self.member_cert, self.member_key = issue("member", "member", [*hosts, "localhost"])
        self.root = ClientCredentials(self.ca, *issue("root", "root", []))
        self.client = ClientCredentials(self.ca, *issue("chaos", "chaos", []))

    def member_flags(self) -> list[str]:
        cert, key, ca = self.member_cert, self.member_key, self.ca
        return [
            f"--cert-file={cert}",
            f"--key-file={key}",
            f"--trusted-ca-file={ca}",
            "--client-cert-auth",
            f"--peer-cert-file={cert}",
            f"--peer-key-file={key}",
            f"--peer-trusted-ca-file={ca}",
            "--peer-client-cert-auth",
            "--peer-cert-allowed-cn=member",
        ]


def enable_auth(endpoint: str, pki: Pki) -> dict[str, bool]:
    """Root user and role, the chaos user limited to the workloads' prefixes, then auth on; returns
    the checks made right after that it is enforced (recorded in the run's verdict)."""
    from proto.authpb import auth_pb2 as authpb
    from proto.etcdserverpb import rpc_pb2 as pb
    from proto.etcdserverpb import rpc_pb2_grpc

    with channel(endpoint, pki.root) as ch:
        auth = rpc_pb2_grpc.AuthStub(ch)
        auth.UserAdd(pb.AuthUserAddRequest(name="root", options=authpb.UserAddOptions(no_password=True)), timeout=10)
        auth.RoleAdd(pb.AuthRoleAddRequest(name="root"), timeout=10)
        auth.UserGrantRole(pb.AuthUserGrantRoleRequest(user="root", role="root"), timeout=10)
        auth.UserAdd(pb.AuthUserAddRequest(name="chaos", options=authpb.UserAddOptions(no_password=True)), timeout=10)
        auth.RoleAdd(pb.AuthRoleAddRequest(name="chaos"), timeout=10)
        for prefix in WORKLOAD_PREFIXES:
            end = prefix[:-1] + bytes([prefix[-1] + 1])
            perm = authpb.Permission(permType=authpb.Permission.READWRITE, key=prefix, range_end=end)
            auth.RoleGrantPermission(pb.AuthRoleGrantPermissionRequest(name="chaos", perm=perm), timeout=10)
        auth.UserGrantRole(pb.AuthUserGrantRoleRequest(user="chaos", role="chaos"), timeout=10)
        auth.AuthEnable(pb.AuthEnableRequest(), timeout=10)
    checks = {"auth_enabled": True}
    with channel(endpoint, pki.client) as ch:
        try:
            rpc_pb2_grpc.KVStub(ch).Range(pb.RangeRequest(key=b"outside/the/workload"), timeout=10)
            checks["outside_prefix_refused"] = False
        except grpc.RpcError as exc:
            checks["outside_prefix_refused"] = exc.code() == grpc.StatusCode.PERMISSION_DENIED
        try:
            rpc_pb2_grpc.KVStub(ch).Range(pb.RangeRequest(key=b"r/"), timeout=10)
            checks["workload_prefix_served"] = True
        except grpc.RpcError:
            checks["workload_prefix_served"] = False
    try:  # a client without a certificate cannot even connect
        with grpc.secure_channel(endpoint, grpc.ssl_channel_credentials(pki.ca.read_bytes())) as ch:
            rpc_pb2_grpc.KVStub(ch).Range(pb.RangeRequest(key=b"r/"), timeout=3)
        checks["no_certificate_refused"] = False
    except grpc.RpcError:
        checks["no_certificate_refused"] = True
    return checks
