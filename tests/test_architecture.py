"""The architecture rules of STYLE: import arrows, one error module, one source of settings.

Module loading is checked in a fresh interpreter (``python -c``), so what this test process
already imported cannot hide a violation. Import arrows are checked by parsing every module
of a package, so an import inside a function counts as much as one at the top.
"""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: What ``import apt_core`` must not load: the library is torch + numpy only.
APT_CORE_FORBIDDEN = (
    "flwr",
    "fastapi",
    "sqlalchemy",
    "matplotlib",
    "typer",
    "ray",
    "rich",
    "sklearn",
    "pydantic",
    "starlette",
    "client",
    "server",
)

#: What the ClientApp must not load: the device image has no coordinator stack. (flwr
#: itself loads typer, rich and grpc, so those are not listed.)
CLIENT_FORBIDDEN = (
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "pydantic",
    "pydantic_settings",
    "prometheus_client",
    "matplotlib",
    "ray",
    "sklearn",
    "server",
)

#: The only places of ``server/flower`` that import the coordinator: the ServerApp's
#: DB-backed composition, entered only when run_config carries ``db-url``. A new import
#: of the coordinator from the Flower app fails the test until it is listed here.
FLOWER_TO_COORDINATOR_ALLOWED = frozenset(
    {
        ("server/flower/server_app.py", "db_composition"),
    }
)


def _top_level_modules(statement: str) -> set[str]:
    """Top-level packages loaded by ``statement`` in a fresh interpreter."""
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    return {name.split(".")[0] for name in json.loads(out.splitlines()[-1])}


