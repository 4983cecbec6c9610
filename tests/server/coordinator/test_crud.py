"""Tests of server.coordinator.crud against SQLite and PostgreSQL."""

from __future__ import annotations

from collections import defaultdict
from statistics import mean

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session

from apt_core.config import PrecisionPolicy
from server.coordinator import crud
from server.coordinator.core.security import hash_token
from server.coordinator.exceptions import (
    DuplicateRoundError,
    NotFoundError,
    RoundRecordError,
    RunStateError,
)
from server.coordinator.services.policy import effective_policy
from server.coordinator.tables import (
    ApiToken,
    Checkpoint,
    ClientRound,
    Device,
    LayerPrecision,
    Round,
)
from server.flower.records import ClientReport
from tests.utils.run import create_random_run, make_round_record


def _counts(db: Session) -> dict[str, int]:
    return {
        model.__tablename__: db.scalar(select(func.count()).select_from(model)) or 0
        for model in (Round, ClientRound, LayerPrecision, Device, Checkpoint)
    }


def test_record_round_stores_every_part(db: Session) -> None:
    # Prepare
    run = create_random_run(db, status="running")
    record = make_round_record(1, nodes=(11, 12), layers=("conv1", "fc"), accuracy=0.8)

    # Execute
    crud.record_round(session=db, run_id=run.id, record=record)
    db.commit()

    # Assert
    assert _counts(db) == {
        "rounds": 1,
        "client_rounds": 2,
        "layer_precision": 4,
        "devices": 2,
        "checkpoints": 1,
    }
    db.refresh(run)
    assert run.current_round == 1
    assert run.latest_accuracy == pytest.approx(0.8)
    assert crud.get_latest_checkpoint(session=db, run_id=run.id).packed == b"packed-model"
    stored = crud.list_rounds(session=db, run_id=run.id)[0]
    assert stored.global_bits == {"conv1": 8, "fc": 8}
    assert stored.participants == 2


def test_record_round_duplicate_rejected_nothing_stored(db: Session) -> None:
    # Prepare
    run = create_random_run(db, status="running")
    crud.record_round(session=db, run_id=run.id, record=make_round_record(1, nodes=(11,)))
    db.commit()
    before = _counts(db)
    duplicate = make_round_record(1, nodes=(11, 99), packed_model=b"other")

    # Execute
    with pytest.raises(DuplicateRoundError, match="Round 1 of run"):
        crud.record_round(session=db, run_id=run.id, record=duplicate)
    db.commit()

    # Assert
    assert _counts(db) == before
    assert db.scalar(select(Device).where(Device.node_id == 99)) is None
    assert crud.get_latest_checkpoint(session=db, run_id=run.id).packed == b"packed-model"


def test_record_round_failure_midway_rolls_back_everything(db: Session) -> None:
    # Prepare
    run = create_random_run(db, status="running")
    record = make_round_record(1, nodes=(11, 12))
    record.clients.append(ClientReport(node_id=-1))  # not a uint64: fails on write
    before = _counts(db)

    # Execute
    with pytest.raises(StatementError):
        crud.record_round(session=db, run_id=run.id, record=record)
    db.commit()  # even a commit after the error must store nothing

    # Assert
    assert _counts(db) == before
    db.refresh(run)
    assert run.current_round == 0


def test_record_round_node_listed_twice_rejected(db: Session) -> None:
    # Prepare
    run = create_random_run(db, status="running")
    record = make_round_record(1, nodes=(11, 11))

    # Execute / Assert
    with pytest.raises(RoundRecordError, match="node 11 2 times"):
        crud.record_round(session=db, run_id=run.id, record=record)


def test_record_round_unknown_run_not_found(db: Session) -> None:
    with pytest.raises(NotFoundError, match="Run 987654 not found"):
        crud.record_round(session=db, run_id=987654, record=make_round_record(1))


def test_record_round_upserts_device(db: Session) -> None:
    # Prepare
    run = create_random_run(db, status="running")
    crud.record_round(session=db, run_id=run.id, record=make_round_record(1, nodes=(11,)))
    db.commit()
    first = db.scalar(select(Device).where(Device.node_id == 11))
    first_seen, last_seen = first.first_seen, first.last_seen
    record = make_round_record(2, nodes=(11,), device_class="mcu")
    record.clients[0].failure = "timeout"

    # Execute
    crud.record_round(session=db, run_id=run.id, record=record)
    db.commit()

    # Assert
    device = db.scalar(select(Device).where(Device.node_id == 11))
    assert db.scalar(select(func.count()).select_from(Device)) == 1
    assert (device.device_class, device.status) == ("mcu", "failed")
    assert device.first_seen == first_seen
    assert device.last_seen >= last_seen


