"""The compose stack's files: required secrets, no secret literals, Dockerfiles, .env.example."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.utils.compose_stack import COMPOSE_FILE, DOCKERFILES, ENV_EXAMPLE, compose_config

CPU_TORCH = "pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0"
pytestmark = pytest.mark.timeout(300)

#: `${VAR...}` references; `$${VAR}` is an escape that compose leaves to the container.
_VARIABLE = re.compile(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)")


def test_compose_missing_password_refused(compose: list[str], tmp_path: Path) -> None:
    # Prepare
    env_file = tmp_path / "empty.env"
    env_file.write_text("")

    # Execute
    result = compose_config(compose, env_file)

    # Assert
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr


def test_compose_file_has_no_secret_literal() -> None:
    # Prepare
    text = COMPOSE_FILE.read_text()
    secret_lines = [
        line
        for line in text.splitlines()
        if re.search(r"PASSWORD|SECRET|TOKEN", line) and not line.lstrip().startswith("#")
    ]

    # Assert: every secret-looking value is an interpolation, never a literal
    assert secret_lines
    for line in secret_lines:
        value = line.split(":", 1)[1].strip() if ":" in line else line
        assert "${POSTGRES_PASSWORD:?" in line or value.startswith("${"), line
    assert "changethis" not in text
    userinfos = re.findall(r"://(.*?)@", text)  # user:password of every URL
    assert userinfos
    for userinfo in userinfos:
        assert re.sub(r"\$\{[^}]*\}", "", userinfo) in ("", ":"), userinfo


def test_dockerfiles_bake_in_no_secret() -> None:
    for name, dockerfile in DOCKERFILES.items():
        instructions = [
            line
            for line in dockerfile.read_text().splitlines()
            if re.match(r"\s*(ENV|ARG)\b", line) or line.startswith((" ", "\t"))
        ]
        assert not [
            line for line in instructions if re.search(r"PASSWORD|SECRET|TOKEN|DATABASE_URL", line)
        ], name


def test_dockerfiles_install_cpu_torch_before_project() -> None:
    for name, dockerfile in DOCKERFILES.items():
        lines = dockerfile.read_text().splitlines()
        torch_at = next(i for i, line in enumerate(lines) if CPU_TORCH in line)
        project_at = next(i for i, line in enumerate(lines) if "pip install -e" in line)
        user = [line.split()[1] for line in lines if line.startswith("USER ")]
        assert torch_at < project_at, name
        assert user and user[-1] not in ("root", "0"), name


def test_env_example_lists_every_compose_variable() -> None:
    # Prepare
    used = set(_VARIABLE.findall(COMPOSE_FILE.read_text()))
    listed = {
        line.split("=", 1)[0]
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    }

    # Assert
    assert used == listed
