"""Who a call comes from: its auth token, or the common name of its client certificate.

The token is the ``token`` metadata of a gRPC call (etcd's ``rpctypes.TokenFieldNameGRPC``), or
``authorization`` (what the HTTP gateway's ``Authorization`` header becomes, etcd's swagger name);
any transport that offers ``metadata(key)`` and ``peer_certificate()`` is served alike. Without a
token and with ``--client-cert-auth``, a verified client certificate's common name is the user,
at the store's current auth revision, as in etcd.

A simple token names the raft index of the entry that issued it: on a member that has not applied
that entry yet, ``resolve`` waits for it (etcd's indexWaiter) before deciding. A token the member
does not know is ``etcdserver: invalid auth token``, whether or not auth is enabled, as in etcd.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Protocol

from kvstore.auth import AuthInfo, AuthStore
from kvstore.errors import InvalidAuthToken
from kvstore.tls import common_name

TOKEN_KEYS = ("token", "authorization")
NO_USER = ("", 0)  # what a request without credentials carries into the log


class Call(Protocol):
    def metadata(self, key: str) -> str | None: ...

    def peer_certificate(self) -> dict[str, Any] | None: ...


class MemberView(Protocol):
    @property
    def auth(self) -> AuthStore: ...

    @property
    def applied_index(self) -> int: ...

    def wait_applied(self, index: int) -> Awaitable[None]: ...


def token_of(call: Call) -> str | None:
    for key in TOKEN_KEYS:
        value = call.metadata(key)
        if value:
            return value.removeprefix("Bearer ") if key == "authorization" else value
    return None


def needs_auth(member: MemberView, call: Call) -> bool:
    """False when nothing about the call can be refused: auth off and no token (the fast path)."""
    return member.auth.enabled or token_of(call) is not None


class Credentials:
    def __init__(self, member: MemberView, client_cert_auth: bool) -> None:
        self.member = member
        self.client_cert_auth = client_cert_auth

    async def resolve(self, call: Call, use_certificate: bool = True) -> AuthInfo | None:
        """The caller's identity, None for an anonymous call; InvalidAuthToken for a bad token."""
        member = self.member
        auth = member.auth
        token = token_of(call)
        if token is not None:
            info = auth.tokens.info(token, auth.revision)
            if info is None:
                index = auth.tokens.index_of(token)
                if index is None or index <= member.applied_index:
                    raise InvalidAuthToken()
                await member.wait_applied(index)
                info = auth.tokens.info(token, auth.revision)
                if info is None:
                    raise InvalidAuthToken()
            return info
        if self.client_cert_auth and use_certificate:
            cn = common_name(call.peer_certificate())
            if cn:
                return AuthInfo(cn, auth.revision)
        return None

    async def for_log(self, call: Call) -> tuple[str, int]:
        """(username, auth revision) for a request to propose: what the applier checks it against."""
        info = await self.resolve(call)
        return NO_USER if info is None else (info.username, info.revision)
