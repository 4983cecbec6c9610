"""Fixtures of the coordinator tests: every DB test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, delete
from sqlalchemy.orm import Session

from server.coordinator.core.config import Settings
from server.coordinator.core.db import make_engine
from server.coordinator.main import create_app
from server.coordinator.services.startup import init_db
from server.coordinator.tables import Base, Policy
from tests.utils.db import BACKENDS, empty_database
from tests.utils.launcher import RecordingLauncher
from tests.utils.token import token_headers


@pytest.fixture(scope="session", params=BACKENDS)
def db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A database migrated to head and seeded, shared by the session's tests of a backend."""
    with empty_database(request.param, tmp_path_factory.mktemp(request.param)) as url:
        init_db(url)
        yield url


@pytest.fixture(scope="session")
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def _clear(engine: Engine) -> None:
    """Delete every row the tests wrote; keep the seeded policy version 1."""
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            if table.name == "policies":
                connection.execute(delete(table).where(Policy.version > 1))
            else:
                connection.execute(delete(table))


@pytest.fixture()
def db(engine: Engine) -> Iterator[Session]:
    """A session on the test database; every row is deleted after the test.

    It expires objects on commit (unlike the app's sessions): call ``db.commit()`` before
    reading what the API or another session wrote, to end the read snapshot (SQLite WAL)
    and reload cached rows.
    """
    with Session(engine) as session:
        yield session
    _clear(engine)


@pytest.fixture()
def launcher() -> RecordingLauncher:
    return RecordingLauncher()


@pytest.fixture()
def app(db_url: str, tmp_path: Path, launcher: RecordingLauncher) -> FastAPI:
    return create_app(Settings(DATABASE_URL=db_url, DATA_DIR=tmp_path), launcher=launcher)


@pytest.fixture()
def client(app: FastAPI, db: Session) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


@pytest.fixture()
def admin_headers(db: Session) -> dict[str, str]:
    return token_headers(db, role="admin", name="alice")


@pytest.fixture()
def operator_headers(db: Session) -> dict[str, str]:
    return token_headers(db, role="operator", name="bob")
