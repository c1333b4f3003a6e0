"""The deterministic applier: turns committed log entries into store changes and responses."""

from kvstore.apply.applier import Applier, ApplyResult, CompactResult, ConfChangeResult, response_as, txn_puts
from kvstore.apply.codec import Op, decode_request, encode_request

__all__ = [
    "Applier",
    "ApplyResult",
    "CompactResult",
    "ConfChangeResult",
    "Op",
    "decode_request",
    "encode_request",
    "response_as",
    "txn_puts",
]
