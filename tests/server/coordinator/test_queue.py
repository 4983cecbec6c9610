"""The run admission queue and job liveness of the ProcessLauncher, with a stand-in job (no Ray).

Admission order and limit, restart pickup, stop while queued, start retries with backoff, and a job
killed from outside.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from server.cli.service import REPO_ROOT
from server.coordinator import crud
from server.coordinator.core.config import Settings
from server.coordinator.core.db import make_engine, make_session_factory
from server.coordinator.main import create_app
from server.coordinator.services.process_launcher import ProcessLauncher
from server.coordinator.services.startup import init_db
from server.coordinator.tables import Run
from tests.utils.db import BACKENDS, empty_database
from tests.utils.run import create_random_run
from tests.utils.service import wait_for

#: A stand-in for ``server.coordinator.job``: FAKE_JOB_MODE=fail exits 75 before marking
#: the run running (as when Ray does not start); hang marks it running and sleeps;
#: fail_on_term also records the run failed when it gets SIGTERM, as the real job does when
#: its Ray workers die before it (the stop signal reaches the whole process group).
FAKE_JOB = """
import os, signal, sys, time
from server.coordinator import crud
from server.coordinator.core.db import begin_write, make_engine, make_session_factory
from server.coordinator.exceptions import RunStateError
run_id, mode = int(sys.argv[1]), os.environ["FAKE_JOB_MODE"]
if mode == "fail":
    print("RuntimeError: Ray did not start (stand-in)", flush=True)
    sys.exit(75)
factory = make_session_factory(make_engine(os.environ["APTFLEET_DATABASE_URL"]))

def set_status(status):
    with factory() as session:
        begin_write(session)
        try:
            crud.set_run_status(session=session, run_id=run_id, status=status)
            session.commit()
        except RunStateError:
            print("left", crud.get_run(session=session, run_id=run_id).status, flush=True)

def fail(*_):
    set_status("failed")
    sys.exit(1)

if mode == "fail_on_term":
    signal.signal(signal.SIGTERM, fail)
