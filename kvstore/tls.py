"""TLS for the client and peer ports with etcd's flags: settings, SSL contexts, self-signed certificates.

``TLSSettings`` holds one side's flags (``--cert-file``, ``--key-file``, ``--trusted-ca-file``,
``--client-cert-auth``, ``--auto-tls``, and for peers ``--peer-cert-allowed-cn`` /
``--peer-cert-allowed-hostname``). ``server_context`` builds the listener's context: ALPN ``h2``
and ``http/1.1`` (the client port serves both on one socket), the versions and cipher suites of
``--tls-min-version``, ``--tls-max-version`` and ``--cipher-suites`` (Go's names), and client
certificates required and verified against the trusted CA when ``--client-cert-auth`` (or, as
in etcd, when a trusted CA is given). The certificate, key and CA files are looked at on every
handshake (etcd reloads them per handshake too): when one changed, the next handshake uses a
context built from the new files, so certificates can be rotated without a restart. A change
that does not load (a half-written file) keeps the previous context and is logged.

``--auto-tls`` makes a self-signed certificate for the listen URLs' hosts in
``<data-dir>/fixtures/client`` (``fixtures/peer`` for ``--peer-auto-tls``), valid
``--self-signed-cert-validity`` years, as etcd does; clients must then skip verification.

``client_context`` is what a member dials with: to its peers (peer settings) and, for lease
forwarding, to the leader's client port (client settings).
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvstore.errors import StartupError

log = logging.getLogger("raftkv.tls")

VERSIONS = {
    "TLS1.0": ssl.TLSVersion.TLSv1,
    "TLS1.1": ssl.TLSVersion.TLSv1_1,
    "TLS1.2": ssl.TLSVersion.TLSv1_2,
    "TLS1.3": ssl.TLSVersion.TLSv1_3,
}

# Go's cipher suite names (crypto/tls, what --cipher-suites takes) -> OpenSSL's; TLS 1.3's suites
# are fixed in both and cannot be chosen
GO_CIPHERS = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}


@dataclass
class TLSSettings:
    cert_file: str = ""
    key_file: str = ""
    trusted_ca_file: str = ""
    client_cert_auth: bool = False
    auto_tls: bool = False
    allowed_cn: str = ""
    allowed_hostname: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file or self.key_file or self.auto_tls)

    @property
    def verify_clients(self) -> bool:
        return self.client_cert_auth or bool(self.trusted_ca_file)

    def check(self, prefix: str) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise StartupError(f"--{prefix}cert-file and --{prefix}key-file go together")
        if self.auto_tls and self.cert_file:
            raise StartupError(f"--{prefix}auto-tls and --{prefix}cert-file exclude each other")
        if (self.client_cert_auth or self.trusted_ca_file) and not self.enabled:
            raise StartupError(
                f"--{prefix}client-cert-auth and --{prefix}trusted-ca-file need TLS (--{prefix}cert-file "
                f"and --{prefix}key-file)"
            )
        if self.client_cert_auth and not self.trusted_ca_file:
            raise StartupError(f"--{prefix}client-cert-auth needs --{prefix}trusted-ca-file to verify certificates")
        if self.allowed_cn and self.allowed_hostname:
            raise StartupError("--peer-cert-allowed-cn and --peer-cert-allowed-hostname exclude each other")
        if (self.allowed_cn or self.allowed_hostname) and not self.verify_clients:
            raise StartupError("--peer-cert-allowed-cn/-hostname need --peer-client-cert-auth and a trusted CA")
        for path in (self.cert_file, self.key_file, self.trusted_ca_file):
            if path and not os.path.isfile(path):
                raise StartupError(f"TLS file {path} does not exist or is not a file")


@dataclass(frozen=True)
class Protocols:
    """What --tls-min-version, --tls-max-version and --cipher-suites ask for."""

    min_version: str = "TLS1.2"
    max_version: str = ""
    cipher_suites: tuple[str, ...] = ()

    def check(self) -> None:
        for flag, value in (("--tls-min-version", self.min_version), ("--tls-max-version", self.max_version)):
            if value and value not in VERSIONS:
                raise StartupError(f"{flag}: {value!r} is not one of {', '.join(VERSIONS)}")
        if self.max_version and VERSIONS[self.max_version] < VERSIONS[self.min_version or "TLS1.2"]:
            raise StartupError("--tls-max-version is below --tls-min-version")
        unknown = [c for c in self.cipher_suites if c not in GO_CIPHERS]
        if unknown:
            raise StartupError(f"--cipher-suites: unknown or unsupported cipher suites {unknown}")
        if self.cipher_suites and self.min_version == "TLS1.3":
            raise StartupError("--cipher-suites cannot be set when only TLS 1.3 is enabled (its suites are fixed)")

    def apply(self, ctx: ssl.SSLContext) -> None:
        ctx.minimum_version = VERSIONS[self.min_version or "TLS1.2"]
        if self.max_version:
            ctx.maximum_version = VERSIONS[self.max_version]
        if self.cipher_suites:
            ctx.set_ciphers(":".join(GO_CIPHERS[c] for c in self.cipher_suites))


def self_signed(directory: Path, hosts: list[str], years: int) -> tuple[str, str]:
    """(cert, key) paths of a self-signed certificate for hosts, made once in directory (etcd's SelfCert)."""
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    if cert_path.exists() and key_path.exists():
        return str(cert_path), str(key_path)
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "etcd")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365 * years))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH, x509.ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(cert_path), str(key_path)


