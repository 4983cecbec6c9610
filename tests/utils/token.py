"""Factories for API tokens and auth headers."""

from __future__ import annotations

from sqlalchemy.orm import Session

from server.coordinator import crud


def token_headers(db: Session, *, role: str, name: str | None = None) -> dict[str, str]:
    """``Authorization`` header of a new committed token with ``role``."""
    token = crud.create_token(session=db, role=role, name=name)
    db.commit()
    return {"Authorization": f"Bearer {token}"}
