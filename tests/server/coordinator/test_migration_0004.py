"""Alembic 0004 (token lifecycle, dashboard sessions) on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect, text

from server.coordinator import crud
from server.coordinator.core.db import (
    alembic_config,
    make_engine,
    make_session_factory,
    upgrade_head,
)
from server.coordinator.core.security import hash_token
from tests.utils.db import BACKENDS, empty_database

TOKEN_COLUMNS = {"expires_at", "last_used_at", "revoked_at"}


@pytest.fixture(params=BACKENDS)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with empty_database(request.param, tmp_path) as url:
        yield url


def _schema(url: str) -> tuple[set[str], set[str]]:
    """The tables, and the columns of ``api_tokens``."""
    engine = make_engine(url)
    try:
        inspector = inspect(engine)
        return (
            set(inspector.get_table_names()),
            {c["name"] for c in inspector.get_columns("api_tokens")},
        )
    finally:
        engine.dispose()


def _insert_0003_token(url: str, secret: str) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO api_tokens (name, role, token_hash, created_at, revoked) "
                    "VALUES ('old', 'admin', :digest, CURRENT_TIMESTAMP, false)"
                ),
                {"digest": hash_token(secret)},
            )
    finally:
        engine.dispose()


def test_migration_0004_upgrade_downgrade_upgrade_keeps_tokens(empty_db_url: str) -> None:
    # Prepare: a token created before 0004
    config = alembic_config(empty_db_url)
    command.upgrade(config, "0003")
    _insert_0003_token(empty_db_url, "aptf_old")

    # Execute / Assert
    command.upgrade(config, "0004")
    tables, columns = _schema(empty_db_url)
    assert "dashboard_sessions" in tables and TOKEN_COLUMNS <= columns
    command.downgrade(config, "0003")
    tables, columns = _schema(empty_db_url)
    assert "dashboard_sessions" not in tables and not TOKEN_COLUMNS & columns
    upgrade_head(empty_db_url)
    tables, columns = _schema(empty_db_url)
    assert "dashboard_sessions" in tables and TOKEN_COLUMNS <= columns

    # Assert: the old token still authenticates, never expires, was never used
    engine = make_engine(empty_db_url)
    try:
        with make_session_factory(engine)() as session:
            row = crud.authenticate_token(session=session, token="aptf_old")
            assert row is not None
            assert (row.expires_at, row.last_used_at, row.revoked_at) == (None, None, None)
    finally:
        engine.dispose()


def test_migration_0004_revoking_token_cascades_to_sessions(empty_db_url: str) -> None:
    # Prepare
    upgrade_head(empty_db_url)
    engine = make_engine(empty_db_url)

    # Execute: deleting the token row itself (not only revoking) removes its sessions
    try:
        with make_session_factory(engine)() as session:
            crud.create_token(session=session, role="operator")
            session.commit()
            (token_id,) = session.execute(text("SELECT id FROM api_tokens")).one()
            session.execute(
                text(
                    "INSERT INTO dashboard_sessions (session_hash, token_id, created_at, "
                    "expires_at) VALUES ('x', :id, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ),
                {"id": token_id},
            )
            session.commit()
            session.execute(text("DELETE FROM api_tokens"))
            session.commit()
            left = session.execute(text("SELECT count(*) FROM dashboard_sessions")).scalar()
    finally:
        engine.dispose()

    # Assert
    assert left == 0
