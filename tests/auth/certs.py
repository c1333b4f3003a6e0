"""Certificates and keys made at test time (trustme, cryptography): never committed.

``Pki(dir)`` writes a CA, a server certificate for 127.0.0.1 / localhost, client certificates by
common name, one from another CA, and one already expired; ``rsa_keys`` a JWT key pair.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.procs import ClientTLS


class Pki:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA()
        self.ca_file = directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.server_cert, self.server_key = self.issue("server", "127.0.0.1", "localhost", cn="member")

    def issue(
        self, name: str, *hosts: str, cn: str | None = None, ca: trustme.CA | None = None, **kw: object
    ) -> tuple[Path, Path]:
        leaf = (ca or self.ca).issue_cert(*(hosts or (f"{name}.client",)), common_name=cn, **kw)  # type: ignore[arg-type]
        cert, key = self.dir / f"{name}.pem", self.dir / f"{name}-key.pem"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        return cert, key

    def client(self, cn: str) -> ClientTLS:
        cert, key = self.issue(f"client-{cn}", cn=cn)
        return ClientTLS(self.ca_file, cert, key)

    def foreign_client(self, cn: str) -> ClientTLS:
        cert, key = self.issue(f"foreign-{cn}", cn=cn, ca=trustme.CA())
        return ClientTLS(self.ca_file, cert, key)

    def expired_client(self, cn: str) -> ClientTLS:
        past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
        cert, key = self.issue(f"expired-{cn}", cn=cn, not_before=past, not_after=past + datetime.timedelta(days=1))
        return ClientTLS(self.ca_file, cert, key)

    def server_flags(self, client_cert_auth: bool = True) -> list[str]:
        flags = [f"--cert-file={self.server_cert}", f"--key-file={self.server_key}"]
        if client_cert_auth:
            flags += [f"--trusted-ca-file={self.ca_file}", "--client-cert-auth"]
        return flags


def rsa_keys(directory: Path) -> tuple[Path, Path]:
    """(private, public) PEM files of a fresh RSA key pair."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    priv, pub = directory / "jwt.key", directory / "jwt.pub"
    priv.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    pub.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return priv, pub
