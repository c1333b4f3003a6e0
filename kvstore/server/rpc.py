"""The RPC edge: etcd errors, and the lower layers' own errors through the one table that maps them
(``kvstore.errors.LAYER_ERRORS``), become gRPC statuses here and nowhere else; methods raftkv does
not serve answer UNIMPLEMENTED (never a fake success)."""

from __future__ import annotations

from typing import Any

from frontend.grpc import GrpcError, ServerCall, StatusCode
from kvstore.errors import to_etcd


def error_status(exc: BaseException) -> tuple[int, str] | None:
    """etcd's (code, message) for an EtcdError or a layer's error that maps to one; None for anything
    else (an unexpected failure)."""
    etcd = to_etcd(exc)
    if etcd is None:
        return None
    return etcd.code.value[0], etcd.message


def unimplemented(service: str, name: str) -> Any:
    """A handler for a method raftkv does not serve yet."""

    def method(self: Any, request: Any, call: ServerCall) -> Any:
        raise GrpcError(StatusCode.UNIMPLEMENTED, f"raftkv: {service}.{name} is not implemented")

    method.__name__ = name
    return method
