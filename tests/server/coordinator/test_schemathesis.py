"""Schemathesis drives every operation of /openapi.json with an admin token.

The app runs in-process (ASGI) on both database backends with a recording launcher, so
``POST /runs`` stores a run without starting Flower: the HTTP layer is under test.
Generation is derandomized and bounded (``MAX_EXAMPLES`` per operation and phase).
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
import schemathesis.openapi
import schemathesis.specs.openapi.checks  # noqa: F401  (registers the OpenAPI checks)
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS as CHECKS_REGISTRY
from schemathesis.config import SchemathesisConfig
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.types import Receive, Scope, Send

from server.coordinator import crud
from server.coordinator.core.config import Settings
from server.coordinator.core.security import hash_token
from server.coordinator.main import create_app
from server.coordinator.tables import ApiToken
from tests.utils.run import create_random_run, make_round_record

MAX_EXAMPLES = 25
#: Every check schemathesis has (the OpenAPI ones register on import), not only 5xx.
CHECKS = sorted(check.__name__ for check in CHECKS_REGISTRY.get_all())


def _config() -> SchemathesisConfig:
    config = SchemathesisConfig()
    project = config.projects.default
    # Security parameters stay out of generation: every case carries the admin token.
    project.generation.update(
        max_examples=MAX_EXAMPLES, deterministic=True, with_security_parameters=False
    )
    project.phases.update(phases=["examples", "coverage", "fuzzing"])
    project.checks.update(included_check_names=CHECKS)
    return config


def _openapi() -> dict[str, Any]:
    app = create_app(Settings(DATABASE_URL="sqlite://"))
    app.state.engine.dispose()
    return app.openapi()


OPENAPI = _openapi()


class _CurrentApp:
    """The ASGI app the schema sends to: the running test's app (its own database)."""

    target: FastAPI | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.target is not None, "no test app is set"
        await self.target(scope, receive, send)


CURRENT_APP = _CurrentApp()
#: Bound to an app, so every request schemathesis sends (the checks' own extra requests
#: included, e.g. ignored_auth, use_after_free) goes to the test's app in-process.
schema = schemathesis.openapi.from_dict(OPENAPI, config=_config())
schema.app = CURRENT_APP


@pytest.fixture()
def seeded(db: Session) -> dict[str, int]:
    """Path parameters that name stored rows.

    A run with rounds, checkpoint and devices, and an operator token (not the admin token every case
    carries).
    """
    run = create_random_run(db, status="running")
    for round_ in (1, 2):
        crud.record_round(session=db, run_id=run.id, record=make_round_record(round_))
    create_random_run(db, status="completed")
    db.commit()
    devices, _ = crud.list_devices(session=db, skip=0, limit=1)
    token = crud.create_token(session=db, role="operator", name="schemathesis")
    db.commit()
    token_id = db.scalar(select(ApiToken.id).where(ApiToken.token_hash == hash_token(token)))
    return {"run_id": run.id, "device_id": devices[0].id, "token_id": token_id}


def _call_and_validate(case: schemathesis.Case, headers: dict[str, str]) -> None:
    # A cursor is issued by the API (a page's next_cursor), not drawn from the schema: a
    # made-up one is a 422 by design, which test_pagination.py checks.
    if case.query:
        case.query.pop("cursor", None)
    response = case.call(headers=headers)
    case.validate_response(response, headers=headers, excluded_checks=_semantic_422(response))


def _semantic_422(response: Any) -> list[Any]:
    """Checks to skip when a schema-valid body was refused for a reason no schema can state.

    A device-class budget that no bit width of the served models can meet (its modelled
    training memory depends on the model, `apt_core/federated/budget.py`) is a 422 naming
    ``budgets.<class>.memory_bytes``; api/routes/test_policy_budgets.py checks those refusals.
    """
    if response.status_code != 422:
        return []
    locs = [err.get("loc", []) for err in response.json().get("detail", [])]
    if locs and all(len(loc) > 1 and loc[1] == "budgets" for loc in locs):
        return [CHECKS_REGISTRY.get_one("positive_data_acceptance")]
    return []


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_openapi_with_admin_token(
    case: schemathesis.Case, app: FastAPI, admin_headers: dict[str, str], seeded: dict[str, int]
) -> None:
    # Prepare: a converter, so format=torch answers 200 rather than the documented 501
    app.state.model_converter = lambda packed, _run: b"torch:" + packed
    CURRENT_APP.target = app

    # Execute / Assert: the generated case, whose ids rarely name a stored row
    _call_and_validate(case, admin_headers)

    # Execute / Assert: the same query and body against stored rows
    if case.path_parameters:
        stored = {name: seeded[name] for name in case.path_parameters}
        replay = case.operation.Case(
            path_parameters=stored, query=case.query, body=case.body, media_type=case.media_type
        )
        _call_and_validate(replay, admin_headers)


def _documented(method: str, path: str) -> set[str]:
    return set(OPENAPI["paths"][path][method]["responses"])


@pytest.mark.parametrize(("method", "path"), [("post", "/api/v1/runs"), ("put", "/api/v1/policy")])
def test_body_not_utf8_status_documented(
    client: TestClient, admin_headers: dict[str, str], method: str, path: str
) -> None:
    # Execute
    response = client.request(
        method,
        path,
        content=b'{"task": "\xff"}',
        headers={**admin_headers, "Content-Type": "application/json"},
    )

    # Assert
    assert str(response.status_code) in _documented(method, path)


def test_openapi_documents_401_on_api_operations() -> None:
    undocumented = [
        f"{method.upper()} {path}"
        for path, ops in OPENAPI["paths"].items()
        if path.startswith("/api/v1")
        for method in ops
        if "401" not in _documented(method, path)
    ]
    assert undocumented == []