def test_record_round_device_without_reply_is_offline_and_keeps_its_class(db: Session) -> None:
    # Prepare: node 11 is an mcu; in round 2 it sends nothing (the strategy knows no class)
    run = create_random_run(db, status="running")
    crud.record_round(
        session=db, run_id=run.id, record=make_round_record(1, nodes=(11,), device_class="mcu")
    )
    record = make_round_record(2, nodes=(11,))
    record.clients[0].failure = "The device sent no reply before the round's timeout."
    record.clients[0].layers = []

    # Execute
    crud.record_round(session=db, run_id=run.id, record=record)
    db.commit()

    # Assert
    device = db.scalar(select(Device).where(Device.node_id == 11))
    assert (device.device_class, device.status) == ("mcu", "offline")


def test_record_round_large_uint64_node_id_round_trips(db: Session) -> None:
    # Prepare
    run = create_random_run(db, status="running")
    node = 2**64 - 5  # Flower node ids are unsigned 64-bit

    # Execute
    crud.record_round(session=db, run_id=run.id, record=make_round_record(1, nodes=(node,)))
    db.commit()

    # Assert
    assert db.scalar(select(Device.node_id)) == node


def test_mark_interrupted_runs_marks_only_started(db: Session) -> None:
    # Prepare
    queued = create_random_run(db, status="queued")
    pending = create_random_run(db, status="pending")
    running = create_random_run(db, status="running")
    done = create_random_run(db, status="completed")

    # Execute
    marked = crud.mark_interrupted_runs(session=db)
    db.commit()

    # Assert: a queued run never started, so it stays queued for the next process
    assert marked == 2
    assert [db.get(type(r), r.id).status for r in (queued, pending, running, done)] == [
        "queued",
        "interrupted",
        "interrupted",
        "completed",
    ]
    assert db.get(type(running), running.id).finished_at is not None


def test_set_run_status_stamps_times_and_flower_id(db: Session) -> None:
    # Prepare
    run = create_random_run(db)

    # Execute
    crud.set_run_status(session=db, run_id=run.id, status="running", flower_run_id=2**63 + 1)
    started = crud.get_run(session=db, run_id=run.id)
    crud.set_run_status(session=db, run_id=run.id, status="failed", error="boom")
    db.commit()

    # Assert
    run = crud.get_run(session=db, run_id=run.id)
    assert run.started_at is not None and run.finished_at is not None
    assert started.flower_run_id == 2**63 + 1
    assert (run.status, run.error, run.flower_run_id) == ("failed", "boom", 2**63 + 1)


@pytest.mark.parametrize("status", ["running", "completed", "pending"])
def test_set_run_status_terminal_is_final(db: Session, status: str) -> None:
    # Prepare
    run = create_random_run(db, status="stopped")

    # Execute / Assert
    with pytest.raises(RunStateError, match="already stopped"):
        crud.set_run_status(session=db, run_id=run.id, status=status)


def test_set_run_status_unknown_status_rejected(db: Session) -> None:
    run = create_random_run(db)
    with pytest.raises(RunStateError, match="'exploded'"):
        crud.set_run_status(session=db, run_id=run.id, status="exploded")


def test_set_run_savings_stores_json(db: Session) -> None:
    # Prepare
    run = create_random_run(db, status="running")

    # Execute
    crud.set_run_savings(session=db, run_id=run.id, savings={"energy": 0.4, "uplink": 0.5})
    db.commit()

    # Assert
    assert crud.get_run(session=db, run_id=run.id).savings == {"energy": 0.4, "uplink": 0.5}


def test_current_policy_is_seeded_defaults(db: Session) -> None:
    version, policy, overrides = crud.current_policy(db)
    assert (version, policy, overrides) == (1, PrecisionPolicy(), {})


