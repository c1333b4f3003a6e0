"""raftkv's client port: HTTP/2 (sans-I/O), gRPC framing on top, HTTP/1.1 told apart, one asyncio driver.

``frontend.http2`` is the HTTP/2 server connection (bytes in, events and bytes out), ``frontend.grpc``
the gRPC calls over it, ``frontend.protocol`` the asyncio Protocol that drives both for one socket,
``frontend.http1`` the HTTP/1.1 side of the same port (requests parsed by httptools, handed to an
app), ``frontend.gateway`` grpc-gateway's JSON API as such an app, over the same method table, and
``frontend.server`` the listener. Nothing here knows etcd: services plug in through a table of
method paths (``frontend.grpc.Method``), HTTP bindings through ``frontend.gateway.Binding``.
"""
