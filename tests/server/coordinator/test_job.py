"""The Flower-side settings a coordinator run's job trains with."""

from __future__ import annotations

from sqlalchemy.orm import Session

from apt_core.federated import RunSettings
from server.coordinator import crud
from server.coordinator.job import MIN_NODES, server_settings
from server.coordinator.services.run_settings import run_settings_of
from server.flower.settings import ServerSettings

RUN = {
    "task": "digits",
    "method": "apt",
    "clients": 6,
    "fraction": 0.5,
    "rounds": 7,
    "alpha": 0.3,
    "seed": 5,
}


def test_server_settings_reads_the_stored_run_settings(db: Session) -> None:
    # Prepare: a run stored with non-default run settings
    stored = RunSettings(
        task="digits",
        arch="mlp",
        method="apt",
        local_epochs=2,
        lr=0.05,
        batch_size=32,
        alpha=0.3,
        seed=5,
    )
    run = crud.create_run(session=db, **RUN, settings=stored.to_dict())
    db.commit()

    # Execute
    settings = server_settings(run, start_round=2, checkpoint=b"ckpt", round_timeout=42.0)

    # Assert
    assert settings == ServerSettings(
        run=stored,
        rounds=7,
        fraction_train=0.5,
        fraction_evaluate=0.0,
        min_nodes=MIN_NODES,
        timeout=42.0,
        start_round=2,
        checkpoint=b"ckpt",
    )


def test_run_settings_of_legacy_row_takes_defaults_and_columns(db: Session) -> None:
    # Prepare: rows written before the settings were stored hold the request body
    run = crud.create_run(session=db, **RUN, settings={**RUN, "policy": None})
    db.commit()

    # Execute
    settings = run_settings_of(run)

    # Assert: the body's non-settings keys are skipped, missing settings are the defaults
    assert settings == RunSettings(task="digits", method="apt", alpha=0.3, seed=5)


def test_server_settings_min_nodes_capped_by_clients(db: Session) -> None:
    # Prepare
    run = crud.create_run(session=db, **{**RUN, "clients": 1}, settings={})
    db.commit()

    # Execute
    settings = server_settings(run)

    # Assert
    assert (settings.min_nodes, settings.timeout) == (1, ServerSettings().timeout)
