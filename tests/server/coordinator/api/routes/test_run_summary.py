"""Tests of /api/v1/runs/{run_id}/summary and of the runs' device limit."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from server.coordinator import crud
from server.coordinator.schemas import CLIENTS_MAX
from tests.utils.run import create_random_run, make_round_record


def test_read_run_summary_totals_and_latest_round(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    run = create_random_run(db, status="running", rounds=10)
    for r in (1, 2):
        crud.record_round(
            session=db, run_id=run.id, record=make_round_record(r, nodes=(11, 12), accuracy=0.3 * r)
        )
    db.commit()

    # Execute
    body = client.get(f"/api/v1/runs/{run.id}/summary", headers=operator_headers).json()

    # Assert
    assert (body["id"], body["status"], body["current_round"], body["rounds"]) == (
        run.id,
        "running",
        2,
        10,
    )
    assert body["progress"] == 0.2 and body["latest_accuracy"] == 0.6
    assert (body["rounds_recorded"], body["participants"], body["uplink_bytes"]) == (2, 4, 4000)
    assert body["latest_round"]["round"] == 2 and body["queue_position"] is None


def test_read_run_summary_unknown_run_not_found(
    client: TestClient, operator_headers: dict[str, str]
) -> None:
    response = client.get("/api/v1/runs/987654/summary", headers=operator_headers)
    assert response.status_code == 404


def test_create_run_clients_limit_is_clients_max(
    client: TestClient, operator_headers: dict[str, str]
) -> None:
    # Prepare
    body = {"task": "digits", "method": "apt", "rounds": 1}

    # Execute
    at_limit = client.post(
        "/api/v1/runs", json={**body, "clients": CLIENTS_MAX}, headers=operator_headers
    )
    beyond = client.post(
        "/api/v1/runs", json={**body, "clients": CLIENTS_MAX + 1}, headers=operator_headers
    )

    # Assert
    assert CLIENTS_MAX >= 1000
    assert at_limit.status_code == 201 and at_limit.json()["clients"] == CLIENTS_MAX
    assert beyond.status_code == 422
    assert [e["loc"] for e in beyond.json()["detail"]] == [["body", "clients"]]
