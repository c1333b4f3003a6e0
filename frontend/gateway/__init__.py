"""grpc-gateway on raftkv's own front end: JSON over HTTP/1.1 into the same handlers gRPC calls.

``Gateway`` is an ``Http1App`` that serves a table of HTTP bindings (path → gRPC method path) from
the very ``Method`` table the gRPC side dispatches (``frontend.grpc``): a request body is decoded
from JSON into the method's request message (``Codec``: golang/protobuf jsonpb's rules and Go's
error strings, ``_gojson``), the handler runs with a ``GatewayCall`` in place of a ``ServerCall``,
and its response, or its error as grpc-gateway renders it, is written back as JSON. Nothing here
knows etcd: the bindings, the codec's hidden fields and the error table come from the caller.
"""

from frontend.gateway._call import GatewayCall
from frontend.gateway._gateway import Binding, Gateway, http_status
from frontend.gateway._gojson import Decoder, GoJSONError
from frontend.gateway._jsonpb import Codec

__all__ = ["Binding", "Codec", "Decoder", "Gateway", "GatewayCall", "GoJSONError", "http_status"]