def test_create_policy_version_increments(db: Session) -> None:
    # Prepare
    policy = PrecisionPolicy(t_min=1.0, bits_max=12)

    # Execute
    row = crud.create_policy_version(
        session=db,
        policy=policy,
        overrides={"mcu": {"bits_max": 8}},
        author="alice",
        note="tighter",
    )
    db.commit()

    # Assert
    version, current, overrides = crud.current_policy(db)
    assert (row.version, version, current, overrides) == (2, 2, policy, {"mcu": {"bits_max": 8}})
    assert effective_policy(current, overrides, "mcu").bits_max == 8
    assert [r.version for r in crud.list_policies(session=db)[0]] == [2, 1]


def test_create_token_stores_only_hash(db: Session) -> None:
    # Execute
    token = crud.create_token(session=db, role="operator", name="ci")
    db.commit()

    # Assert
    row = db.scalar(select(ApiToken))
    stored = [str(getattr(row, c.name)) for c in ApiToken.__table__.columns]
    assert not any(token in value for value in stored)
    assert row.token_hash == hash_token(token) and len(row.token_hash) == 64
    assert crud.authenticate_token(session=db, token=token).name == "ci"


def test_authenticate_token_rejects_revoked_and_unknown(db: Session) -> None:
    # Prepare
    token = crud.create_token(session=db, role="admin")
    row = db.scalar(select(ApiToken))

    # Execute
    crud.revoke_token(session=db, token_id=row.id)

    # Assert
    assert crud.authenticate_token(session=db, token=token) is None
    assert crud.authenticate_token(session=db, token=token + "x") is None


def test_create_token_unknown_role_rejected(db: Session) -> None:
    with pytest.raises(ValueError, match="'root'"):
        crud.create_token(session=db, role="root")


def test_precision_summary_matches_reference(db: Session) -> None:
    # Prepare
    run = create_random_run(db, status="running")
    records = [make_round_record(r, nodes=(11, 12, 13, 14)) for r in (1, 2, 3)]
    for record in records:
        crud.record_round(session=db, run_id=run.id, record=record)
    db.commit()
    expected: dict[tuple[int, str], list[tuple[int, float]]] = defaultdict(list)
    for record in records:
        for client in record.clients:
            for layer in client.layers:
                expected[(record.round, layer.layer)].append((layer.bits, layer.gavg))

    # Execute
    rows = crud.precision_summary(session=db, run_id=run.id)

    # Assert
    assert [(r["round"], r["layer"]) for r in rows] == sorted(expected)
    for row in rows:
        values = expected[(row["round"], row["layer"])]
        bits = [b for b, _ in values]
        assert (row["devices"], row["min_bits"], row["max_bits"]) == (
            len(values),
            min(bits),
            max(bits),
        )
        assert float(row["mean_bits"]) == pytest.approx(mean(bits))
        assert float(row["mean_gavg"]) == pytest.approx(mean(g for _, g in values))


def test_device_history_totals_per_run(db: Session) -> None:
    # Prepare
    runs = [create_random_run(db, status="running") for _ in range(2)]
    for run in runs:
        for r in (1, 2):
            crud.record_round(session=db, run_id=run.id, record=make_round_record(r, nodes=(11,)))
    rejected = make_round_record(3, nodes=(11,))
    rejected.clients[0].rejected = "bits out of range"
    crud.record_round(session=db, run_id=runs[0].id, record=rejected)
    db.commit()
    device = db.scalar(select(Device))

    # Execute
    history = crud.device_history(session=db, device_id=device.id)

    # Assert
    assert [(h["run_id"], h["rounds"], h["rejections"], h["last_round"]) for h in history] == [
        (runs[0].id, 3, 1, 3),
        (runs[1].id, 2, 0, 2),
    ]
    assert history[1]["energy_j"] == pytest.approx(3.0)
    assert history[1]["uplink_bytes"] == 2000
    assert history[0]["mean_bits"] is not None


def test_admit_queued_runs_fills_free_slots_in_creation_order(db: Session) -> None:
    # Prepare: one slot taken, four queued
    create_random_run(db, status="running")
    queued = [create_random_run(db, status="queued") for _ in range(4)]
    db.commit()

    # Execute
    admitted = crud.admit_queued_runs(session=db, max_active=3)
    again = crud.admit_queued_runs(session=db, max_active=3)
    db.commit()

    # Assert
    assert admitted == [queued[0].id, queued[1].id] and again == []
    assert crud.queue_positions(session=db) == {queued[2].id: 1, queued[3].id: 2}
    assert db.get(type(queued[0]), queued[0].id).status == "pending"
