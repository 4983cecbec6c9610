"""Tests of the coordinator CLI (server.cli.coordinator.server_cli)."""

from __future__ import annotations

import shlex
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import Result
from sqlalchemy import inspect, select
from typer.testing import CliRunner

from server.cli.coordinator import server_cli
from server.cli.main import app as aptfleet
from server.coordinator import crud
from server.coordinator.core.db import make_engine, make_session_factory
from server.coordinator.crud.tokens import CREATE_COMMAND
from server.coordinator.tables import ApiToken, ConsoleAction, utcnow


def test_token_create_prints_token_once_and_stores_hash(tmp_path: Path) -> None:
    # Prepare
    url = f"sqlite:///{tmp_path / 'cli.db'}"

    # Execute
    result = CliRunner().invoke(
        server_cli, ["token", "create", "--role", "operator", "--name", "ci", "--database-url", url]
    )

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
    result = CliRunner().invoke(
        server_cli,
        ["token", "create", "--role", "root", "--database-url", f"sqlite:///{tmp_path}/x.db"],
    )
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
    result = CliRunner().invoke(server_cli, ["db", "downgrade", "--database-url", url], input="n\n")
    assert result.exit_code == 1


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(server_cli, list(args))


def test_token_create_expires_in_sets_expiry(tmp_path: Path) -> None:
    # Prepare
    url = f"sqlite:///{tmp_path / 'cli.db'}"

    # Execute
    result = _invoke(
        "token", "create", "--role", "admin", "--expires-in", "30d", "--database-url", url
    )

    # Assert
    assert result.exit_code == 0, result.output
    engine = make_engine(url)
    with make_session_factory(engine)() as session:
        row = crud.authenticate_token(session=session, token=result.stdout.strip())
        assert row is not None and row.expires_at is not None
        assert abs(row.expires_at - (utcnow() + timedelta(days=30))) < timedelta(minutes=1)
    engine.dispose()


@pytest.mark.parametrize("value", ["0d", "30", "-1d", "1y", "3651d", "abc"])
def test_token_create_bad_expires_in_rejected(tmp_path: Path, value: str) -> None:
    result = _invoke(
        "token",
        "create",
        "--role",
        "admin",
        "--expires-in",
        value,
        "--database-url",
        f"sqlite:///{tmp_path / 'cli.db'}",
    )
    assert result.exit_code == 2
    assert "--expires-in" in result.output


def test_token_list_shows_tokens_never_secrets(tmp_path: Path) -> None:
    # Prepare
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    admin = _invoke(
        "token",
        "create",
        "--role",
        "admin",
        "--name",
        "ops",
        "--expires-in",
        "12h",
        "--database-url",
        url,
    ).stdout.strip()
    operator = _invoke(
        "token", "create", "--role", "operator", "--name", "ci", "--database-url", url
    ).stdout.strip()
    _invoke("token", "revoke", "2", "--database-url", url)

    # Execute
    result = _invoke("token", "list", "--database-url", url)

    # Assert
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["ID", "ROLE", "NAME", "CREATED", "EXPIRES", "LAST", "USED", "STATUS"]
    assert [row.split()[:3] + row.split()[-1:] for row in rows] == [
        ["1", "admin", "ops", "active"],
        ["2", "operator", "ci", "revoked"],
    ]
    for secret in (admin, operator):
        assert secret not in result.output and secret[5:] not in result.output


def test_token_revoke_token_no_longer_authenticates(tmp_path: Path) -> None:
    # Prepare
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    token = _invoke("token", "create", "--role", "admin", "--database-url", url).stdout.strip()

    # Execute
    revoked = _invoke("token", "revoke", "1", "--database-url", url)
    unknown = _invoke("token", "revoke", "7", "--database-url", url)

    # Assert
    assert revoked.exit_code == 0 and "Revoked token 1" in revoked.output
    assert unknown.exit_code == 1 and "Token 7 not found" in unknown.output
    engine = make_engine(url)
    with make_session_factory(engine)() as session:
        assert crud.authenticate_token(session=session, token=token) is None
    engine.dispose()


def test_token_create_and_revoke_are_recorded_with_the_cli_user(tmp_path: Path) -> None:
    # Prepare
    url = f"sqlite:///{tmp_path / 'cli.db'}"

    # Execute
    token = _invoke("token", "create", "--role", "operator", "--name", "ci", "--database-url", url)
    revoked = _invoke("token", "revoke", "1", "--database-url", url)

    # Assert: one row each, the machine's user as "who", never the secret
    assert token.exit_code == 0 and revoked.exit_code == 0
    engine = make_engine(url)
    with make_session_factory(engine)() as session:
        rows = session.scalars(select(ConsoleAction).order_by(ConsoleAction.id)).all()
    engine.dispose()
    assert [(r.action, r.target, r.role) for r in rows] == [
        ("token-create", "token", "admin"),
        ("token-revoke", "token:1", "admin"),
    ]
    assert all(r.actor.startswith("cli:") for r in rows)
    assert token.stdout.strip() not in " ".join(f"{r.detail}" for r in rows)


def test_command_named_in_messages_exists(tmp_path: Path) -> None:
    # Prepare: the command the login page, the 401 detail and OpenAPI name
    words = shlex.split(CREATE_COMMAND)

    # Execute: the real entry point, as a user would type it
    result = CliRunner().invoke(
        aptfleet, [*words[1:], "--database-url", f"sqlite:///{tmp_path / 'cli.db'}"]
    )

    # Assert
    assert words[0] == "aptfleet"
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().startswith("aptf_")
