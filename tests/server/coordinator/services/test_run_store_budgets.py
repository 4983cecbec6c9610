"""Budgets in a coordinator run: caps folded into its policy, the cap each device got stored."""

from __future__ import annotations

import dataclasses

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from apt_core.config import PrecisionPolicy
from apt_core.errors import BudgetError
from apt_core.federated import RunSettings
from apt_core.federated.budget import training_memory_bytes
from server.coordinator import crud
from server.coordinator.core.db import make_session_factory
from server.coordinator.services.run_store import run_policy_provider
from server.flower.budgets import BudgetCapper, model_profiles
from tests.server.coordinator.services.test_run_store import RUN
from tests.utils.run import make_round_record


def _memory(bits: int, clients: int) -> int:
    capper = BudgetCapper.for_run(RunSettings(task="digits"), clients)
    return training_memory_bytes(model_profiles("digits", "cnn"), bits, capper.workload)


def test_run_policy_provider_caps_budgeted_classes(db: Session, engine: Engine) -> None:
    # Prepare: the run has 2 devices; mcu fits 6 bits, phone 8
    run = crud.create_run(session=db, **RUN)
    crud.create_policy_version(
        session=db,
        policy=PrecisionPolicy(),
        overrides={"mcu": {"rounding": "nearest"}},
        budgets={
            "mcu": {"memory_bytes": _memory(6, RUN["clients"])},
            "phone": {"memory_bytes": _memory(8, RUN["clients"])},
        },
        author="alice",
    )
    db.commit()

    # Execute
    version, policy, overrides = run_policy_provider(make_session_factory(engine), run.id)()

    # Assert
    assert (version, policy) == (2, PrecisionPolicy())
    assert overrides == {
        "mcu": {"rounding": "nearest", "bits_max": 6},
        "phone": {"bits_max": 8},
    }


def test_run_policy_provider_budget_the_model_cannot_meet_raises(
    db: Session, engine: Engine
) -> None:
    # Prepare: stored directly (the API would refuse it)
    run = crud.create_run(session=db, **RUN)
    crud.create_policy_version(
        session=db,
        policy=PrecisionPolicy(),
        overrides={},
        budgets={"mcu": {"memory_bytes": 1000}},
        author="alice",
    )
    db.commit()
    provider = run_policy_provider(make_session_factory(engine), run.id)

    # Execute / Assert
    with pytest.raises(BudgetError, match=r"Device class 'mcu'.*'memory_bytes' = 1000"):
        provider()


def test_read_run_clients_shows_bits_cap(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare: node 11 was capped at 6 bits, node 12 ran a float method's row (no cap)
    run = crud.create_run(session=db, **RUN)
    record = make_round_record(1, nodes=(11, 12))
    record.clients[0] = dataclasses.replace(record.clients[0], bits_cap=6)
    crud.record_round(session=db, run_id=run.id, record=record)
    db.commit()

    # Execute
    body = client.get(f"/api/v1/runs/{run.id}/clients", headers=operator_headers).json()

    # Assert
    assert sorted((r["partition_id"], r["bits_cap"]) for r in body["data"]) == [(0, 6), (1, None)]
