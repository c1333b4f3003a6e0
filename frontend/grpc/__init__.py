"""gRPC over the sans-I/O HTTP/2 connection: framing, status trailers, calls and their dispatch.

``GrpcSession`` serves one connection's calls from a table of ``Method`` (path → kind, handler,
request decoder); handlers get a ``ServerCall`` and know nothing of HTTP/2.
"""

from frontend.grpc._call import CallEnded, Kind, ServerCall
from frontend.grpc._framing import frame, too_large
from frontend.grpc._session import GrpcSession, Method, MethodStats, status_blocks, unimplemented_status
from frontend.grpc._status import GrpcError, StatusCode, percent_decode, percent_encode

__all__ = [
    "CallEnded",
    "GrpcError",
    "GrpcSession",
    "Kind",
    "Method",
    "MethodStats",
    "ServerCall",
    "StatusCode",
    "frame",
    "percent_decode",
    "percent_encode",
    "status_blocks",
    "too_large",
    "unimplemented_status",
]
