"""Throw-away test databases: a SQLite file or a fresh PostgreSQL database."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

#: Maintenance database the per-session test databases are created from.
POSTGRES_ADMIN_URL = os.environ.get(
    "APTFLEET_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
BACKENDS = ("sqlite", "postgresql")


@contextmanager
def postgres_database() -> Iterator[str]:
    """Create ``aptfleet_test_<random>`` next to the admin database, drop it afterwards.

    Skips the calling test when PostgreSQL is unreachable.
    """
    # no pool: a test may restart PostgreSQL, which kills pooled connections
    admin = create_engine(
        POSTGRES_ADMIN_URL,
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": 3},
        poolclass=NullPool,
    )
    name = f"aptfleet_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        pytest.skip(
            f"PostgreSQL unreachable at {POSTGRES_ADMIN_URL} "
            f"(set APTFLEET_TEST_POSTGRES_URL): {exc.orig}"
        )
    try:
        yield make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def empty_database(backend: str, tmp_dir: Path) -> Iterator[str]:
    """URL of a new, empty database of ``backend`` ("sqlite" or "postgresql")."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_dir / 't.db'}"
    else:
        with postgres_database() as url:
            yield url
