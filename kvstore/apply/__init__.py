"""The deterministic applier: turns committed log entries into store changes and responses."""

from kvstore.apply.applier import Applier, ApplyResult, CompactResult
from kvstore.apply.codec import Op, decode_request, encode_request

__all__ = ["Applier", "ApplyResult", "CompactResult", "Op", "decode_request", "encode_request"]
