"""Secrets of the coordinator: bearer tokens, dashboard session ids and CSRF tokens.

Plaintext secrets are never stored: tokens and session ids are kept as SHA-256 digests,
and a session's CSRF token is derived from its (unstored) session id.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

#: Prefix that makes a leaked token easy to recognise in logs and secret scanners.
TOKEN_PREFIX = "aptf_"
#: Prefix of dashboard session ids: never a bearer token, recognisably a cookie.
SESSION_PREFIX = "aptfs_"


def generate_token() -> str:
    """A new random bearer token (256 bits of entropy)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def generate_session_id() -> str:
    """A new random dashboard session id (256 bits of entropy)."""
    return SESSION_PREFIX + secrets.token_urlsafe(32)


def generate_csrf_token() -> str:
    """A random CSRF token for a form shown before any session exists (the sign-in)."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """SHA-256 hex digest of ``token``, the only form in which it is stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_matches(token: str, token_hash: str) -> bool:
    """Constant-time check of ``token`` against a stored digest."""
    return hmac.compare_digest(hash_token(token), token_hash)


def session_csrf_token(session_id: str) -> str:
    """The synchronizer CSRF token of a dashboard session.

    An HMAC keyed with the session id: only a page rendered for that session can hold it,
    and a cross-site page, which cannot read the HttpOnly cookie, cannot compute it.
    """
    return hmac.new(session_id.encode("utf-8"), b"aptfleet-csrf", hashlib.sha256).hexdigest()


def secrets_equal(a: str, b: str) -> bool:
    """Constant-time comparison of two secrets (False if either is empty)."""
    return bool(a) and bool(b) and hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))
