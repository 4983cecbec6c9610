"""The real run launcher: an admission queue and one job process group per admitted run.

Each job is ``python -m server.coordinator.job``, watched until it ends.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from server.coordinator import crud
from server.coordinator.core.config import Settings
from server.coordinator.core.db import begin_write, make_engine, make_session_factory
from server.coordinator.exceptions import RunStateError
from server.coordinator.services.run_store import with_db_retry
from server.coordinator.tables import TERMINAL_RUN_STATUSES, utcnow

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Seconds between two looks at the jobs and the queue (a start, stop or exit wakes it too).
POLL_S = 1.0
#: Characters of a job's log tail kept as the reason of a run that could not start.
_REASON_CHARS = 1500
#: Reason stored on a run whose job the coordinator ended as it shut down.
_SHUTDOWN_REASON = (
    "The coordinator shut down while the run was active; resume it with "
    "POST /api/v1/runs/{run_id}/resume."
)


@dataclass
class _Job:
    proc: subprocess.Popen[bytes]
    attempt: int


class ProcessLauncher:
    """Admits queued runs up to ``APTFLEET_MAX_ACTIVE_RUNS``, starts their jobs and watches them.

    Each job runs as its own process group.

    A watcher thread admits the oldest queued runs while slots are free and looks at every
    job it started: a job that exits before marking its run running (Ray failed to start,
    the database was locked, ...) is started again after a backoff, up to
    ``APTFLEET_RUN_START_ATTEMPTS`` times, then the run fails with the end of the job's log
    as the reason; a job that exits or is killed while its run is running, or whose
    heartbeat is older than ``APTFLEET_JOB_HEARTBEAT_TIMEOUT``, leaves its run
    ``interrupted`` (resumable). A job outlives a coordinator that is killed; the restarted
    coordinator marks its run interrupted, and the job's recorder then refuses to store
    another round and exits.

    Parameters
    ----------
    settings : Settings
        Passed to the job through the environment (database URL, SuperLink, data dir), and
        the admission and retry settings.
    log_dir : Path | None (default: None -> ``<DATA_DIR>/runs``)
        Where each run's job log is written (``run-<id>.log``).
    job_command : Sequence[str] | None (default: None -> ``python -m server.coordinator.job``)
        The job's argv before the run id (tests pass a stand-in job).
    """

    def __init__(
        self,
        settings: Settings,
        log_dir: Path | None = None,
        job_command: Sequence[str] | None = None,
    ) -> None:
        self.settings = settings
        self.job_command = list(job_command or [sys.executable, "-m", "server.coordinator.job"])
        self.log_dir = log_dir or Path(settings.DATA_DIR) / "runs"
        self._jobs: dict[int, _Job] = {}
        #: run id -> (monotonic time of the next start attempt, that attempt's number)
        self._retries: dict[int, tuple[float, int]] = {}
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None

    # -- the RunLauncher protocol -------------------------------------------------------

    def start(self, run_id: int) -> None:
        """Queue run ``run_id``: the watcher starts it when a slot is free."""
        self.resume_queue()
        self._wake.set()

    def stop(self, run_id: int, timeout: float = 15.0) -> None:
        """Mark the run stopped, then end its job (SIGTERM, then SIGKILL to its group).

        The status is written first: a queued run can never be admitted meanwhile, and a job
        that records a failure as it dies (its Ray workers go first) finds the run stopped and
        leaves it so.
        """
        self._end(run_id, "stopped", None, timeout)
        log.info("run %s: stopped", run_id)

    def _end(self, run_id: int, status: str, reason: str | None, timeout: float = 15.0) -> None:
        """Move an unfinished run to ``status`` (with ``reason``), then end its job if any."""
        with self._lock:
            job = self._jobs.pop(run_id, None)
            self._retries.pop(run_id, None)
            self._write(
                f"run {run_id} {status}",
                lambda s: _end_if_unfinished(s, run_id, status, reason),
            )
        if job is not None and job.proc.poll() is None:
            _end_group(job.proc, timeout)
        self._wake.set()

    # -- lifecycle ------------------------------------------------------------------------

    def resume_queue(self) -> None:
        """Start the watcher (idempotent).

        The coordinator calls it once the database is ready, so runs queued before a restart are
        admitted.
        """
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._closing.clear()
                self._thread = threading.Thread(
                    target=self._watch, name="run-launcher", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def shutdown(self) -> None:
        """Stop the watcher and every job this launcher started (the coordinator exits)."""
        self._closing.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30)
        for run_id in list(self._jobs):
            self._end(run_id, "interrupted", _SHUTDOWN_REASON.format(run_id=run_id))
        if self._engine is not None:
            self._engine.dispose()

    def running(self) -> list[int]:
        """Ids of runs whose job process is still alive."""
        with self._lock:
            return [r for r, j in self._jobs.items() if j.proc.poll() is None]

    # -- the watcher ----------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._closing.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the watcher must outlive any one failure
                log.exception("run launcher: one pass over the jobs failed; retrying")
            self._wake.wait(POLL_S)
            self._wake.clear()

    def tick(self) -> None:
        """One pass: reap ended jobs, end hung ones, retry due starts, admit queued runs."""
        with self._lock:
            for run_id, job in list(self._jobs.items()):
                code = job.proc.poll()
                if code is not None:
                    del self._jobs[run_id]
                    self._job_ended(run_id, job, code)
            self._end_hung_jobs()
            now = time.monotonic()
            for run_id, (due, attempt) in list(self._retries.items()):
                if due <= now:
                    del self._retries[run_id]
                    self._spawn(run_id, attempt)
            admitted = self._write(
                "admission",
                lambda s: crud.admit_queued_runs(
                    session=s, max_active=self.settings.MAX_ACTIVE_RUNS
                ),
            )
            for run_id in admitted:
                log.info(
                    "run %s: admitted (at most %s active)", run_id, self.settings.MAX_ACTIVE_RUNS
                )
                self._spawn(run_id, 1)

    def _job_ended(self, run_id: int, job: _Job, code: int) -> None:
        status = self._read(f"run {run_id} read", lambda s: _status_of(s, run_id))
        if status == "pending":  # the job never marked its run running
            if job.attempt < self.settings.RUN_START_ATTEMPTS:
                delay = self.settings.RUN_START_BACKOFF_S * 2 ** (job.attempt - 1)
                log.warning(
                    "run %s: job exited with code %s before the run started "
                    "(attempt %s of %s); starting it again in %.0f s",
                    run_id,
                    code,
                    job.attempt,
                    self.settings.RUN_START_ATTEMPTS,
                    delay,
                )
                self._retries[run_id] = (time.monotonic() + delay, job.attempt + 1)
                return
            reason = (
                f"The run's job exited with code {code} before the run started, "
                f"{job.attempt} time(s) (APTFLEET_RUN_START_ATTEMPTS="
                f"{self.settings.RUN_START_ATTEMPTS}). End of "
                f"{self._log_path(run_id)}:\n{self._log_tail(run_id)}"
            )
            self._finish(run_id, "failed", reason)
        elif status == "running":  # killed from outside, or crashed without a word
            self._finish(
                run_id,
                "interrupted",
                f"The run's job ended (exit code {code}) without finishing the run; "
                f"resume it with POST /api/v1/runs/{run_id}/resume.",
            )

    def _end_hung_jobs(self) -> None:
        limit = timedelta(seconds=self.settings.JOB_HEARTBEAT_TIMEOUT)
        for run_id, job in list(self._jobs.items()):
            beat = self._read(f"run {run_id} read", partial(_heartbeat_of, run_id=run_id))
            if beat is None or utcnow() - beat <= limit:
                continue
            log.warning("run %s: no heartbeat since %s; ending its job", run_id, beat)
            del self._jobs[run_id]
            _end_group(job.proc, 15.0)
            self._finish(
                run_id,
                "interrupted",
                f"The run's job wrote no heartbeat for "
                f"{self.settings.JOB_HEARTBEAT_TIMEOUT:.0f} s (hung); it was ended. "
                f"Resume the run with POST /api/v1/runs/{run_id}/resume.",
            )

    def _spawn(self, run_id: int, attempt: int) -> None:
        self._write(
            f"run {run_id} start attempt",
            lambda s: crud.count_start_attempt(session=s, run_id=run_id),
        )
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self._log_path(run_id).open("ab") as logfile:
            proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                [*self.job_command, str(run_id)],
                stdout=logfile,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._env(),
                start_new_session=True,
            )
        self._jobs[run_id] = _Job(proc, attempt)
        log.info("run %s: job started (pid %s, attempt %s)", run_id, proc.pid, attempt)

    # -- helpers --------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["APTFLEET_DATABASE_URL"] = self.settings.DATABASE_URL
        env["APTFLEET_DATA_DIR"] = str(self.settings.DATA_DIR)
        env["APTFLEET_SUPERLINK"] = self.settings.SUPERLINK
        env.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
        env.setdefault("FLWR_TELEMETRY_ENABLED", "0")
        env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        # Ray on 127.0.0.1 only (server.flower.simulation.LOOPBACK_RAY_ENV): read at import
        env.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        return env

    def _session_factory(self) -> sessionmaker[Session]:
        if self._sessions is None:
            self._engine = make_engine(self.settings.DATABASE_URL)
            self._sessions = make_session_factory(self._engine)
        return self._sessions

    def _write(self, what: str, fn: Callable[[Session], T]) -> T:
        """Run ``fn`` in one write transaction of its own.

        The transaction is retried while the database is locked or unreachable.
        """

        def attempt() -> T:
            with self._session_factory()() as session:
                begin_write(session)
                result = fn(session)
                session.commit()
                return result

        return with_db_retry(what, attempt)

    def _read(self, what: str, fn: Callable[[Session], T]) -> T:
        def attempt() -> T:
            with self._session_factory()() as session:
                return fn(session)

        return with_db_retry(what, attempt)

    def _finish(self, run_id: int, status: str, reason: str) -> None:
        def write(session: Session) -> None:
            try:
                crud.set_run_status(session=session, run_id=run_id, status=status, error=reason)
            except RunStateError:  # it ended meanwhile (stopped through the API)
                session.rollback()

        self._write(f"run {run_id} {status}", write)
        log.warning("run %s: %s: %s", run_id, status, reason.splitlines()[0])

    def _log_path(self, run_id: int) -> Path:
        return self.log_dir / f"run-{run_id}.log"

    def _log_tail(self, run_id: int) -> str:
        try:
            text = self._log_path(run_id).read_text(errors="replace")
        except OSError:
            return "(no log)"
        return text.strip()[-_REASON_CHARS:] or "(empty log)"


def _status_of(session: Session, run_id: int) -> str | None:
    run = crud.get_run(session=session, run_id=run_id)
    return None if run is None else run.status


def _heartbeat_of(session: Session, run_id: int) -> datetime | None:
    run = crud.get_run(session=session, run_id=run_id)
    return None if run is None or run.status != "running" else run.heartbeat_at


def _end_if_unfinished(session: Session, run_id: int, status: str, reason: str | None) -> None:
    run = crud.get_run(session=session, run_id=run_id)
    if run is not None and run.status not in TERMINAL_RUN_STATUSES:
        crud.set_run_status(session=session, run_id=run_id, status=status, error=reason)


def _end_group(proc: subprocess.Popen[bytes], timeout: float) -> None:
    _signal_group(proc, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        _signal_group(proc, signal.SIGKILL)
        proc.wait(timeout)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
