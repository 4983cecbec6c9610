"""Data access for runs and their lifecycle."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from server.coordinator.exceptions import NotFoundError, RunStateError
from server.coordinator.tables import (
    ACTIVE_RUN_STATUSES,
    RUN_STATUSES,
    TERMINAL_RUN_STATUSES,
    Run,
    utcnow,
)


def create_run(*, session: Session, task: str, method: str, clients: int, fraction: float,
               rounds: int, alpha: float, seed: int, policy: str | None = None,
               settings: Mapping[str, Any] | None = None) -> Run:
    """Store a new run in status ``pending``; the caller commits.

    Parameters
    ----------
    session : Session
        Open session.
    task, method : str
        Task and training method, already validated by the caller.
    clients, rounds, seed : int
        Simulated devices, planned rounds and seed.
    fraction, alpha : float
        Share of devices sampled per round and Dirichlet label skew.
    policy : str | None (default: None)
        The run's own precision policy (a name or ``key=value,...``); None follows the
        fleet policy.
    settings : Mapping[str, Any] | None (default: None)
        JSON object of every run setting the job trains with (the full
        ``apt_core.federated.RunSettings``), stored so a resumed run keeps them.

    Returns
    -------
    Run
        Flushed, so its id is set.
    """
    run = Run(task=task, method=method, clients=clients, fraction=fraction, rounds=rounds,
              alpha=alpha, seed=seed, policy=policy, settings=dict(settings or {}),
              status="pending", current_round=0)
    session.add(run)
    session.flush()
    return run


def get_run(*, session: Session, run_id: int) -> Run | None:
    """The run with id ``run_id``, if any."""
    return session.get(Run, run_id)


def list_runs(*, session: Session, skip: int = 0, limit: int = 100) -> tuple[list[Run], int]:
    """One page of runs, newest first, and the total count."""
    count = session.scalar(select(func.count()).select_from(Run)) or 0
    runs = session.scalars(select(Run).order_by(Run.id.desc()).offset(skip).limit(limit)).all()
    return list(runs), count


def _locked_run(session: Session, run_id: int) -> Run:
    # FOR UPDATE serialises the launcher thread and a stop request on PostgreSQL; SQLite
    # ignores it (its writers are serialised anyway).
    run = session.get(Run, run_id, with_for_update=True, populate_existing=True)
    if run is None:
        raise NotFoundError(f"Run {run_id} not found")
    return run


def set_run_status(*, session: Session, run_id: int, status: str, error: str | None = None,
                   flower_run_id: int | None = None) -> Run:
    """Move a run to ``status``; the launcher reports progress through this.

    ``running`` stamps ``started_at`` and a terminal status (completed, failed, stopped,
    interrupted) stamps ``finished_at``. The caller commits.

    Parameters
    ----------
    session : Session
        Open session; the run row is locked until the caller commits.
    run_id : int
        Id of the run.
    status : str
        One of pending, running, completed, failed, stopped, interrupted.
    error : str | None (default: None)
        Reason of a failure; kept when None.
    flower_run_id : int | None (default: None)
        Flower's id of the run; kept when None.

    Raises
    ------
    NotFoundError
        If the run does not exist.
    RunStateError
        If ``status`` is unknown, if the run already finished (terminal statuses are
        final: a launcher that finishes a run the API stopped gets this error and should
        leave it stopped), or if a started run would go back to pending.
    """
    if status not in RUN_STATUSES:
        raise RunStateError(f"Run status {status!r} is not one of {RUN_STATUSES}.")
    run = _locked_run(session, run_id)
    if run.status in TERMINAL_RUN_STATUSES:
        raise RunStateError(
            f"Run {run_id} is already {run.status}; it cannot become {status}.")
    if status == "pending" and run.status != "pending":
        raise RunStateError(f"Run {run_id} is {run.status}; it cannot go back to pending.")
    now = utcnow()
    if status == "running" and run.started_at is None:
        run.started_at = now
    if status in TERMINAL_RUN_STATUSES:
        run.finished_at = now
    run.status = status
    if error is not None:
        run.error = error
    if flower_run_id is not None:
        run.flower_run_id = flower_run_id
    session.flush()
    return run


RESUMABLE_RUN_STATUSES = ("interrupted", "stopped", "failed")


def reopen_run(*, session: Session, run_id: int) -> Run:
    """Put an interrupted, stopped or failed run back to ``pending`` for a resume.

    Its rounds, per-layer history and checkpoints stay; the job continues after the last
    recorded round from the latest checkpoint. The caller commits.

    Raises
    ------
    NotFoundError
        If the run does not exist.
    RunStateError
        If the run is pending, running or completed.
    """
    run = _locked_run(session, run_id)
    if run.status not in RESUMABLE_RUN_STATUSES:
        raise RunStateError(f"Run {run_id} is {run.status}; only runs that are "
                            f"{', '.join(RESUMABLE_RUN_STATUSES)} can be resumed.")
    run.status = "pending"
    run.finished_at = None
    run.error = None
    session.flush()
    return run


def set_run_savings(*, session: Session, run_id: int, savings: dict[str, Any]) -> Run:
    """Store the launcher's estimate of savings versus fp32 (JSON object), e.g.
    ``{"energy": 0.41, "memory": 0.38, "uplink": 0.52}``. The caller commits."""
    run = _locked_run(session, run_id)
    run.savings = dict(savings)
    session.flush()
    return run


def mark_interrupted_runs(*, session: Session) -> int:
    """Mark runs left pending or running by a previous process as ``interrupted``.

    Returns
    -------
    int
        How many runs were marked. The caller commits.
    """
    result = session.execute(
        update(Run)
        .where(Run.status.in_(ACTIVE_RUN_STATUSES))
        .values(status="interrupted", finished_at=utcnow(),
                error="The coordinator restarted while the run was active.")
        .execution_options(synchronize_session=False))
    return int(getattr(result, "rowcount", 0) or 0)


def count_active_runs(*, session: Session) -> int:
    """How many runs are pending or running."""
    stmt = select(func.count()).select_from(Run).where(Run.status.in_(ACTIVE_RUN_STATUSES))
    return session.scalar(stmt) or 0