def _modules(package: str) -> Iterator[Path]:
    yield from sorted((ROOT / package).rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> Iterator[tuple[str, str]]:
    """(imported module, enclosing function or "<module>") of every import in ``path``."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    yield from _source_imports(path.read_text(), package)


def _source_imports(source: str, package: str) -> Iterator[tuple[str, str]]:
    """:func:`_imports` of ``source``, a module of ``package`` (for relative imports)."""
    tree = ast.parse(source)

    def visit(node: ast.AST, scope: str) -> Iterator[tuple[str, str]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, scope
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: resolve against the module's package
                    anchor = package.rsplit(".", child.level - 1)[0] if child.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                yield base, scope
                for alias in child.names:  # `from pkg import submodule`
                    yield f"{base}.{alias.name}", scope
            inner = (
                child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else scope
            )
            yield from visit(child, inner)

    yield from visit(tree, "<module>")


def _violations(package: str, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in _modules(package):
        for name, scope in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                found.append(f"{path.relative_to(ROOT)} ({scope}) imports {name}")
    return found


def test_import_apt_core_loads_no_framework() -> None:
    # Execute
    loaded = _top_level_modules("import apt_core")

    # Assert
    assert loaded.isdisjoint(APT_CORE_FORBIDDEN), sorted(loaded & set(APT_CORE_FORBIDDEN))


def test_import_client_app_loads_no_coordinator_stack() -> None:
    # Execute
    loaded = _top_level_modules("import client.client_app")

    # Assert
    assert "flwr" in loaded  # the check is meaningful only if the app really loaded
    assert loaded.isdisjoint(CLIENT_FORBIDDEN), sorted(loaded & set(CLIENT_FORBIDDEN))


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        (
            "server/coordinator/crud",
            ("server.coordinator.services", "server.coordinator.schemas", "server.coordinator.api"),
        ),
        (
            "server/coordinator/core",
            ("server.coordinator.crud", "server.coordinator.services", "server.coordinator.api"),
        ),
        ("apt_core", ("client", "server", "flwr", "fastapi", "sqlalchemy")),
        ("apt_core/federated", ("flwr",)),
        ("client", ("server", "fastapi", "sqlalchemy")),
    ],
)
def test_package_imports_point_one_way(package: str, forbidden: tuple[str, ...]) -> None:
    # Execute
    found = _violations(package, forbidden)

    # Assert
    assert not found, "\n".join(found)


def test_flower_app_imports_coordinator_only_in_db_composition() -> None:
    # Prepare
    seen = set()

    # Execute
    for path in _modules("server/flower"):
        for name, scope in _imports(path):
            if name == "server.coordinator" or name.startswith("server.coordinator."):
                seen.add((str(path.relative_to(ROOT)), scope))

    # Assert
    assert seen <= FLOWER_TO_COORDINATOR_ALLOWED, sorted(seen - FLOWER_TO_COORDINATOR_ALLOWED)


def test_import_checker_sees_function_level_and_relative_imports() -> None:
    # Prepare
    source = "from ..services import launcher\n\ndef f():\n    import server.coordinator.schemas\n"

    # Execute
    found = set(_source_imports(source, "server.coordinator.crud"))

    # Assert
    assert ("server.coordinator.services", "<module>") in found
    assert ("server.coordinator.services.launcher", "<module>") in found
    assert ("server.coordinator.schemas", "f") in found


def test_coordinator_errors_live_in_one_module() -> None:
    # Prepare
    home = ROOT / "server" / "coordinator" / "exceptions.py"
    mapper = ROOT / "server" / "coordinator" / "main.py"
    found = []

    # Execute
    for path in _modules("server/coordinator"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (
                path != home
                and isinstance(node, ast.ClassDef)
                and any(ast.unparse(base).endswith(("Error", "Exception")) for base in node.bases)
            ):
                found.append(f"{path.relative_to(ROOT)} defines {node.name}")
            # main.py is the one place that maps errors to HTTP, Starlette's own included
            if (
                path != mapper
                and isinstance(node, ast.ImportFrom)
                and (node.module or "").startswith(("fastapi", "starlette"))
                and any(alias.name == "HTTPException" for alias in node.names)
            ):
                found.append(f"{path.relative_to(ROOT)} imports HTTPException")

    # Assert
    assert not found, "\n".join(found)


MODULE_MAX_LINES = 400


@pytest.mark.parametrize("package", ["apt_core", "client", "server", "tests"])
def test_modules_stay_under_max_lines(package: str) -> None:
    # Prepare: STYLE keeps one concept per module; past ~400 lines a module holds several
    found = []

    # Execute
    for path in _modules(package):
        lines = len(path.read_text().splitlines())
        if lines > MODULE_MAX_LINES:
            found.append(f"{path.relative_to(ROOT)}: {lines} lines")

    # Assert
    assert not found, "\n".join(found)


# --- one source of truth for run settings ------------------------------------------------
def test_pyproject_app_config_equals_dataclass_defaults() -> None:
    # Prepare
    from server.flower.settings import RUN_CONFIG_DEFAULTS

    with (ROOT / "pyproject.toml").open("rb") as fh:
        table = tomllib.load(fh)["tool"]["flwr"]["app"]["config"]

    # Execute
    mismatched = {
        key: (table.get(key), RUN_CONFIG_DEFAULTS.get(key))
        for key in set(table) | set(RUN_CONFIG_DEFAULTS)
        if (table.get(key), type(table.get(key)))
        != (RUN_CONFIG_DEFAULTS.get(key), type(RUN_CONFIG_DEFAULTS.get(key)))
    }

    # Assert: same keys, same values, same types ((pyproject, dataclass) when not)
    assert not mismatched, mismatched


def test_server_settings_from_pyproject_app_config_are_the_defaults() -> None:
    # Prepare
    from server.flower.settings import ServerSettings

    with (ROOT / "pyproject.toml").open("rb") as fh:
        table = tomllib.load(fh)["tool"]["flwr"]["app"]["config"]

    # Execute / Assert
    assert ServerSettings.from_run_config(table) == ServerSettings()
    assert ServerSettings.from_run_config({}) == ServerSettings()


def test_rest_schema_defaults_and_choices_come_from_the_dataclasses() -> None:
    # Prepare
    from apt_core.federated import FED_METHODS, RunSettings
    from apt_core.tasks.data import TASK_NAMES
    from server.coordinator.core.config import Settings
    from server.coordinator.schemas import Method, RunCreate, Task
    from server.flower.settings import ServerSettings

    # Execute
    run_in = RunCreate(task="digits", method="apt")

    # Assert
    assert run_in.run_settings() == RunSettings()
    assert (run_in.rounds, run_in.fraction) == (
        ServerSettings().rounds,
        ServerSettings().fraction_train,
    )
    assert get_args(Method) == FED_METHODS
    assert get_args(Task) == TASK_NAMES
    assert Settings.model_fields["ROUND_TIMEOUT"].default == ServerSettings().timeout


def test_cli_simulate_defaults_are_the_run_settings_defaults() -> None:
    # Prepare
    from apt_core.federated import RunSettings
    from server.cli.flower import simulate_cmd

    d = RunSettings()
    params = inspect.signature(simulate_cmd).parameters

    # Execute
    defaults = {
        name: params[name].default
        for name in ("task", "method", "alpha", "seed", "model", "local_epochs", "lr", "batch_size")
    }

    # Assert
    assert defaults == {
        "task": d.task,
        "method": d.method,
        "alpha": d.alpha,
        "seed": d.seed,
        "model": d.arch,
        "local_epochs": d.local_epochs,
        "lr": d.lr,
        "batch_size": d.batch_size,
    }
