"""Alembic migrations on an empty database, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, inspect, select

from apt_core.config import PrecisionPolicy
from server.coordinator.core.db import (
    ALEMBIC_DIR,
    downgrade_base,
    make_engine,
    make_session_factory,
    upgrade_head,
)
from server.coordinator.crud import current_policy
from server.coordinator.exceptions import PolicyNotSeededError
from server.coordinator.services.startup import init_db
from server.coordinator.tables import Base, Policy
from tests.utils.db import BACKENDS, empty_database

TABLES = {
    "api_tokens",
    "checkpoints",
    "client_rounds",
    "console_actions",
    "dashboard_sessions",
    "devices",
    "layer_precision",
    "policies",
    "precision_summaries",
    "rounds",
    "runs",
}


@pytest.fixture(params=BACKENDS)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with empty_database(request.param, tmp_path) as url:
        yield url


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade_empty_database(empty_db_url: str) -> None:
    # Execute / Assert
    upgrade_head(empty_db_url)
    assert _tables(empty_db_url) == TABLES
    downgrade_base(empty_db_url)
    assert _tables(empty_db_url) == set()
    upgrade_head(empty_db_url)
    assert _tables(empty_db_url) == TABLES


def test_upgrade_head_stores_no_policy_until_seeded(empty_db_url: str) -> None:
    # Prepare
    upgrade_head(empty_db_url)
    engine = make_engine(empty_db_url)

    # Execute
    try:
        with make_session_factory(engine)() as session:
            with pytest.raises(PolicyNotSeededError, match="db upgrade"):
                current_policy(session)
    finally:
        engine.dispose()


def test_init_db_seeds_default_policy_once(empty_db_url: str) -> None:
    # Execute
    init_db(empty_db_url)
    init_db(empty_db_url)

    # Assert
    engine = make_engine(empty_db_url)
    try:
        with make_session_factory(engine)() as session:
            count = session.scalar(select(func.count()).select_from(Policy))
            version, policy, overrides = current_policy(session)
    finally:
        engine.dispose()
    assert (count, version, policy, overrides) == (1, 1, PrecisionPolicy(), {})


def test_models_match_migrations(empty_db_url: str) -> None:
    # Prepare
    upgrade_head(empty_db_url)
    engine = make_engine(empty_db_url)

    # Execute
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()

    # Assert
    assert diff == []


def test_revision_files_named_rev_what_changed() -> None:
    names = sorted(
        p.name for p in (ALEMBIC_DIR / "versions").glob("*.py") if p.name != "__init__.py"
    )
    assert names[:3] == [
        "0001_create_core_tables.py",
        "0002_device_status_offline.py",
        "0003_run_queue_heartbeat.py",
    ]
    assert all(re.fullmatch(r"\d{4}_[a-z0-9_]+\.py", n) for n in names)
