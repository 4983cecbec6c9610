"""Data access for API bearer tokens (stored as SHA-256 digests only)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from server.coordinator.core.pagination import DEFAULT_PAGE_SIZE, Page, keyset_page
from server.coordinator.core.security import generate_token, hash_token, token_matches
from server.coordinator.exceptions import NotFoundError
from server.coordinator.tables import TOKEN_ROLES, ApiToken, DashboardSession, utcnow

#: ``last_used_at`` is written at most this often per token, so reads do not write each time.
LAST_USED_RESOLUTION = timedelta(minutes=1)
#: The command that creates a token, named in every message that tells users to get one.
CREATE_COMMAND = "aptfleet token create --role admin"


def create_token(
    *, session: Session, role: str, name: str | None = None, expires_at: datetime | None = None
) -> str:
    """Create a token and return its plaintext, which is not stored anywhere.

    Parameters
    ----------
    session : Session
        Open session; the caller commits.
    role : str
        ``admin`` (everything) or ``operator`` (read, start and stop runs).
    name : str | None (default: None -> the role)
        Label shown as the author of policy versions.
    expires_at : datetime | None (default: None -> never expires)
        When the token stops authenticating; must be timezone-aware and in the future.

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
    if expires_at is not None and (expires_at.tzinfo is None or expires_at <= utcnow()):
        raise ValueError(
            f"Token expiry {expires_at!r} must be a timezone-aware time in the future."
        )
    token = generate_token()
    session.add(ApiToken(name=name, role=role, token_hash=hash_token(token), expires_at=expires_at))
    session.flush()
    return token


def find_token(*, session: Session, token: str) -> ApiToken | None:
    """The token row matching the secret ``token`` whatever its state (revoked, expired)."""
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if row is None or not token_matches(token, row.token_hash):
        return None
    return row


def token_refusal(row: ApiToken, *, now: datetime | None = None) -> str | None:
    """Why ``row`` may not authenticate (a full sentence), or None if it is live."""
    now = now or utcnow()
    if row.revoked:
        return (
            f"Bearer token {row.id} ('{row.name}') was revoked; create a new one with "
            f"'{CREATE_COMMAND}'."
        )
    if row.expires_at is not None and row.expires_at <= now:
        return (
            f"Bearer token {row.id} ('{row.name}') expired at "
            f"{row.expires_at.isoformat(timespec='seconds')}; create a new one with "
            f"'{CREATE_COMMAND}'."
        )
    return None


def authenticate_token(*, session: Session, token: str) -> ApiToken | None:
    """The live (neither revoked nor expired) token row matching ``token``, if any."""
    row = find_token(session=session, token=token)
    if row is None or token_refusal(row) is not None:
        return None
    return row


def touch_token(*, session: Session, row: ApiToken, now: datetime | None = None) -> bool:
    """Record that ``row`` was used, unless that was recorded less than a minute ago.

    Returns whether a write happened (the caller then commits). The conditional UPDATE
    keeps concurrent requests of one token from all writing.
    """
    now = now or utcnow()
    if row.last_used_at is not None and now - row.last_used_at < LAST_USED_RESOLUTION:
        return False
    result = session.execute(
        update(ApiToken)
        .where(
            ApiToken.id == row.id,
            or_(
                ApiToken.last_used_at.is_(None), ApiToken.last_used_at < now - LAST_USED_RESOLUTION
            ),
        )
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )
    row.last_used_at = now
    return bool(getattr(result, "rowcount", 0))


def list_tokens(*, session: Session) -> tuple[Sequence[ApiToken], int]:
    """Every token, oldest first, and how many there are."""
    rows = session.scalars(select(ApiToken).order_by(ApiToken.id)).all()
    count = session.scalar(select(func.count()).select_from(ApiToken)) or 0
    return rows, count


def page_tokens(
    *, session: Session, cursor: str | None = None, limit: int = DEFAULT_PAGE_SIZE
) -> Page[ApiToken]:
    """One page of tokens, oldest first (cursor key: ``(id,)``)."""
    count = session.scalar(select(func.count()).select_from(ApiToken)) or 0
    return keyset_page(
        session, select(ApiToken), order=[ApiToken.id], cursor=cursor, limit=limit, count=count
    )


def revoke_token(*, session: Session, token_id: int) -> ApiToken:
    """Revoke a token so it no longer authenticates and end its dashboard sessions.

    Revoking a revoked token changes nothing (its first revocation time is kept). The
    caller commits.
    """
    row = session.get(ApiToken, token_id)
    if row is None:
        raise NotFoundError(
            f"Token {token_id} not found; 'aptfleet token list' shows the existing ones."
        )
    if not row.revoked:
        row.revoked = True
        row.revoked_at = utcnow()
    session.execute(delete(DashboardSession).where(DashboardSession.token_id == token_id))
    session.flush()
    return row
