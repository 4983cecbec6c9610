"""The compose stack: topology resolved by `docker compose config`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flwr.common.config import parse_config_args

from tests.utils.compose_stack import DOCKERFILES, REPO

DEVICES = ("device-mcu", "device-phone", "device-gateway")
FLOWER_ENV = {"FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "FLWR_TELEMETRY_ENABLED": "0"}
pytestmark = pytest.mark.timeout(300)


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
