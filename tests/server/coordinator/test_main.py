"""Tests of the app built by ``main.create_app``: health, metrics, limits, startup."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

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
    app.state.engine = make_engine(
        "postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")

    # Execute
    response = client.get("/readyz")

    # Assert
    assert response.status_code == 503
    assert response.json() == {"detail": "Database unreachable"}


def test_read_metrics_fleet_totals_and_latency(client: TestClient, db: Session,
                                               operator_headers: dict[str, str]) -> None:
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
    assert ('aptfleet_http_request_duration_seconds_count{method="GET",'
            'route="/api/v1/runs/{run_id}",status="200"} 1.0') in text


def test_request_body_too_large_413(db_url: str, tmp_path: Path) -> None:
    # Prepare
    app = create_app(Settings(DATABASE_URL=db_url, DATA_DIR=tmp_path, MAX_BODY_BYTES=64))

    # Execute
    with TestClient(app) as client:
        declared = client.post("/api/v1/runs", content=b"x" * 65,
                               headers={"Content-Type": "application/json"})
        streamed = client.post("/api/v1/runs", content=iter([b"x" * 40, b"x" * 40]))
        small = client.post("/api/v1/runs", content=b"{}")

    # Assert
    assert declared.status_code == 413
    assert "64 bytes" in declared.json()["detail"]
    assert streamed.status_code == 413
    assert small.status_code == 401  # under the limit: reaches auth


def test_cors_closed_by_default(client: TestClient) -> None:
    response = client.options("/api/v1/runs", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in response.headers


def test_cors_allows_configured_origin(db_url: str, tmp_path: Path) -> None:
    # Prepare
    settings = Settings(DATABASE_URL=db_url, DATA_DIR=tmp_path,
                        CORS_ORIGINS=["https://ui.example"])

    # Execute
    with TestClient(create_app(settings)) as client:
        response = client.get("/healthz", headers={"Origin": "https://ui.example"})

    # Assert
    assert response.headers["access-control-allow-origin"] == "https://ui.example"


def test_create_app_startup_marks_interrupted_runs(db_url: str, tmp_path: Path,
                                                   db: Session) -> None:
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
