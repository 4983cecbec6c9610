"""Data access for API bearer tokens (stored as SHA-256 digests only)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.coordinator.core.security import generate_token, hash_token, token_matches
from server.coordinator.exceptions import NotFoundError
from server.coordinator.tables import TOKEN_ROLES, ApiToken


def create_token(*, session: Session, role: str, name: str | None = None) -> str:
    """Create a token and return its plaintext, which is not stored anywhere.

    Parameters
    ----------
    session : Session
        Open session; the caller commits.
    role : str
        ``admin`` (everything) or ``operator`` (read, start and stop runs).
    name : str | None (default: None -> the role)
        Label shown as the author of policy versions.

    Returns
    -------
    str
        The bearer token. Show it once; only its SHA-256 digest is kept.
    """
    if role not in TOKEN_ROLES:
        raise ValueError(f"Token role {role!r} is not one of {TOKEN_ROLES}.")
    name = (name or role).strip()
    if not 1 <= len(name) <= 64:
        raise ValueError(f"Token name {name!r} must be 1 to 64 characters long.")
    token = generate_token()
    session.add(ApiToken(name=name, role=role, token_hash=hash_token(token)))
    session.flush()
    return token


def authenticate_token(*, session: Session, token: str) -> ApiToken | None:
    """The live (not revoked) token row matching ``token``, if any."""
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if row is None or row.revoked or not token_matches(token, row.token_hash):
        return None
    return row


def revoke_token(*, session: Session, token_id: int) -> ApiToken:
    """Revoke a token so it no longer authenticates; the caller commits."""
    row = session.get(ApiToken, token_id)
    if row is None:
        raise NotFoundError(f"Token {token_id} not found")
    row.revoked = True
    session.flush()
    return row
