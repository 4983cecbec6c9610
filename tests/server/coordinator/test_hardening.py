"""Hardening beyond test_main.py and api/routes/test_auth.py.

Limits that hold for valid tokens, CORS on simple requests, tokens kept out of every log (CLI,
dashboard, the live service), and no write at all without an API bearer token.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from server.cli.coordinator import server_cli
from server.coordinator.core.config import Settings
from server.coordinator.dashboard.auth import COOKIE_NAME
from server.coordinator.main import create_app
from server.coordinator.tables import Base
from tests.utils.dashboard import sign_in
from tests.utils.launcher import RecordingLauncher
from tests.utils.service import Coordinator

DEFAULT_MAX_BODY_BYTES = Settings().MAX_BODY_BYTES
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def _row_counts(db: Session) -> dict[str, int]:
    db.commit()  # end the read snapshot: see what the app committed
    return {
        table.name: db.scalar(select(func.count()).select_from(table)) or 0
        for table in Base.metadata.sorted_tables
    }


def _json_of_size(size: int) -> bytes:
    """A valid ``RunCreate``-shaped JSON body of exactly ``size`` bytes."""
    head = b'{"task": "digits", "method": "apt", "policy": "'
    return head + b"x" * (size - len(head) - 2) + b'"}'


def _write_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) that can write, schema or not (dashboard routes included)."""
    return [
        (method, route.path.replace("{run_id}", "1").replace("{device_id}", "1"))
        for route in iter_route_contexts(app.routes)
        if route.path
        for method in sorted(set(getattr(route, "methods", None) or ()) & WRITE_METHODS)
    ]


@pytest.mark.parametrize(
    ("method", "path"), [("post", "/api/v1/runs"), ("put", "/api/v1/policy"), ("post", "/login")]
)
def test_body_over_default_limit_with_admin_token_413_nothing_stored(
    client: TestClient,
    db: Session,
    launcher: RecordingLauncher,
    admin_headers: dict[str, str],
    method: str,
    path: str,
) -> None:
    # Prepare
    before = _row_counts(db)

    # Execute
    response = client.request(
        method,
        path,
        content=_json_of_size(DEFAULT_MAX_BODY_BYTES + 1),
        headers={**admin_headers, "Content-Type": "application/json"},
    )

    # Assert
    assert DEFAULT_MAX_BODY_BYTES == 1_048_576
    assert response.status_code == 413
    assert _row_counts(db) == before
    assert launcher.started == []


