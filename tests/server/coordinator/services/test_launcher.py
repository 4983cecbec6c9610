"""Tests of server.coordinator.services.launcher."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from server.coordinator import crud
from server.coordinator.core.db import make_session_factory
from server.coordinator.exceptions import LaunchError, RunStateError
from server.coordinator.schemas import RunCreate
from server.coordinator.services.audit import Actor
from server.coordinator.services.launcher import (
    NO_LAUNCHER_MESSAGE,
    NullLauncher,
    RunLauncher,
    launch_run,
    stop_run,
)
from server.coordinator.tables import ApiToken
from tests.utils.launcher import RecordingLauncher
from tests.utils.run import create_random_run

ACTOR: Actor = ApiToken(name="carol", role="operator")


def test_null_launcher_marks_run_failed(db: Session, engine: Engine) -> None:
    # Prepare
    launcher = NullLauncher(make_session_factory(engine))

    # Execute
    run = launch_run(
        session=db, launcher=launcher, run_in=RunCreate(task="digits", method="apt"), actor=ACTOR
    )

    # Assert
    assert isinstance(launcher, RunLauncher)
    assert (run.status, run.error) == ("failed", NO_LAUNCHER_MESSAGE)


def test_launch_run_launcher_error_marks_failed(db: Session) -> None:
    # Prepare
    launcher = RecordingLauncher(fail_with=RuntimeError("no ray"))

    # Execute
    with pytest.raises(LaunchError, match="could not be started.*no ray"):
        launch_run(
            session=db,
            launcher=launcher,
            run_in=RunCreate(task="digits", method="apt"),
            actor=ACTOR,
        )

    # Assert
    db.commit()
    run = crud.list_runs(session=db)[0][0]
    assert run.status == "failed"
    assert "RuntimeError: no ray" in run.error


def test_stop_run_marks_stopped_and_calls_launcher(db: Session) -> None:
    # Prepare
    run = create_random_run(db, status="running")
    launcher = RecordingLauncher()

    # Execute
    stopped = stop_run(session=db, launcher=launcher, run=run, actor=ACTOR)

    # Assert
    assert (stopped.status, launcher.stopped) == ("stopped", [run.id])
    assert stopped.finished_at is not None


def test_stop_run_finished_run_conflicts(db: Session) -> None:
    run = create_random_run(db, status="completed")
    with pytest.raises(RunStateError, match="already completed"):
        stop_run(session=db, launcher=RecordingLauncher(), run=run, actor=ACTOR)
