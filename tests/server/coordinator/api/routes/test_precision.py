"""Tests of /api/v1/runs/{run_id}/precision."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from server.coordinator import crud
from server.coordinator.tables import Run
from tests.utils.run import create_random_run, default_bits, make_round_record

NODES = (11, 12, 13)
LAYERS = ("conv1", "fc")


def _run_with_rounds(db: Session, rounds: int = 3) -> Run:
    run = create_random_run(db, status="running")
    for r in range(1, rounds + 1):
        crud.record_round(
            session=db, run_id=run.id, record=make_round_record(r, nodes=NODES, layers=LAYERS)
        )
    db.commit()
    return run


def test_read_precision_all_rows(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    run = _run_with_rounds(db)

    # Execute
    body = client.get(f"/api/v1/runs/{run.id}/precision", headers=operator_headers).json()

    # Assert
    assert body["count"] == 3 * len(NODES) * len(LAYERS)
    first = body["data"][0]
    assert (first["round"], first["node_id"], first["layer"]) == (1, 11, "conv1")
    assert first["bits"] == default_bits(11, 0, 1)
    assert (first["exponent"], first["checks"]) == (-6, 4)


def test_read_precision_filtered(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    run = _run_with_rounds(db, rounds=4)
    devices = client.get("/api/v1/devices", headers=operator_headers).json()["data"]
    device = next(d for d in devices if d["node_id"] == 12)

    # Execute
    body = client.get(
        f"/api/v1/runs/{run.id}/precision",
        params={"layer": "fc", "device": device["id"], "from_round": 2, "to_round": 3},
        headers=operator_headers,
    ).json()

    # Assert
    assert [(r["round"], r["node_id"], r["layer"]) for r in body["data"]] == [
        (2, 12, "fc"),
        (3, 12, "fc"),
    ]
    assert [r["bits"] for r in body["data"]] == [default_bits(12, 1, 2), default_bits(12, 1, 3)]


def test_read_precision_bad_round_names_from_round(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    run = create_random_run(db)
    response = client.get(f"/api/v1/runs/{run.id}/precision?from_round=0", headers=operator_headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "from_round"]


def test_read_precision_unknown_run_not_found(
    client: TestClient, operator_headers: dict[str, str]
) -> None:
    response = client.get("/api/v1/runs/17/precision", headers=operator_headers)
    assert response.status_code == 404
    assert response.json() == {"detail": "Run 17 not found"}


def test_read_precision_summary_per_layer_and_round(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    run = _run_with_rounds(db, rounds=2)

    # Execute
    body = client.get(f"/api/v1/runs/{run.id}/precision/summary", headers=operator_headers).json()

    # Assert
    assert body["count"] == 2 * len(LAYERS)
    row = body["data"][0]
    bits = [default_bits(n, 0, 1) for n in NODES]
    assert (row["round"], row["layer"], row["devices"]) == (1, "conv1", len(NODES))
    assert (row["min_bits"], row["max_bits"]) == (min(bits), max(bits))
    assert row["mean_bits"] == sum(bits) / len(bits)


def test_read_precision_summary_unknown_run_not_found(
    client: TestClient, operator_headers: dict[str, str]
) -> None:
    response = client.get("/api/v1/runs/17/precision/summary", headers=operator_headers)
    assert response.status_code == 404
