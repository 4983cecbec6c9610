"""Data access for dashboard sessions (stored as SHA-256 digests of their ids only)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from server.coordinator.core.security import generate_session_id, hash_token
from server.coordinator.crud.tokens import token_refusal
from server.coordinator.tables import ApiToken, DashboardSession, utcnow


def create_session(*, session: Session, token: ApiToken, max_age: timedelta) -> str:
    """Open a dashboard session for ``token`` and return its id, which is not stored.

    Expired sessions of every token are deleted on the way, so the table stays small. The
    session never outlives its token's expiry. The caller commits.
    """
    now = utcnow()
    session.execute(delete(DashboardSession).where(DashboardSession.expires_at <= now))
    expires_at = now + max_age
    if token.expires_at is not None:
        expires_at = min(expires_at, token.expires_at)
    session_id = generate_session_id()
    session.add(
        DashboardSession(
            session_hash=hash_token(session_id),
            token_id=token.id,
            created_at=now,
            expires_at=expires_at,
        )
    )
    session.flush()
    return session_id


def session_token(*, session: Session, session_id: str) -> ApiToken | None:
    """The live token behind the unexpired session ``session_id``; None if either is not."""
    row = session.scalar(
        select(DashboardSession).where(DashboardSession.session_hash == hash_token(session_id))
    )
    if row is None or row.expires_at <= utcnow():
        return None
    token = session.get(ApiToken, row.token_id)
    if token is None or token_refusal(token) is not None:
        return None
    return token


def delete_session(*, session: Session, session_id: str) -> bool:
    """End the session ``session_id``; whether it existed. The caller commits."""
    result = session.execute(
        delete(DashboardSession).where(DashboardSession.session_hash == hash_token(session_id))
    )
    return bool(getattr(result, "rowcount", 0))
