"""The RPC edge: etcd errors become gRPC statuses here and nowhere else, and methods raftkv does
not serve answer UNIMPLEMENTED (never a fake success)."""

from __future__ import annotations

from typing import Any

from frontend.grpc import GrpcError, ServerCall, StatusCode
from kvstore.errors import EtcdError


def error_status(exc: BaseException) -> tuple[int, str] | None:
    """etcd's (code, message) for an EtcdError; None for anything else (an unexpected failure)."""
    if isinstance(exc, EtcdError):
        return exc.code.value[0], exc.message
    return None


def unimplemented(service: str, name: str) -> Any:
    """A handler for a method raftkv does not serve yet."""

    def method(self: Any, request: Any, call: ServerCall) -> Any:
        raise GrpcError(StatusCode.UNIMPLEMENTED, f"raftkv: {service}.{name} is not implemented")

    method.__name__ = name
    return method
