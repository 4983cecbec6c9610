"""Savings of a finished run, from SQL sums, against the row-by-row reference."""

from __future__ import annotations

import math

import pytest
from sqlalchemy.orm import Session

from apt_core.cost import profile_layers, step_energy
from apt_core.tasks.data import load_task
from apt_core.tasks.networks import build_model
from server.coordinator import crud
from server.coordinator.services.run_settings import run_settings_of
from server.coordinator.services.run_store import run_savings
from tests.utils.run import create_random_run, make_round_record


def _reference(db: Session, run_id: int) -> dict[str, float]:
    """The savings computed from every stored row, one at a time."""
    run = crud.get_run(session=db, run_id=run_id)
    settings = run_settings_of(run)
    profiles = profile_layers(
        build_model(settings.task, settings.arch), load_task(settings.task).x_train[:2]
    )
    n_params = sum(p.params for p in profiles.values())
    per_sample = step_energy(profiles, 1, "fp32", state_bits=32)
    rounds = crud.list_rounds(session=db, run_id=run_id)
    clients = crud.list_client_rounds(session=db, run_id=run_id)
    trained = [c for c in clients if c.rejected is None and c.failure is None]
    energy = sum(
        per_sample.gemm_j * c.num_examples * settings.local_epochs
        + per_sample.move_j
        * math.ceil(c.num_examples / settings.batch_size)
        * settings.local_epochs
        for c in trained
        if c.num_examples
    )
    param_bytes = sum(c.param_bytes for c in trained) / len(trained)
    return {
        "energy": 1 - sum(r.energy_j for r in rounds) / energy,
        "parameter_memory": 1 - param_bytes / (4 * n_params),
        "uplink_bytes": 1 - sum(r.uplink_bytes for r in rounds) / (4 * n_params * len(trained)),
        "downlink_bytes": 1 - sum(r.downlink_bytes for r in rounds) / (4 * n_params * len(clients)),
    }


def test_run_savings_sums_match_row_by_row_reference(db: Session) -> None:
    # Prepare: examples that differ per device, one rejected and one failed reply
    run = create_random_run(db, status="running")
    for r in (1, 2):
        record = make_round_record(r, nodes=(11, 12, 13, 14))
        for i, client in enumerate(record.clients):
            client.num_examples = 30 + 17 * i + r
            client.param_bytes = 500 + 100 * i
        record.clients[1].rejected = "bits out of range"
        record.clients[2].failure = "timeout"
        crud.record_round(session=db, run_id=run.id, record=record)
    db.commit()

    # Execute
    savings = run_savings(db, run.id)

    # Assert
    assert savings == pytest.approx(_reference(db, run.id))
