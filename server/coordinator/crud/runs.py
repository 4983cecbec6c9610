"""Data access for runs and their lifecycle."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from server.coordinator.core.pagination import DEFAULT_PAGE_SIZE, Page, keyset_page
from server.coordinator.exceptions import NotFoundError, RunStateError
from server.coordinator.tables import (
    QUEUED_RUN_STATUS,
    RUN_STATUSES,
    STARTED_RUN_STATUSES,
    TERMINAL_RUN_STATUSES,
    Run,
    utcnow,
)


def create_run(
    *,
    session: Session,
    task: str,
    method: str,
    clients: int,
    fraction: float,
    rounds: int,
    alpha: float,
    seed: int,
    policy: str | None = None,
    settings: Mapping[str, Any] | None = None,
) -> Run:
    """Store a new run in status ``queued`` (it waits for admission); the caller commits.

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
    run = Run(
        task=task,
        method=method,
        clients=clients,
        fraction=fraction,
        rounds=rounds,
        alpha=alpha,
        seed=seed,
        policy=policy,
        settings=dict(settings or {}),
        status=QUEUED_RUN_STATUS,
        current_round=0,
    )
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


def runs_by_id(*, session: Session, run_ids: Collection[int]) -> tuple[list[Run], int]:
    """The runs of ``run_ids`` (unknown ids left out), in id order, and how many runs exist.

    What the console's overview polls: its size follows the ids asked for, not the history.
    """
    count = session.scalar(select(func.count()).select_from(Run)) or 0
    if not run_ids:
        return [], count
    runs = session.scalars(select(Run).where(Run.id.in_(list(run_ids))).order_by(Run.id))
    return list(runs.all()), count


def page_runs(
    *, session: Session, cursor: str | None = None, skip: int = 0, limit: int = DEFAULT_PAGE_SIZE
) -> Page[Run]:
    """One page of runs, newest first (cursor key: ``(id,)``), and the total count."""
    count = session.scalar(select(func.count()).select_from(Run)) or 0
    return keyset_page(
        session,
        select(Run),
        order=[Run.id],
        cursor=cursor,
        limit=limit,
        count=count,
        skip=skip,
        descending=True,
    )


def _locked_run(session: Session, run_id: int) -> Run:
    # FOR UPDATE serialises the launcher thread and a stop request on PostgreSQL; SQLite
    # ignores it (its writers are serialised anyway).
    run = session.get(Run, run_id, with_for_update=True, populate_existing=True)
    if run is None:
        raise NotFoundError(f"Run {run_id} not found")
    return run


def set_run_status(
    *,
    session: Session,
    run_id: int,
    status: str,
    error: str | None = None,
    flower_run_id: int | None = None,
) -> Run:
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
        One of queued, pending, running, completed, failed, stopped, interrupted.
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
        leave it stopped), or if a started run would go back to queued or pending.
    """
    if status not in RUN_STATUSES:
        raise RunStateError(f"Run status {status!r} is not one of {RUN_STATUSES}.")
    run = _locked_run(session, run_id)
    if run.status in TERMINAL_RUN_STATUSES:
        raise RunStateError(f"Run {run_id} is already {run.status}; it cannot become {status}.")
    if status == QUEUED_RUN_STATUS and run.status != QUEUED_RUN_STATUS:
        raise RunStateError(f"Run {run_id} is {run.status}; it cannot go back to queued.")
    if status == "pending" and run.status not in (QUEUED_RUN_STATUS, "pending"):
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
    """Put an interrupted, stopped or failed run back in the queue (``queued``) to resume.

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
        raise RunStateError(
            f"Run {run_id} is {run.status}; only runs that are "
            f"{', '.join(RESUMABLE_RUN_STATUSES)} can be resumed."
        )
    run.status = QUEUED_RUN_STATUS
    run.created_at = utcnow()  # the back of the queue
    run.finished_at = None
    run.error = None
    run.start_attempts = 0
    session.flush()
    return run


def set_run_savings(*, session: Session, run_id: int, savings: dict[str, Any]) -> Run:
    """Store the launcher's estimate of savings versus fp32 (JSON object); the caller commits.

    For example ``{"energy": 0.41, "memory": 0.38, "uplink": 0.52}``.
    """
    run = _locked_run(session, run_id)
    run.savings = dict(savings)
    session.flush()
    return run


def mark_interrupted_runs(*, session: Session) -> int:
    """Mark runs left pending or running by a previous process as ``interrupted``.

    Queued runs stay queued: they never started, and the new process admits them.

    Returns
    -------
    int
        How many runs were marked. The caller commits.
    """
    result = session.execute(
        update(Run)
        .where(Run.status.in_(STARTED_RUN_STATUSES))
        .values(
            status="interrupted",
            finished_at=utcnow(),
            error="The coordinator restarted while the run was active.",
        )
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def count_active_runs(*, session: Session) -> int:
    """How many runs are pending or running (they hold an admission slot)."""
    stmt = select(func.count()).select_from(Run).where(Run.status.in_(STARTED_RUN_STATUSES))
    return session.scalar(stmt) or 0


def _queue_order() -> tuple[Any, Any]:
    return Run.created_at, Run.id


def queued_run_ids(*, session: Session, limit: int | None = None) -> list[int]:
    """Ids of the queued runs in admission order (oldest first), at most ``limit``."""
    stmt = select(Run.id).where(Run.status == QUEUED_RUN_STATUS).order_by(*_queue_order())
    return list(session.scalars(stmt.limit(limit) if limit is not None else stmt).all())


def queue_positions(*, session: Session) -> dict[int, int]:
    """Queue position (1 = next to start) of every queued run, by run id."""
    return {run_id: i for i, run_id in enumerate(queued_run_ids(session=session), start=1)}


def admit_queued_runs(*, session: Session, max_active: int) -> list[int]:
    """Move the oldest queued runs to ``pending`` while fewer than ``max_active`` are active.

    Active means pending or running. The caller commits, then starts their jobs.

    On SQLite call it in a write transaction (``core.db.begin_write``) so two admissions
    cannot both take the last slot.

    Returns
    -------
    list[int]
        Ids of the admitted runs, in admission order.
    """
    free = max_active - count_active_runs(session=session)
    if free <= 0:
        return []
    admitted = queued_run_ids(session=session, limit=free)
    for run_id in admitted:
        set_run_status(session=session, run_id=run_id, status="pending")
    return admitted


def count_start_attempt(*, session: Session, run_id: int) -> int:
    """Count one more start of the run's job; the caller commits. Returns the count."""
    run = _locked_run(session, run_id)
    run.start_attempts = (run.start_attempts or 0) + 1
    run.heartbeat_at = utcnow()
    session.flush()
    return run.start_attempts


def touch_run(*, session: Session, run_id: int) -> None:
    """Stamp the run's heartbeat (its job is alive); the caller commits."""
    session.execute(
        update(Run)
        .where(Run.id == run_id)
        .values(heartbeat_at=utcnow())
        .execution_options(synchronize_session=False)
    )
