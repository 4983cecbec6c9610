"""Tests of /api/v1/runs."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from apt_core.federated import RunSettings
from server.coordinator import crud
from server.flower.settings import ServerSettings
from tests.utils.launcher import RecordingLauncher
from tests.utils.run import create_random_run, make_round_record

RUN_BODY = {
    "task": "digits",
    "method": "apt",
    "clients": 4,
    "fraction": 0.5,
    "rounds": 3,
    "alpha": 0.3,
    "seed": 7,
}


def test_create_run_queued_and_launched(
    client: TestClient, operator_headers: dict[str, str], launcher: RecordingLauncher
) -> None:
    # Execute
    response = client.post(
        "/api/v1/runs", json={**RUN_BODY, "policy": "aggressive"}, headers=operator_headers
    )

    # Assert
    assert response.status_code == 201
    body = response.json()
    assert {k: body[k] for k in RUN_BODY} == RUN_BODY
    assert (body["status"], body["policy"], body["progress"]) == ("queued", "aggressive", 0.0)
    assert body["queue_position"] == 1
    assert launcher.started == [body["id"]]


def test_create_run_defaults_are_the_run_settings_defaults(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Execute
    response = client.post(
        "/api/v1/runs", json={"task": "mnist1d", "method": "fp32"}, headers=operator_headers
    )

    # Assert: the defaults the ServerApp and pyproject use, and every run setting stored
    assert response.status_code == 201
    body = response.json()
    run_defaults, server_defaults = RunSettings(), ServerSettings()
    assert (body["alpha"], body["seed"]) == (run_defaults.alpha, run_defaults.seed)
    assert (body["rounds"], body["fraction"]) == (
        server_defaults.rounds,
        server_defaults.fraction_train,
    )
    assert body["policy"] is None
    db.commit()
    run = crud.get_run(session=db, run_id=body["id"])
    assert run is not None
    assert run.settings == RunSettings(task="mnist1d", method="fp32").to_dict()


def test_create_run_clients_zero_names_clients(
    client: TestClient, operator_headers: dict[str, str]
) -> None:
    # Execute
    response = client.post(
        "/api/v1/runs", json={**RUN_BODY, "clients": 0}, headers=operator_headers
    )

    # Assert
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["detail"]] == [["body", "clients"]]


def test_create_run_invalid_fields_named(
    client: TestClient, operator_headers: dict[str, str]
) -> None:
    # Prepare
    body = {
        **RUN_BODY,
        "task": "cifar",
        "method": "int4",
        "fraction": 0.0,
        "rounds": 501,
        "alpha": 0,
        "seed": -1,
        "policy": "bogus",
        "extra": 1,
    }

    # Execute
    response = client.post("/api/v1/runs", json=body, headers=operator_headers)

    # Assert
    assert response.status_code == 422
    named = {e["loc"][-1] for e in response.json()["detail"]}
    assert named == {"task", "method", "fraction", "rounds", "alpha", "seed", "policy", "extra"}


def test_create_run_launcher_failure_is_503_and_run_failed(
    app: FastAPI, client: TestClient, operator_headers: dict[str, str]
) -> None:
    # Prepare
    app.state.launcher = RecordingLauncher(fail_with=RuntimeError("ray missing"))

    # Execute
    response = client.post("/api/v1/runs", json=RUN_BODY, headers=operator_headers)

    # Assert
    assert response.status_code == 503
    assert "ray missing" in response.json()["detail"]
    runs = client.get("/api/v1/runs", headers=operator_headers).json()["data"]
    assert runs[0]["status"] == "failed"


def test_read_runs_paginated(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    ids = [create_random_run(db).id for _ in range(5)]

    # Execute
    page = client.get("/api/v1/runs?skip=1&limit=2", headers=operator_headers).json()

    # Assert
    assert page["count"] == 5
    assert [r["id"] for r in page["data"]] == sorted(ids, reverse=True)[1:3]


def test_read_runs_bad_limit_names_limit(
    client: TestClient, operator_headers: dict[str, str]
) -> None:
    response = client.get("/api/v1/runs?limit=0", headers=operator_headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "limit"]


def test_read_run_progress_accuracy_savings(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    run = create_random_run(db, status="running", rounds=4)
    crud.record_round(session=db, run_id=run.id, record=make_round_record(1, accuracy=0.7))
    crud.set_run_savings(session=db, run_id=run.id, savings={"energy": 0.42})
    db.commit()

    # Execute
    body = client.get(f"/api/v1/runs/{run.id}", headers=operator_headers).json()

    # Assert
    assert (body["status"], body["current_round"], body["progress"]) == ("running", 1, 0.25)
    assert body["latest_accuracy"] == 0.7
    assert body["savings"] == {"energy": 0.42}
    assert body["started_at"] is not None


def test_read_run_not_found(client: TestClient, operator_headers: dict[str, str]) -> None:
    response = client.get("/api/v1/runs/17", headers=operator_headers)
    assert response.status_code == 404
    assert response.json() == {"detail": "Run 17 not found"}


def test_read_run_bad_id_names_run_id(client: TestClient, operator_headers: dict[str, str]) -> None:
    response = client.get("/api/v1/runs/abc", headers=operator_headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "run_id"]


def test_stop_run_running(
    client: TestClient, db: Session, operator_headers: dict[str, str], launcher: RecordingLauncher
) -> None:
    # Prepare
    run = create_random_run(db, status="running")

    # Execute
    response = client.post(f"/api/v1/runs/{run.id}/stop", headers=operator_headers)

    # Assert
    assert response.status_code == 200
    assert response.json()["status"] == "stopped"
    assert launcher.stopped == [run.id]


def test_stop_run_finished_conflict(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    run = create_random_run(db, status="completed")

    # Execute
    response = client.post(f"/api/v1/runs/{run.id}/stop", headers=operator_headers)

    # Assert
    assert response.status_code == 409
    assert "already completed" in response.json()["detail"]


def test_resume_run_interrupted_restarts_it(
    client: TestClient, db: Session, operator_headers: dict[str, str], launcher: RecordingLauncher
) -> None:
    # Prepare
    run = create_random_run(db, status="interrupted")
    crud.record_round(session=db, run_id=run.id, record=make_round_record(1))
    db.commit()

    # Execute
    response = client.post(f"/api/v1/runs/{run.id}/resume", headers=operator_headers)

    # Assert: queued again, handed to the launcher, its history kept
    assert response.status_code == 200
    assert response.json()["status"] == "queued"
    assert launcher.started == [run.id]
    rounds = client.get(f"/api/v1/runs/{run.id}/rounds", headers=operator_headers).json()
    assert rounds["count"] == 1


def test_resume_run_completed_conflict(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    run = create_random_run(db, status="completed")

    # Execute
    response = client.post(f"/api/v1/runs/{run.id}/resume", headers=operator_headers)

    # Assert
    assert response.status_code == 409
    assert "can be resumed" in response.json()["detail"]


def test_stop_run_not_found(client: TestClient, operator_headers: dict[str, str]) -> None:
    response = client.post("/api/v1/runs/17/stop", headers=operator_headers)
    assert response.status_code == 404


def test_read_rounds_in_order(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    run = create_random_run(db, status="running")
    for r in (2, 1):
        crud.record_round(session=db, run_id=run.id, record=make_round_record(r))
    db.commit()

    # Execute
    body = client.get(f"/api/v1/runs/{run.id}/rounds", headers=operator_headers).json()

    # Assert
    assert body["count"] == 2
    assert [r["round"] for r in body["data"]] == [1, 2]
    assert body["data"][0]["participants"] == 3


def test_read_run_clients_lists_rejection_reasons(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare: node 13's reply was rejected
    run = create_random_run(db, status="running")
    record = make_round_record(1)
    record.clients[2].rejected = "Tensor 'fc.weight' has bits=15, outside [4, 12]."
    record.clients[2].layers = []
    record.rejections, record.participants = 1, 2
    crud.record_round(session=db, run_id=run.id, record=record)
    db.commit()

    # Execute
    body = client.get(f"/api/v1/runs/{run.id}/clients", headers=operator_headers).json()

    # Assert
    assert body["count"] == 3
    reasons = [r["rejected"] for r in body["data"]]
    assert reasons.count(None) == 2 and "bits=15" in [r for r in reasons if r][0]


def test_read_rounds_unknown_run_not_found(
    client: TestClient, operator_headers: dict[str, str]
) -> None:
    assert client.get("/api/v1/runs/17/rounds", headers=operator_headers).status_code == 404


def test_read_model_latest_packed(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    run = create_random_run(db, status="running")
    crud.record_round(
        session=db, run_id=run.id, record=make_round_record(1, packed_model=b"\x00\x01one")
    )
    crud.record_round(
        session=db, run_id=run.id, record=make_round_record(2, packed_model=b"\x00\x02two")
    )
    db.commit()

    # Execute
    response = client.get(f"/api/v1/runs/{run.id}/model", headers=operator_headers)

    # Assert
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.content == b"\x00\x02two"
    assert "round-2" in response.headers["content-disposition"]


def test_read_model_no_checkpoint_not_found(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    run = create_random_run(db)
    response = client.get(f"/api/v1/runs/{run.id}/model", headers=operator_headers)
    assert response.status_code == 404
    assert "no checkpoint" in response.json()["detail"]


def test_read_model_torch_without_converter_501(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    run = create_random_run(db, status="running")
    crud.record_round(session=db, run_id=run.id, record=make_round_record(1))
    db.commit()

    # Execute
    response = client.get(f"/api/v1/runs/{run.id}/model?format=torch", headers=operator_headers)

    # Assert
    assert response.status_code == 501
    assert "converter" in response.json()["detail"]


def test_read_model_torch_uses_converter(
    app: FastAPI, client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    run = create_random_run(db, status="running")
    crud.record_round(session=db, run_id=run.id, record=make_round_record(1, packed_model=b"p"))
    db.commit()
    app.state.model_converter = lambda packed, r: b"torch:" + packed + str(r.id).encode()

    # Execute
    response = client.get(f"/api/v1/runs/{run.id}/model?format=torch", headers=operator_headers)

    # Assert
    assert response.status_code == 200
    assert response.content == b"torch:p" + str(run.id).encode()


def test_read_model_unknown_format_names_format(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    run = create_random_run(db)
    response = client.get(f"/api/v1/runs/{run.id}/model?format=onnx", headers=operator_headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "format"]


def test_read_run_id_out_of_range_names_run_id(
    client: TestClient, operator_headers: dict[str, str]
) -> None:
    response = client.get(f"/api/v1/runs/{2**70}", headers=operator_headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "run_id"]


def test_read_runs_skip_out_of_range_names_skip(
    client: TestClient, operator_headers: dict[str, str]
) -> None:
    response = client.get(f"/api/v1/runs?skip={2**70}", headers=operator_headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "skip"]


def test_read_runs_queue_position_in_creation_order(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare: a running run and three queued ones (the RecordingLauncher admits none)
    create_random_run(db, status="running")
    db.commit()
    ids = [
        client.post("/api/v1/runs", json=RUN_BODY, headers=operator_headers).json()["id"]
        for _ in range(3)
    ]

    # Execute
    client.post(f"/api/v1/runs/{ids[0]}/stop", headers=operator_headers)
    runs = client.get("/api/v1/runs", headers=operator_headers).json()["data"]

    # Assert: the stopped run left the queue, the others moved up; non-queued have null
    positions = {r["id"]: (r["status"], r["queue_position"]) for r in runs}
    assert positions[ids[0]] == ("stopped", None)
    assert positions[ids[1]] == ("queued", 1)
    assert positions[ids[2]] == ("queued", 2)
    assert [p for s, p in positions.values() if s == "running"] == [None]
    one = client.get(f"/api/v1/runs/{ids[2]}", headers=operator_headers).json()
    assert one["queue_position"] == 2