def resolve_auto(tls: TLSSettings, directory: Path, hosts: list[str], years: int) -> TLSSettings:
    """The settings with --auto-tls turned into the paths of the self-signed certificate."""
    if not tls.auto_tls:
        return tls
    cert, key = self_signed(directory, hosts, years)
    return TLSSettings(cert, key, "", False, True, tls.allowed_cn, tls.allowed_hostname)


def _stamp(paths: tuple[str, ...]) -> tuple[Any, ...]:
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((st.st_ino, st.st_mtime_ns, st.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


class ServerTLS:
    """The listener's SSLContext, rebuilt on the handshake after a file changed."""

    def __init__(self, tls: TLSSettings, protocols: Protocols, alpn: tuple[str, ...]) -> None:
        self.tls = tls
        self.protocols = protocols
        self.alpn = alpn
        self._paths = tuple(p for p in (tls.cert_file, tls.key_file, tls.trusted_ca_file) if p)
        self._stamp = _stamp(self._paths)
        try:
            self._current = self._build()
        except (OSError, ssl.SSLError) as exc:
            raise StartupError(f"cannot load TLS certificate {tls.cert_file} / key {tls.key_file}: {exc}") from exc
        self.context = self._build()  # the one handed to the listener; it switches to _current per handshake
        self.context.sni_callback = self._on_hello  # type: ignore[assignment]
        self.reloads = 0

    def _build(self) -> ssl.SSLContext:
        tls = self.tls
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.protocols.apply(ctx)
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
        if tls.verify_clients:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cafile=tls.trusted_ca_file)
        ctx.set_alpn_protocols(list(self.alpn))
        ctx.options |= ssl.OP_NO_COMPRESSION
        return ctx

    def _on_hello(self, sslobj: Any, server_name: str | None, ctx: ssl.SSLContext) -> None:
        stamp = _stamp(self._paths)
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._current = self._build()
                self.reloads += 1
                log.info("reloaded TLS certificate", extra={"cert_file": self.tls.cert_file})
            except (OSError, ssl.SSLError) as exc:
                log.warning("changed TLS files do not load; keeping the previous ones", extra={"error": str(exc)})
        sslobj.context = self._current


class ClientTLS:
    """A dialer's context, rebuilt when its certificate, key or CA file changed (called per dial)."""

    def __init__(self, tls: TLSSettings, protocols: Protocols, alpn: tuple[str, ...] = ()) -> None:
        self.tls, self.protocols, self.alpn = tls, protocols, alpn
        self._paths = tuple(p for p in (tls.cert_file, tls.key_file, tls.trusted_ca_file) if p)
        self._stamp = _stamp(self._paths)
        self._context = client_context(tls, protocols, alpn)

    def __call__(self) -> ssl.SSLContext:
        stamp = _stamp(self._paths)
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._context = client_context(self.tls, self.protocols, self.alpn)
            except (OSError, ssl.SSLError) as exc:
                log.warning("changed TLS files do not load; keeping the previous ones", extra={"error": str(exc)})
        return self._context


def client_context(tls: TLSSettings, protocols: Protocols, alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
    """A context to dial with: our certificate as the client's, the trusted CA to verify the server
    (no verification with auto TLS: its certificates are self-signed, as etcd does)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    protocols.apply(ctx)
    if tls.cert_file:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.trusted_ca_file and not tls.auto_tls:
        ctx.load_verify_locations(cafile=tls.trusted_ca_file)
        ctx.check_hostname = False  # members are dialled by address; the CA vouches for them
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def peer_cert_allowed(tls: TLSSettings, cert: dict[str, Any] | None) -> bool:
    """--peer-cert-allowed-cn / --peer-cert-allowed-hostname on a verified peer certificate (getpeercert())."""
    if not (tls.allowed_cn or tls.allowed_hostname):
        return True
    if not cert:
        return False
    if tls.allowed_cn:
        return common_name(cert) == tls.allowed_cn
    for kind, value in cert.get("subjectAltName", ()):
        if kind in ("DNS", "IP Address") and value.lower() == tls.allowed_hostname.lower():
            return True
    return False


def common_name(cert: dict[str, Any] | None) -> str | None:
    """The subject's common name of a getpeercert() dict."""
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None
