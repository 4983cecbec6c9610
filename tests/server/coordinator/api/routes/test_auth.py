"""Every /api/v1 endpoint needs a live bearer token; only admins may change the policy.

Repeated failures from one address are slowed.
"""

from __future__ import annotations

import json
import logging

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.coordinator import crud
from server.coordinator.tables import ApiToken

WRITE_ENDPOINTS = [
    ("post", "/api/v1/runs"),
    ("post", "/api/v1/runs/1/stop"),
    ("post", "/api/v1/runs/1/resume"),
    ("put", "/api/v1/policy"),
]


def _api_operations(app: FastAPI) -> list[tuple[str, str]]:
    paths = app.openapi()["paths"]
    return [
        (method, path.replace("{run_id}", "1").replace("{device_id}", "1"))
        for path, ops in paths.items()
        if path.startswith("/api/v1")
        for method in ops
    ]


def test_every_api_endpoint_without_token_unauthorized(app: FastAPI, client: TestClient) -> None:
    # Prepare
    operations = _api_operations(app)

    # Execute
    responses = {(m, p): client.request(m, p, json={}) for m, p in operations}

    # Assert
    assert len(operations) >= 11
    for key, response in responses.items():
        assert response.status_code == 401, key
        assert response.headers["www-authenticate"] == "Bearer", key


@pytest.mark.parametrize(("method", "path"), WRITE_ENDPOINTS)
@pytest.mark.parametrize("authorization", ["Bearer aptf_wrong", "Basic dXNlcjpwdw==", "Bearer"])
def test_write_endpoint_bad_token_unauthorized(
    client: TestClient, method: str, path: str, authorization: str
) -> None:
    response = client.request(method, path, json={}, headers={"Authorization": authorization})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "path"), WRITE_ENDPOINTS)
def test_write_endpoint_revoked_token_unauthorized(
    client: TestClient, db: Session, method: str, path: str
) -> None:
    # Prepare
    token = crud.create_token(session=db, role="admin")
    crud.revoke_token(session=db, token_id=db.scalar(select(ApiToken.id)))
    db.commit()

    # Execute
    response = client.request(method, path, json={}, headers={"Authorization": f"Bearer {token}"})

    # Assert
    assert response.status_code == 401


def test_update_policy_operator_forbidden(
    client: TestClient, operator_headers: dict[str, str]
) -> None:
    response = client.put("/api/v1/policy", json={"bits_max": 12}, headers=operator_headers)
    assert response.status_code == 403


def test_operator_can_start_and_stop_runs(
    client: TestClient, operator_headers: dict[str, str]
) -> None:
    # Execute
    created = client.post(
        "/api/v1/runs", json={"task": "mnist1d", "method": "fp32"}, headers=operator_headers
    )
    stopped = client.post(f"/api/v1/runs/{created.json()['id']}/stop", headers=operator_headers)

    # Assert
    assert (created.status_code, stopped.status_code) == (201, 200)


def test_token_never_logged(
    client: TestClient, db: Session, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare
    caplog.set_level(logging.DEBUG)
    token = crud.create_token(session=db, role="admin")
    db.commit()

    # Execute
    client.get("/api/v1/runs", headers={"Authorization": f"Bearer {token}"})
    client.get("/api/v1/runs", headers={"Authorization": f"Bearer {token}x"})

    # Assert
    assert token not in caplog.text


def test_repeated_bad_tokens_too_many_requests_per_address(
    app: FastAPI, client: TestClient, admin_headers: dict[str, str]
) -> None:
    # Prepare
    limit = app.state.settings.AUTH_FAILURE_LIMIT
    bad = {"Authorization": "Bearer aptf_guess"}

    # Execute
    failures = [client.get("/api/v1/runs", headers=bad).status_code for _ in range(limit)]
    throttled = client.get("/api/v1/runs", headers=bad)
    valid_meanwhile = client.get("/api/v1/runs", headers=admin_headers)
    with TestClient(app, client=("10.0.0.9", 50000)) as other:
        elsewhere = other.get("/api/v1/runs", headers=admin_headers)
        elsewhere_bad = other.get("/api/v1/runs", headers=bad)

    # Assert
    assert failures == [401] * limit
    assert throttled.status_code == 429
    assert 1 <= int(throttled.headers["retry-after"]) <= 60
    assert "Too many failed authentication attempts" in throttled.json()["detail"]
    assert valid_meanwhile.status_code == 429  # no oracle while throttled
    assert (elsewhere.status_code, elsewhere_bad.status_code) == (200, 401)


def test_missing_token_not_counted_as_failure(
    app: FastAPI, client: TestClient, admin_headers: dict[str, str]
) -> None:
    # Execute
    for _ in range(app.state.settings.AUTH_FAILURE_LIMIT + 5):
        client.get("/api/v1/runs")
    response = client.get("/api/v1/runs", headers=admin_headers)

    # Assert
    assert response.status_code == 200


def test_unauthorized_messages_name_existing_command(app: FastAPI, client: TestClient) -> None:
    # Execute
    missing = client.get("/api/v1/runs").json()["detail"]
    openapi = json.dumps(app.openapi())

    # Assert: tests/server/cli/test_coordinator.py runs this very command
    assert "aptfleet token create --role admin" in missing
    assert "aptfleet token create --role admin" in openapi
    assert "server token" not in openapi and "server token" not in missing
