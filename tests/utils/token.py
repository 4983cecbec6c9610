"""Factories for API tokens and auth headers."""

from __future__ import annotations

from sqlalchemy.orm import Session

from server.cli.service import Coordinator
from server.coordinator import crud
from server.coordinator.core.db import make_engine, make_session_factory


def token_headers(db: Session, *, role: str, name: str | None = None) -> dict[str, str]:
    """``Authorization`` header of a new committed token with ``role``."""
    token = crud.create_token(session=db, role=role, name=name)
    db.commit()
    return {"Authorization": f"Bearer {token}"}


def service_token(coordinator: Coordinator, *, role: str, name: str | None = None) -> str:
    """A new token of ``role`` in a started coordinator's database, written from this process.

    It stores what ``aptfleet token create`` (``Coordinator.token``) stores, without a CLI
    process per token: that process imports torch and checks the migrations, 3-9 s on a
    busy 2-core machine. Tests of the CLI itself keep ``Coordinator.token``.
    """
    engine = make_engine(coordinator.env["APTFLEET_DATABASE_URL"])
    try:
        with make_session_factory(engine)() as session:
            token = crud.create_token(session=session, role=role, name=name)
            session.commit()
    finally:
        engine.dispose()
    return token