set_status("running")
time.sleep(120)
"""


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with empty_database(request.param, tmp_path) as url:
        init_db(url)
        yield url


@pytest.fixture()
def factory(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    yield make_session_factory(engine)
    engine.dispose()


def _launcher(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, **settings: float
) -> ProcessLauncher:
    script = tmp_path / "fake_job.py"
    script.write_text(FAKE_JOB)
    monkeypatch.setenv("FAKE_JOB_MODE", mode)
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    return ProcessLauncher(
        Settings(DATABASE_URL=db_url, DATA_DIR=tmp_path, **settings),
        job_command=[sys.executable, str(script)],
    )


def _queued(factory: sessionmaker[Session], n: int) -> list[int]:
    with factory() as session:
        return [create_random_run(session, status="queued").id for _ in range(n)]


def _status(factory: sessionmaker[Session], run_id: int) -> Run:
    with factory() as session:
        run = crud.get_run(session=session, run_id=run_id)
        assert run is not None
        return run


def _tick_until(
    launcher: ProcessLauncher,
    factory: sessionmaker[Session],
    run_id: int,
    status: str,
    timeout: float = 60,
) -> Run:
    def reached() -> Run | None:
        launcher.tick()
        run = _status(factory, run_id)
        return run if run.status == status else None

    result: Run = wait_for(reached, timeout, f"run {run_id} to become {status}", every=0.2)
    return result


def test_tick_admits_max_active_runs_in_creation_order(
    db_url: str, factory: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare
    launcher = _launcher(db_url, tmp_path, monkeypatch, "hang", MAX_ACTIVE_RUNS=1)
    first, second, third = _queued(factory, 3)
    try:
        # Execute
        _tick_until(launcher, factory, first, "running")
        launcher.tick()

        # Assert: one slot, so the others wait in creation order
        assert [_status(factory, r).status for r in (second, third)] == ["queued"] * 2
        with factory() as session:
            assert crud.queue_positions(session=session) == {second: 1, third: 2}

        # Execute: the first run is stopped, the next one takes its slot
        launcher.stop(first)
        _tick_until(launcher, factory, second, "running")

        # Assert
        assert _status(factory, third).status == "queued"
        assert launcher.running() == [second]
    finally:
        launcher.shutdown()


def test_stop_queued_run_never_starts(
    db_url: str, factory: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare
    launcher = _launcher(db_url, tmp_path, monkeypatch, "hang", MAX_ACTIVE_RUNS=1)
    (run_id,) = _queued(factory, 1)

    # Execute
    launcher.stop(run_id)
    launcher.tick()

    # Assert
    run = _status(factory, run_id)
    assert (run.status, run.start_attempts, run.started_at) == ("stopped", 0, None)
    assert launcher.running() == []
    launcher.shutdown()


def test_stop_running_run_stays_stopped_when_its_job_records_a_failure_as_it_dies(
    db_url: str, factory: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare
    launcher = _launcher(db_url, tmp_path, monkeypatch, "fail_on_term", MAX_ACTIVE_RUNS=1)
    (run_id,) = _queued(factory, 1)
    try:
        _tick_until(launcher, factory, run_id, "running")

        # Execute
        launcher.stop(run_id)
        launcher.tick()
    finally:
        launcher.shutdown()

    # Assert: the dying job found the run stopped and left it so
    assert _status(factory, run_id).status == "stopped"
    assert "left stopped" in (tmp_path / "runs" / f"run-{run_id}.log").read_text()


def test_shutdown_marks_active_runs_interrupted_and_ends_their_jobs(
    db_url: str, factory: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare
    launcher = _launcher(db_url, tmp_path, monkeypatch, "fail_on_term", MAX_ACTIVE_RUNS=1)
    (run_id,) = _queued(factory, 1)
    _tick_until(launcher, factory, run_id, "running")
    pid = launcher._jobs[run_id].proc.pid

    # Execute
    launcher.shutdown()

    # Assert: resumable, with the route in the reason, and no job left
    run = _status(factory, run_id)
    assert run.status == "interrupted"
    assert run.error is not None and f"/runs/{run_id}/resume" in run.error
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)


def test_job_exiting_before_running_is_retried_with_backoff_then_fails_with_reason(
    db_url: str, factory: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare
    launcher = _launcher(
        db_url,
        tmp_path,
        monkeypatch,
        "fail",
        MAX_ACTIVE_RUNS=1,
        RUN_START_ATTEMPTS=3,
        RUN_START_BACKOFF_S=0.3,
    )

    # Execute
    (run_id,) = _queued(factory, 1)
    try:
        run = _tick_until(launcher, factory, run_id, "failed")
    finally:
        launcher.shutdown()

    # Assert: three starts, then the reason (exit code and the job's last words) is stored
    assert run.start_attempts == 3
    assert run.error is not None
    assert "exited with code 75 before the run started, 3 time(s)" in run.error
    assert "Ray did not start (stand-in)" in run.error


def test_job_killed_from_outside_marks_run_interrupted_and_resumable(
    db_url: str, factory: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare
    launcher = _launcher(db_url, tmp_path, monkeypatch, "hang", MAX_ACTIVE_RUNS=1)
    (run_id,) = _queued(factory, 1)
    try:
        _tick_until(launcher, factory, run_id, "running")

        # Execute: killed without a word
        pid = launcher._jobs[run_id].proc.pid
        os.killpg(pid, signal.SIGKILL)
        run = _tick_until(launcher, factory, run_id, "interrupted")
    finally:
        launcher.shutdown()

    # Assert: the reason names the resume route, and resuming queues it again
    assert run.error is not None and f"/runs/{run_id}/resume" in run.error
    with factory() as session:
        assert crud.reopen_run(session=session, run_id=run_id).status == "queued"
        session.commit()


def test_coordinator_startup_admits_runs_queued_before_restart(
    db_url: str, factory: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: a previous process left one run running and one queued
    with factory() as session:
        stale = create_random_run(session, status="running").id
    (queued,) = _queued(factory, 1)
    launcher = _launcher(db_url, tmp_path, monkeypatch, "hang", MAX_ACTIVE_RUNS=1)
    app = create_app(Settings(DATABASE_URL=db_url, DATA_DIR=tmp_path), launcher)

    # Execute: the coordinator starts (lifespan) and its launcher's watcher runs
    with TestClient(app):
        wait_for(
            lambda: _status(factory, queued).status == "running",
            60,
            "the queued run to be admitted at startup",
            every=0.2,
        )

    # Assert
    assert _status(factory, stale).status == "interrupted"
