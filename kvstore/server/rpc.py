"""Glue between servicer methods and gRPC statuses: etcd errors become etcd's codes and messages."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from kvstore.errors import EtcdError

T = TypeVar("T")
Handler = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[T]]


def etcd_status(method: Handler[T]) -> Handler[T]:
    """Wraps a unary servicer method so an EtcdError aborts the call with etcd's status."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> T:
        try:
            return await method(self, request, context)
        except EtcdError as exc:
            await context.abort(exc.code, exc.message)
            raise  # unreachable: abort raises

    return wrapper


def unimplemented(service: str, name: str) -> Handler[Any]:
    """A method raftkv does not serve yet: UNIMPLEMENTED, never a fake success."""

    async def method(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"raftkv: {service}.{name} is not implemented")

    method.__name__ = name
    return method
