"""Bearer-token secrets: generation and hashing (plaintext is never stored)."""

from __future__ import annotations

import hashlib
import hmac
import secrets

#: Prefix that makes a leaked token easy to recognise in logs and secret scanners.
TOKEN_PREFIX = "aptf_"


def generate_token() -> str:
    """A new random bearer token (256 bits of entropy)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """SHA-256 hex digest of ``token``, the only form in which it is stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_matches(token: str, token_hash: str) -> bool:
    """Constant-time check of ``token`` against a stored digest."""
    return hmac.compare_digest(hash_token(token), token_hash)
