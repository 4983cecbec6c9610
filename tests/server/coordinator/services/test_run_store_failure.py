"""A run that fails as a whole is stored ``failed`` with its reason (DbRecorder.fail)."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from server.coordinator import crud
from server.coordinator.core.db import make_session_factory
from server.coordinator.services.run_store import DbRecorder

RUN = {
    "task": "digits",
    "method": "apt",
    "clients": 2,
    "fraction": 1.0,
    "rounds": 3,
    "alpha": 0.5,
    "seed": 0,
}
REASON = "RunFailed: Round 1: no reply was aggregated (2 sampled: 2 failed, 0 rejected)."


def test_db_recorder_fail_marks_running_run_failed_with_reason(db: Session, engine: Engine) -> None:
    # Prepare
    run = crud.create_run(session=db, **RUN)
    crud.set_run_status(session=db, run_id=run.id, status="running")
    db.commit()

    # Execute
    DbRecorder(make_session_factory(engine), run.id).fail(REASON)

    # Assert
    db.commit()  # ends the read snapshot (SQLite WAL)
    stored = crud.get_run(session=db, run_id=run.id)
    assert stored is not None
    assert (stored.status, stored.error) == ("failed", REASON)
    assert stored.finished_at is not None


def test_db_recorder_fail_leaves_stopped_run_stopped(db: Session, engine: Engine) -> None:
    # Prepare
    run = crud.create_run(session=db, **RUN)
    crud.set_run_status(session=db, run_id=run.id, status="running")
    crud.set_run_status(session=db, run_id=run.id, status="stopped")
    db.commit()

    # Execute
    DbRecorder(make_session_factory(engine), run.id).fail(REASON)

    # Assert
    db.commit()  # ends the read snapshot (SQLite WAL)
    stored = crud.get_run(session=db, run_id=run.id)
    assert stored is not None and stored.status == "stopped" and stored.error is None
