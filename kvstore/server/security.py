"""A member's TLS, from its configuration: the client listener's, the peer transport's, and the
credentials it dials other members' client ports with (lease forwarding)."""

from __future__ import annotations

import ssl
from urllib.parse import urlsplit

import grpc

from kvstore.config import ServerConfig
from kvstore.tls import ClientTLS, Protocols, ServerTLS, TLSSettings, peer_cert_allowed, resolve_auto
from raft.transport import PeerSecurity

CLIENT_ALPN = ("h2", "http/1.1")
PEER_ALPN = ("raftkv-peer",)


def protocols(cfg: ServerConfig) -> Protocols:
    p = Protocols(cfg.tls_min_version, cfg.tls_max_version, tuple(cfg.cipher_suites))
    p.check()
    return p


def _hosts(urls: list[str]) -> list[str]:
    return [h for h in (urlsplit(u).hostname for u in urls) if h]


def client_settings(cfg: ServerConfig) -> TLSSettings:
    hosts = _hosts(cfg.listen_client_urls + cfg.advertise_client_urls)
    fixtures = cfg.data_dir / "fixtures" / "client"
    return resolve_auto(cfg.client_tls, fixtures, hosts, cfg.self_signed_cert_validity)


def peer_settings(cfg: ServerConfig) -> TLSSettings:
    hosts = _hosts(cfg.listen_peer_urls + cfg.initial_advertise_peer_urls)
    fixtures = cfg.data_dir / "fixtures" / "peer"
    return resolve_auto(cfg.peer_tls, fixtures, hosts, cfg.self_signed_cert_validity)


def client_server_tls(cfg: ServerConfig) -> ServerTLS | None:
    """The client listener's TLS, None for plaintext."""
    if not cfg.client_tls.enabled:
        return None
    return ServerTLS(client_settings(cfg), protocols(cfg), CLIENT_ALPN)


def peer_security(cfg: ServerConfig) -> PeerSecurity:
    if not cfg.peer_tls.enabled:
        return PeerSecurity()
    tls = peer_settings(cfg)
    prot = protocols(cfg)
    server = ServerTLS(tls, prot, PEER_ALPN)
    return PeerSecurity(
        server_ssl=server.context,
        client_ssl=ClientTLS(tls, prot, PEER_ALPN),
        allow_certificate=(lambda cert: peer_cert_allowed(tls, cert)) if tls.verify_clients else None,
    )


class ClientDialer:
    """Channels to other members' client ports, with the member's own certificate and trusted CA.

    With auto TLS, whose certificates no CA vouches for, the server's certificate is taken as it
    comes (etcd skips verification there too)."""

    def __init__(self, cfg: ServerConfig) -> None:
        self.enabled = cfg.client_tls.enabled
        self.tls = client_settings(cfg) if self.enabled else TLSSettings()
        self.common_name = _file_cert_cn(self.tls.cert_file) if self.tls.cert_file else None

    def channel(self, target: str) -> grpc.aio.Channel:
        if not self.enabled:
            return grpc.aio.insecure_channel(target)
        tls = self.tls
        key = open(tls.key_file, "rb").read() if tls.key_file else None  # noqa: SIM115
        cert = open(tls.cert_file, "rb").read() if tls.cert_file else None  # noqa: SIM115
        if tls.trusted_ca_file and not tls.auto_tls:
            with open(tls.trusted_ca_file, "rb") as f:
                roots = f.read()
        else:
            host, _, port = target.rpartition(":")
            roots = ssl.get_server_certificate((host.strip("[]"), int(port)), timeout=2).encode()
        creds = grpc.ssl_channel_credentials(root_certificates=roots, private_key=key, certificate_chain=cert)
        # members are dialled by address; their certificates need not name it
        options = [("grpc.ssl_target_name_override", _cert_name(roots))] if tls.auto_tls else []
        return grpc.aio.secure_channel(target, creds, options=options)


def _cert_name(pem: bytes) -> str:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.DNSName) or [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
        if names:
            return names[0]
    except x509.ExtensionNotFound:
        pass
    return "localhost"


def _file_cert_cn(path: str) -> str | None:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    with open(path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None
