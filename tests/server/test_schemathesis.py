"""Schemathesis drives every operation of /openapi.json with an admin token."""

from __future__ import annotations

import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from server.core.config import Settings
from server.main import create_app

MAX_EXAMPLES = 25
CHECKS = ["not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance", "response_headers_conformance"]


def _config() -> SchemathesisConfig:
    config = SchemathesisConfig()
    project = config.projects.default
    project.generation.update(max_examples=MAX_EXAMPLES, deterministic=True)
    project.phases.update(phases=["examples", "coverage", "fuzzing"])
    project.checks.update(included_check_names=CHECKS)
    return config


schema = schemathesis.openapi.from_dict(
    create_app(Settings(DATABASE_URL="sqlite://")).openapi(), config=_config())


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_api_conforms_to_openapi_with_admin_token(case: schemathesis.Case, app: FastAPI,
                                                   admin_headers: dict[str, str]) -> None:
    case.call_and_validate(app=app, headers=admin_headers)
