"""What a learner serves: only Status and serializable Range, as etcd's learner interceptor allows.

Every other method, unary or streaming, fails with ``etcdserver: rpc not supported for learner``
(UNAVAILABLE) while this member is a learner (etcd checks ``IsMemberExist(self) && IsLearner()``
on each call, so a promoted member serves everything at once).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from frontend.grpc import Kind
from kvstore.errors import NotSupportedForLearner

ALWAYS = frozenset({"Status"})


def guarded(kind: Kind, handler: Callable[..., Any], check: Callable[[Any, Any], None]) -> Callable[..., Any]:
    """handler, with check(request, call) run first on every call (request is None for bidi streams);
    check raises to refuse the call. Shared by the learner and the ``hasleader`` refusals."""
    if kind == Kind.UNARY:

        def unary(request: Any, call: Any) -> Any:
            check(request, call)
            return handler(request, call)

        return unary
    if kind == Kind.SERVER_STREAM:

        async def server_stream(request: Any, call: Any) -> Any:
            check(request, call)
            return await handler(request, call)

        return server_stream

    async def bidi(call: Any) -> Any:
        check(None, call)
        return await handler(call)

    return bidi


def learner_guard(
    name: str, kind: Kind, handler: Callable[..., Any], is_learner: Callable[[], bool]
) -> Callable[..., Any]:
    """handler, refusing calls while is_learner() says this member is a learner (etcd's isRPCSupportedForLearner)."""
    if name in ALWAYS:
        return handler
    serializable_range = name == "Range" and kind == Kind.UNARY

    def check(request: Any, call: Any) -> None:
        if is_learner() and not (serializable_range and request.serializable):
            raise NotSupportedForLearner()

    return guarded(kind, handler, check)
