"""etcd's authentication and role-based access: the store (``store``), key permissions as
intervals (``perms``), tokens (``tokens``) and password hashing off the event loop (``passwords``)."""

from kvstore.auth.store import ADMIN_OPS, ROOT, AuthStore
from kvstore.auth.tokens import AuthInfo, JwtTokens, SimpleTokens, TokenProvider, token_provider

__all__ = ["ADMIN_OPS", "ROOT", "AuthInfo", "AuthStore", "JwtTokens", "SimpleTokens", "TokenProvider", "token_provider"]
