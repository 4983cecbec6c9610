"""Tests of /api/v1/devices."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from server.coordinator import crud
from tests.utils.run import create_random_run, make_round_record


def test_read_devices_lists_seen_nodes(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    run = create_random_run(db, status="running")
    crud.record_round(
        session=db, run_id=run.id, record=make_round_record(1, nodes=(11, 12), device_class="mcu")
    )
    db.commit()

    # Execute
    body = client.get("/api/v1/devices", headers=operator_headers).json()

    # Assert
    assert body["count"] == 2
    assert sorted(d["node_id"] for d in body["data"]) == [11, 12]
    assert {d["device_class"] for d in body["data"]} == {"mcu"}


def test_read_device_with_history(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    run = create_random_run(db, status="running")
    for r in (1, 2):
        crud.record_round(session=db, run_id=run.id, record=make_round_record(r, nodes=(11,)))
    db.commit()
    device_id = client.get("/api/v1/devices", headers=operator_headers).json()["data"][0]["id"]

    # Execute
    body = client.get(f"/api/v1/devices/{device_id}", headers=operator_headers).json()

    # Assert
    assert body["node_id"] == 11
    assert len(body["history"]) == 1
    history = body["history"][0]
    assert (history["run_id"], history["rounds"], history["failures"]) == (run.id, 2, 0)
    assert (history["first_round"], history["last_round"]) == (1, 2)
    assert history["uplink_bytes"] == 2000


def test_read_device_not_found(client: TestClient, operator_headers: dict[str, str]) -> None:
    response = client.get("/api/v1/devices/4242", headers=operator_headers)
    assert response.status_code == 404
    assert response.json() == {"detail": "Device 4242 not found"}
