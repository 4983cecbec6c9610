"""deploy/prestart.sh against empty databases: migrations, seeding, password kept secret."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect, select

from server.coordinator.core.db import make_engine, make_session_factory
from server.coordinator.tables import Policy
from tests.utils.compose_stack import PRESTART, REPO, clean_env
from tests.utils.db import BACKENDS, empty_database

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(params=BACKENDS)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with empty_database(request.param, tmp_path) as url:
        yield url


def _prestart(url: str, **env: str) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return subprocess.run(
        ["bash", str(PRESTART)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean_env(), "PATH": path, "APTFLEET_DATABASE_URL": url, **env},
    )


@pytest.mark.slow
def test_prestart_migrates_and_seeds_empty_database(empty_db_url: str) -> None:
    # Execute
    first = _prestart(empty_db_url)
    again = _prestart(empty_db_url)

    # Assert: at head with policy version 1, and idempotent
    assert (first.returncode, again.returncode) == (0, 0), first.stderr + again.stderr
    engine = make_engine(empty_db_url)
    try:
        assert {"runs", "policies", "alembic_version"} <= set(inspect(engine).get_table_names())
        with make_session_factory(engine)() as session:
            assert session.scalars(select(Policy.version)).all() == [1]
    finally:
        engine.dispose()


@pytest.mark.slow
def test_prestart_unreachable_database_fails_without_printing_password() -> None:
    # Prepare
    url = "postgresql+psycopg://aptfleet:pw-sentinel-42@127.0.0.1:1/aptfleet?connect_timeout=1"

    # Execute
    result = _prestart(url, APTFLEET_DB_WAIT_SECONDS="1")

    # Assert
    assert result.returncode != 0
    assert "did not answer within 1 s" in result.stderr
    assert "pw-sentinel-42" not in result.stdout + result.stderr
