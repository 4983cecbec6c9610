"""The run-launcher seam: the protocol, a placeholder, and start/stop orchestration."""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

from sqlalchemy.orm import Session, sessionmaker

from server.coordinator import crud
from server.coordinator.exceptions import LaunchError, RunStateError
from server.coordinator.schemas import RunCreate
from server.coordinator.services.audit import Actor, record, run_target
from server.coordinator.tables import TERMINAL_RUN_STATUSES, Run

logger = logging.getLogger(__name__)

NO_LAUNCHER_MESSAGE = (
    "No run launcher is configured on this coordinator (NullLauncher), so the run was not "
    "started. Pass one with create_app(launcher=...) or set app.state.launcher."
)


@runtime_checkable
class RunLauncher(Protocol):
    """Starts and stops the Flower side of a run.

    ``start`` must return quickly (run Flower in a thread or process). It receives a
    committed ``queued`` run; a launcher with an admission limit (``ProcessLauncher``)
    leaves it queued until a slot frees up, then moves it to ``pending`` and starts it. While
    the run goes on, the launcher reports through its own sessions and commits:
    ``crud.set_run_status(status="running", flower_run_id=...)``, then one
    ``crud.record_round`` per round, ``crud.set_run_savings``, and finally
    ``crud.set_run_status(status="completed" | "failed", error=...)``. A run the API
    stopped is already ``stopped``; ``set_run_status`` then raises ``RunStateError``.
    """

    def start(self, run_id: int) -> None:
        """Begin (or queue) training run ``run_id`` (stored, status queued)."""
        ...

    def stop(self, run_id: int) -> None:
        """Stop run ``run_id``.

        A launcher that ends a job marks the run stopped first, so that the dying job's own
        last write (a failure) is refused; the API marks it stopped afterwards if it is not.
        """
        ...


class NullLauncher:
    """Placeholder launcher: marks every run failed with a message saying why.

    Parameters
    ----------
    session_factory : sessionmaker[Session]
        Used to mark the run failed in its own transaction.
    """

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory

    def start(self, run_id: int) -> None:
        """Mark the run failed: nothing can train it."""
        logger.warning("Run %s not started: no run launcher is configured.", run_id)
        with self._session_factory() as session:
            crud.set_run_status(
                session=session, run_id=run_id, status="failed", error=NO_LAUNCHER_MESSAGE
            )
            session.commit()

    def stop(self, run_id: int) -> None:
        """Nothing runs, so nothing to stop."""
        logger.info("Run %s: stop requested; the NullLauncher runs nothing.", run_id)


def _start_or_fail(
    session: Session, launcher: RunLauncher, run: Run, run_id: int, verb: str
) -> Run:
    """Hand a committed queued run to ``launcher``; mark it failed if that raises.

    ``run_id`` is read before the commit: touching ``run`` before ``start`` returns would
    make SQLite pin a read snapshot from before the launcher's own writes.
    """
    try:
        launcher.start(run_id)
    except Exception as exc:
        logger.exception("Run %s: the launcher failed to %s it.", run_id, verb)
        session.rollback()
        reason = f"The launcher failed to {verb} the run: {type(exc).__name__}: {exc}"
        try:
            crud.set_run_status(session=session, run_id=run_id, status="failed", error=reason)
            session.commit()
        except RunStateError:
            session.rollback()
        raise LaunchError(f"Run {run_id} could not be {verb}ed. {reason}") from exc
    session.refresh(run)
    return run


def launch_run(*, session: Session, launcher: RunLauncher, run_in: RunCreate, actor: Actor) -> Run:
    """Store a queued run and ``actor``'s ``start`` action, commit both, hand it to ``launcher``.

    The launcher admits it when a slot is free.

    Raises
    ------
    LaunchError
        If ``launcher.start`` raises; the run is then marked failed with the reason.
    """
    run = crud.create_run(
        session=session, **run_in.model_dump(), settings=run_in.run_settings().to_dict()
    )
    run_id = run.id
    settings = ", ".join(f"{key}={value}" for key, value in run_in.model_dump().items())
    record(session=session, actor=actor, action="start", target=run_target(run_id), detail=settings)
    session.commit()  # the launcher reads the run through its own session
    return _start_or_fail(session, launcher, run, run_id, "start")


def resume_run(*, session: Session, launcher: RunLauncher, run: Run, actor: Actor) -> Run:
    """Reopen an interrupted, stopped or failed run and start it again from its latest checkpoint.

    ``actor``'s ``resume`` action is stored with the reopening.

    It goes to the back of the queue; rounds already recorded are neither lost nor trained twice.

    Raises
    ------
    RunStateError
        If the run cannot be resumed (queued, pending, running or completed).
    LaunchError
        If ``launcher.start`` raises; the run is then marked failed with the reason.
    """
    run_id = run.id
    crud.reopen_run(session=session, run_id=run_id)
    record(
        session=session,
        actor=actor,
        action="resume",
        target=run_target(run_id),
        detail="status now queued",
    )
    session.commit()
    return _start_or_fail(session, launcher, run, run_id, "resume")


def stop_run(*, session: Session, launcher: RunLauncher, run: Run, actor: Actor) -> Run:
    """Stop a queued, pending or running run, mark it ``stopped`` and store ``actor``'s action.

    A queued run never starts.

    Raises
    ------
    RunStateError
        If the run already finished.
    LaunchError
        If ``launcher.stop`` raises; the run keeps whatever status the launcher wrote.
    """
    run_id = run.id
    if run.status in TERMINAL_RUN_STATUSES:
        raise RunStateError(
            f"Run {run_id} is already {run.status}; only queued, pending or "
            "running runs can be stopped."
        )
    session.commit()  # end the read snapshot: the launcher writes through its own session
    try:
        launcher.stop(run_id)
    except Exception as exc:
        logger.exception("Run %s: the launcher failed to stop it.", run_id)
        raise LaunchError(
            f"Run {run_id} could not be stopped: {type(exc).__name__}: {exc}"
        ) from exc
    session.refresh(run)
    if run.status not in TERMINAL_RUN_STATUSES:
        run = crud.set_run_status(session=session, run_id=run_id, status="stopped")
    record(
        session=session,
        actor=actor,
        action="stop",
        target=run_target(run_id),
        detail=f"status now {run.status}",
    )
    session.commit()
    return run
