"""Tests of the app built by ``main.create_app``: health, metrics, limits, startup."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from apt_core.config import NAMED_POLICIES
from server.coordinator import crud
from server.coordinator.core.config import Settings
from server.coordinator.core.db import make_engine
from server.coordinator.main import create_app
from server.coordinator.services.launcher import NullLauncher
from tests.utils.run import create_random_run, make_round_record


def test_read_health_ok(client: TestClient) -> None:
    response = client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"detail": "ok"})


def test_read_readiness_ok(client: TestClient) -> None:
    assert client.get("/readyz").status_code == 200


def test_read_readiness_database_down_503(app: FastAPI, client: TestClient) -> None:
    # Prepare
    app.state.engine = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")

    # Execute
    response = client.get("/readyz")

    # Assert
    assert response.status_code == 503
    assert response.json() == {"detail": "Database unreachable"}


def test_read_metrics_fleet_totals_and_latency(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    run = create_random_run(db, status="running")
    create_random_run(db, status="completed")
    for r in (1, 2):
        crud.record_round(session=db, run_id=run.id, record=make_round_record(r))
    db.commit()
    client.get(f"/api/v1/runs/{run.id}", headers=operator_headers)

    # Execute
    response = client.get("/metrics")

    # Assert
    text = response.text
    assert response.status_code == 200
    assert "aptfleet_active_runs 1.0" in text
    assert "aptfleet_rounds_completed_total 2.0" in text
    assert "aptfleet_uplink_bytes_total 6000.0" in text
    assert "aptfleet_downlink_bytes_total 12000.0" in text
    assert "aptfleet_energy_joules_total 9.0" in text
    assert (
        'aptfleet_http_request_duration_seconds_count{method="GET",'
        'route="/api/v1/runs/{run_id}",status="200"} 1.0'
    ) in text


def test_request_body_too_large_413(db_url: str, tmp_path: Path) -> None:
    # Prepare
    app = create_app(Settings(DATABASE_URL=db_url, DATA_DIR=tmp_path, MAX_BODY_BYTES=64))

    # Execute
    with TestClient(app) as client:
        declared = client.post(
            "/api/v1/runs", content=b"x" * 65, headers={"Content-Type": "application/json"}
        )
        streamed = client.post("/api/v1/runs", content=iter([b"x" * 40, b"x" * 40]))
        small = client.post("/api/v1/runs", content=b"{}")

    # Assert
    assert declared.status_code == 413
    assert "64 bytes" in declared.json()["detail"]
    assert streamed.status_code == 413
    assert small.status_code == 401  # under the limit: reaches auth


def test_cors_closed_by_default(client: TestClient) -> None:
    response = client.options(
        "/api/v1/runs",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in response.headers


def test_cors_allows_configured_origin(db_url: str, tmp_path: Path) -> None:
    # Prepare
    settings = Settings(DATABASE_URL=db_url, DATA_DIR=tmp_path, CORS_ORIGINS=["https://ui.example"])

    # Execute
    with TestClient(create_app(settings)) as client:
        response = client.get("/healthz", headers={"Origin": "https://ui.example"})

    # Assert
    assert response.headers["access-control-allow-origin"] == "https://ui.example"


def test_create_app_startup_marks_interrupted_runs(
    db_url: str, tmp_path: Path, db: Session
) -> None:
    # Prepare
    running = create_random_run(db, status="running")
    done = create_random_run(db, status="completed")

    # Execute
    with TestClient(create_app(Settings(DATABASE_URL=db_url, DATA_DIR=tmp_path))):
        pass

    # Assert
    db.commit()
    assert crud.get_run(session=db, run_id=running.id).status == "interrupted"
    assert crud.get_run(session=db, run_id=done.id).status == "completed"


def test_create_app_default_launcher_is_null(db_url: str, tmp_path: Path) -> None:
    app = create_app(Settings(DATABASE_URL=db_url, DATA_DIR=tmp_path))
    assert isinstance(app.state.launcher, NullLauncher)
    assert app.state.model_converter is None


def test_create_app_migrates_new_sqlite_file(tmp_path: Path) -> None:
    # Prepare
    settings = Settings(DATA_DIR=tmp_path / "data")

    # Execute
    with TestClient(create_app(settings)) as client:
        response = client.get("/readyz")

    # Assert
    assert response.status_code == 200
    assert (tmp_path / "data" / "aptfleet.db").exists()


_NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e309"]


@pytest.mark.parametrize("literal", _NON_FINITE)
@pytest.mark.parametrize(
    ("method", "path", "template"),
    [
        ("post", "/api/v1/runs", '{"task": "digits", "method": "apt", "alpha": %s}'),
        ("put", "/api/v1/policy", '{"t_min": %s}'),
        ("put", "/api/v1/policy", '{"overrides": {"mcu": {"t_min": %s}}}'),
        ("put", "/api/v1/policy", '{"note": "x", "unknown": %s}'),
    ],
)
def test_non_finite_number_in_body_422_names_field(
    client: TestClient,
    admin_headers: dict[str, str],
    method: str,
    path: str,
    template: str,
    literal: str,
) -> None:
    # Execute
    response = client.request(
        method,
        path,
        content=(template % literal).encode(),
        headers={**admin_headers, "Content-Type": "application/json"},
    )

    # Assert
    assert response.status_code == 422
    error = response.json()["detail"][0]
    assert error["loc"][-1] in {"alpha", "t_min", "unknown"}
    assert error["input"] in {"NaN", "Infinity", "-Infinity"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"task": "digits", "method": "apt", "rounds": True}, "rounds"),
        ({"task": "digits", "method": "apt", "seed": "3"}, "seed"),
        ({"task": "digits", "method": "apt", "alpha": 1e308}, "alpha"),
        ({"task": "digits", "method": "apt", "policy": "nonsense"}, "policy"),
    ],
)
def test_create_run_out_of_range_or_lax_type_422(
    client: TestClient, admin_headers: dict[str, str], body: dict[str, object], field: str
) -> None:
    response = client.post("/api/v1/runs", json=body, headers=admin_headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", field]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"t_min": 1e-320}, "t_min"),
        ({"t_min": 1e300}, "t_min"),
        ({"check_every": 2**31 - 1}, "check_every"),
        ({"check_every": 0}, "check_every"),
        ({"bits_max": True}, "bits_max"),
        ({"t_min": None}, "t_min"),
        ({"rounding": "up"}, "rounding"),
    ],
)
def test_update_policy_out_of_range_or_null_422(
    client: TestClient, admin_headers: dict[str, str], body: dict[str, object], field: str
) -> None:
    response = client.put("/api/v1/policy", json=body, headers=admin_headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", field]


def test_request_schema_documents_ranges() -> None:
    # Prepare
    app = create_app(Settings(DATABASE_URL="sqlite://"))
    app.state.engine.dispose()
    schemas = app.openapi()["components"]["schemas"]

    # Execute
    update, run = schemas["PolicyUpdate"]["properties"], schemas["RunCreate"]["properties"]

    # Assert: t_min is not nullable, t_max is (null: 4 * t_min)
    assert update["t_min"]["type"] == "number" and update["t_min"]["maximum"] == 100
    assert {"type": "null"} in update["t_max"]["anyOf"]
    assert update["check_every"]["maximum"] == 10_000
    assert run["alpha"]["maximum"] == 1000
    assert set(run["policy"]["anyOf"][0]["enum"]) == set(NAMED_POLICIES)


def test_method_not_allowed_allow_lists_every_route_of_path(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    runs = client.delete("/api/v1/runs", headers=admin_headers)
    policy = client.post("/api/v1/policy", headers=admin_headers)
    assert (runs.status_code, runs.headers["allow"]) == (405, "GET, POST")
    assert (policy.status_code, policy.headers["allow"]) == (405, "GET, PUT")


_SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


def test_every_response_carries_security_headers(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    # Execute: answers of a route, the auth check, the router (404, 405), a limit (413)
    responses = [
        client.get("/healthz"),
        client.get("/api/v1/runs", headers=admin_headers),
        client.get("/api/v1/runs"),
        client.get("/nowhere"),
        client.delete("/api/v1/runs", headers=admin_headers),
        client.post("/api/v1/runs", content=b"x" * 2_000_000),
        client.get("/docs"),
        client.get("/openapi.json"),
    ]

    # Assert
    for response in responses:
        assert {k: response.headers.get(k) for k in _SECURITY_HEADERS} == _SECURITY_HEADERS
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert "strict-transport-security" not in response.headers
    assert responses[1].headers["cache-control"] == "no-store"


def test_tls_setting_adds_hsts(db_url: str, tmp_path: Path) -> None:
    with TestClient(
        create_app(Settings(DATABASE_URL=db_url, DATA_DIR=tmp_path, TLS=True))
    ) as client:
        response = client.get("/healthz")
    assert response.headers["strict-transport-security"].startswith("max-age=")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_page_loads_only_packaged_assets(client: TestClient, page: str) -> None:
    # Execute
    response = client.get(page)
    sources = re.findall(r'(?:src|href)="([^"]+)"', response.text)
    assets = [client.get(source) for source in sources]

    # Assert: same-origin only, each file served, and a CSP that forbids any other origin
    assert response.status_code == 200
    assert sources and all(source.startswith("/docs/assets/") for source in sources)
    assert [a.status_code for a in assets] == [200] * len(assets)
    assert all(len(a.content) > 1000 for a in assets if "init" not in str(a.url))
    assert "script-src 'self';" in response.headers["content-security-policy"]
    assert "<script>" not in response.text  # nothing inline


def test_read_metrics_token_required_when_set(
    db_url: str, tmp_path: Path, admin_headers: dict[str, str]
) -> None:
    # Prepare
    settings = Settings(DATABASE_URL=db_url, DATA_DIR=tmp_path, METRICS_TOKEN="m-secret-1")

    # Execute
    with TestClient(create_app(settings)) as client:
        anonymous = client.get("/metrics")
        wrong = client.get("/metrics", headers={"Authorization": "Bearer m-secret-2"})
        api_token = client.get("/metrics", headers=admin_headers)
        right = client.get("/metrics", headers={"Authorization": "Bearer m-secret-1"})

    # Assert
    assert [r.status_code for r in (anonymous, wrong, api_token, right)] == [401, 401, 401, 200]
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert "APTFLEET_METRICS_TOKEN" in anonymous.json()["detail"]
    assert "m-secret-1" not in anonymous.text
    assert "aptfleet_http_request_duration_seconds" in right.text


def test_metrics_token_placeholder_refused_in_production() -> None:
    with pytest.raises(ValueError, match="APTFLEET_METRICS_TOKEN"):
        Settings(ENVIRONMENT="production", METRICS_TOKEN="changethis")
