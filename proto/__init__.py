"""etcd-compatible protocol buffers (etcdserverpb, mvccpb, authpb, leasepb, v3lockpb, v3electionpb) and
their generated code.

Importing this package lifts the upb decoder's nesting limit of 100 messages (a Txn nested 50 deep
failed to decode, where etcd accepts any depth and refuses only by --max-txn-ops). upb then nests
as deep as its hard limit, which is deeper than the C stack can take, so bytes from outside (client
requests) are decoded only through ``proto.wire.parser``, which refuses nesting past
``proto.wire.MAX_DEPTH`` before upb sees it. What this process encoded itself (log entries) or
got from a member (responses) is decoded as usual.
"""

from google.protobuf.internal import api_implementation

if api_implementation.Type() == "upb":
    from google._upb import _message

    _message.SetAllowOversizeProtos(True)
