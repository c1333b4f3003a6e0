"""Peer TLS and identity settings of the transport (etcd's --peer-* flags, as the member wires them)."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ClientSSL = ssl.SSLContext | Callable[[], ssl.SSLContext] | None
"""What a member dials its peers with: no TLS, a context, or a callable returning the context per dial."""


@dataclass(frozen=True)
class PeerSecurity:
    """Peer TLS and identity checks. server_ssl/client_ssl: the listener's and the dialer's contexts
    (None: plaintext; the dialer's may be a callable returning the context to use for each dial, so
    rotated certificates are picked up); allow_certificate: a check of the verified client certificate's fields
    (``--peer-cert-allowed-cn`` / ``-hostname``); verify_identity: the VERIFY dial-back (tests of the
    frame checks alone turn it off)."""

    server_ssl: ssl.SSLContext | None = None
    client_ssl: ClientSSL = None
    allow_certificate: Callable[[dict[str, Any] | None], bool] | None = None
    verify_identity: bool = True
