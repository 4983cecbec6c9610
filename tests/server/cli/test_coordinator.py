"""Tests of the coordinator CLI (server.cli.coordinator.server_cli)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect, select
from typer.testing import CliRunner

from server.cli.coordinator import server_cli
from server.coordinator import crud
from server.coordinator.core.db import make_engine, make_session_factory
from server.coordinator.tables import ApiToken


def test_token_create_prints_token_once_and_stores_hash(tmp_path: Path) -> None:
    # Prepare
    url = f"sqlite:///{tmp_path / 'cli.db'}"

    # Execute
    result = CliRunner().invoke(server_cli, ["token", "create", "--role", "operator",
                                             "--name", "ci", "--database-url", url])

    # Assert
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    engine = make_engine(url)
    with make_session_factory(engine)() as session:
        row = crud.authenticate_token(session=session, token=token)
        assert (row.role, row.name) == ("operator", "ci")
        assert token not in str(session.scalars(select(ApiToken.token_hash)).all())
    engine.dispose()


def test_token_create_unknown_role_rejected(tmp_path: Path) -> None:
    result = CliRunner().invoke(server_cli, ["token", "create", "--role", "root",
                                             "--database-url", f"sqlite:///{tmp_path}/x.db"])
    assert result.exit_code == 2
    assert "--role" in result.output


def test_db_upgrade_then_downgrade(tmp_path: Path) -> None:
    # Prepare
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    runner = CliRunner()

    # Execute
    upgraded = runner.invoke(server_cli, ["db", "upgrade", "--database-url", url])
    engine = make_engine(url)
    tables_after_upgrade = set(inspect(engine).get_table_names())
    downgraded = runner.invoke(server_cli, ["db", "downgrade", "--yes", "--database-url", url])
    tables_after_downgrade = set(inspect(engine).get_table_names())
    engine.dispose()

    # Assert
    assert (upgraded.exit_code, downgraded.exit_code) == (0, 0)
    assert "runs" in tables_after_upgrade
    assert tables_after_downgrade == {"alembic_version"}


def test_db_downgrade_without_confirmation_aborts(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    result = CliRunner().invoke(server_cli, ["db", "downgrade", "--database-url", url],
                                input="n\n")
    assert result.exit_code == 1