def test_body_at_default_limit_reaches_route(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    response = client.post(
        "/api/v1/runs",
        content=_json_of_size(DEFAULT_MAX_BODY_BYTES),
        headers={**admin_headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 422  # the route's own validation: policy too long
    assert response.json()["detail"][0]["loc"] == ["body", "policy"]


def test_cors_simple_request_by_default_no_allow_origin(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    response = client.get(
        "/api/v1/runs", headers={**admin_headers, "Origin": "https://evil.example"}
    )
    assert response.status_code == 200
    assert not {h for h in response.headers if h.startswith("access-control-")}


def test_cors_configured_origin_refuses_other_origins(db_url: str, tmp_path: Path) -> None:
    # Prepare
    app = create_app(
        Settings(DATABASE_URL=db_url, DATA_DIR=tmp_path, CORS_ORIGINS=["https://ui.example"])
    )
    preflight = {
        "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "authorization",
    }

    # Execute
    with TestClient(app) as client:
        other = client.options(
            "/api/v1/policy", headers={**preflight, "Origin": "https://evil.example"}
        )
        simple = client.get("/healthz", headers={"Origin": "https://evil.example"})
        allowed = client.options(
            "/api/v1/policy", headers={**preflight, "Origin": "https://ui.example"}
        )

    # Assert
    assert other.status_code == 400
    assert "access-control-allow-origin" not in other.headers
    assert "access-control-allow-origin" not in simple.headers
    assert allowed.headers["access-control-allow-origin"] == "https://ui.example"
    assert "access-control-allow-credentials" not in allowed.headers


def test_token_from_cli_never_logged_in_process(
    db_url: str, client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare
    caplog.set_level(logging.DEBUG)

    # Execute: create it with the CLI, then use it on the API and the dashboard
    created = CliRunner().invoke(
        server_cli,
        ["token", "create", "--role", "admin", "--name", "ops", "--database-url", db_url],
    )
    token = created.stdout.strip()
    bearer = {"Authorization": f"Bearer {token}"}
    responses = [
        client.get("/api/v1/runs", headers=bearer),
        client.put("/api/v1/policy", json={"bits_max": 15}, headers=bearer),
        client.post("/api/v1/runs", json={"task": "digits", "method": "apt"}, headers=bearer),
        client.get("/api/v1/runs", headers={"Authorization": f"Bearer {token}x"}),
        sign_in(client, token),
        client.get("/"),  # with the session cookie the sign-in set
    ]

    # Assert
    assert created.exit_code == 0 and token.startswith("aptf_")
    assert [r.status_code for r in responses] == [200, 200, 201, 401, 303, 200]
    assert token not in caplog.text
    assert token not in created.stderr


@pytest.fixture()
def coordinator(tmp_path: Path) -> Iterator[Coordinator]:
    c = Coordinator(tmp_path)
    yield c
    c.stop()


@pytest.mark.slow
def test_token_never_in_service_log(coordinator: Coordinator) -> None:
    # Prepare
    coordinator.start()
    token = coordinator.token("admin")

    # Execute: header, wrong token, dashboard sign-in and cookie, a policy change
    with coordinator.client(token) as api:
        statuses = [
            api.get("/runs").status_code,
            api.put("/policy", json={"bits_max": 15}).status_code,
            api.get("/runs", headers={"Authorization": f"Bearer {token}0"}).status_code,
        ]
    with httpx.Client(base_url=coordinator.base, timeout=30) as browser:
        login = sign_in(browser, token)
        page = browser.get("/")  # with the session cookie the sign-in set
    coordinator.stop()

    # Assert
    log = coordinator.log()
    assert statuses == [200, 200, 401]
    assert (login.status_code, page.status_code) == (303, 200)
    assert "GET /api/v1/runs" in log  # the access log was written, so it was searched
    assert token not in log
    assert token.removeprefix("aptf_") not in log


def test_every_write_route_without_api_token_changes_nothing(
    app: FastAPI,
    client: TestClient,
    db: Session,
    launcher: RecordingLauncher,
    admin_headers: dict[str, str],
) -> None:
    # Prepare: a signed-in dashboard cookie must not be able to write either
    routes = _write_routes(app)
    admin_token = admin_headers["Authorization"].removeprefix("Bearer ")
    before = _row_counts(db)

    # Execute
    anonymous = {
        (m, p): client.request(
            m, p, json={"task": "digits", "method": "apt"}, follow_redirects=False
        )
        for m, p in routes
    }
    client.cookies.set(COOKIE_NAME, admin_token)
    cookie_only = {
        (m, p): client.request(m, p, json={"bits_max": 12}, follow_redirects=False).status_code
        for m, p in routes
        if p.startswith("/api/")
    }
    client.cookies.clear()

    # Assert
    assert ("POST", "/login") in routes and ("PUT", "/api/v1/policy") in routes
    for (method, path), response in anonymous.items():
        status = response.status_code
        if path.startswith("/api/"):
            assert status == 401, (method, path, status)
        elif path in ("/login", "/logout"):  # a POST without the form's CSRF token
            assert status == 403, (method, path, status)
        else:  # the console's forms send an anonymous browser to sign in
            location = response.headers.get("location", "")
            assert (status, location.split("?")[0]) == (303, "/login"), (method, path, status)
    assert set(cookie_only.values()) == {401}
    assert _row_counts(db) == before
    assert (launcher.started, launcher.stopped) == ([], [])


def test_update_policy_operator_forbidden_no_new_version(
    client: TestClient, operator_headers: dict[str, str], admin_headers: dict[str, str]
) -> None:
    # Execute
    forbidden = client.put(
        "/api/v1/policy", json={"bits_max": 12, "note": "op"}, headers=operator_headers
    )
    history = client.get("/api/v1/policy/history", headers=admin_headers).json()

    # Assert
    assert forbidden.status_code == 403
    assert "admin" in json.dumps(forbidden.json())
    assert [p["version"] for p in history["data"]] == [1]
