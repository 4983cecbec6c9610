"""One coordinator run as its own process: Flower training backed by the database.

``python -m server.coordinator.job RUN_ID`` (the launcher starts it) reads the run, marks it
running, trains it on Flower's simulation engine (or the deployment engine when
``APTFLEET_SUPERLINK`` is set), stores every round through :class:`DbRecorder`, then
stores the savings and the final status. A separate process keeps Ray away from the web
server and lets ``stop`` end the whole process group.
"""

from __future__ import annotations

import argparse
import logging
import sys

from sqlalchemy.orm import Session, sessionmaker

from server.coordinator import crud
from server.coordinator.core.config import Settings
from server.coordinator.core.db import make_engine, make_session_factory
from server.coordinator.exceptions import ResumeError, RunStateError, RunStopped
from server.coordinator.services.run_settings import run_settings_of
from server.coordinator.services.run_store import (
    DbRecorder,
    resume_point,
    run_policy_provider,
    run_savings,
    with_db_retry,
)
from server.coordinator.tables import Run
from server.flower.server_app import ServerSettings

log = logging.getLogger(__name__)

#: Sampling floor of every coordinator run: FedAvg waits for this many connected nodes.
MIN_NODES = ServerSettings().min_nodes


def server_settings(run: Run, start_round: int = 0, checkpoint: bytes | None = None,
                    round_timeout: float = ServerSettings().timeout) -> ServerSettings:
    """Flower-side settings of a stored run.

    Parameters
    ----------
    run : Run
        The stored run; its run settings come from :func:`run_settings_of`.
    start_round : int (default: 0)
        Rounds already recorded (a resumed run continues after them).
    checkpoint : bytes | None (default: None)
        Packed global model of round ``start_round``.
    round_timeout : float (default: ``ServerSettings().timeout``)
        Seconds to wait for one round's replies: the coordinator's
        ``APTFLEET_ROUND_TIMEOUT`` (a run has no timeout of its own).
    """
    return ServerSettings(run=run_settings_of(run), rounds=run.rounds,
                          fraction_train=run.fraction, fraction_evaluate=0.0,
                          min_nodes=min(MIN_NODES, run.clients), timeout=round_timeout,
                          start_round=start_round, checkpoint=checkpoint)


def _finish(session_factory: sessionmaker[Session], run_id: int, status: str,
            error: str | None = None) -> None:
    def write() -> None:
        with session_factory() as session:
            try:
                crud.set_run_status(session=session, run_id=run_id, status=status,
                                    error=error)
                session.commit()
            except RunStateError:  # stopped through the API meanwhile: leave it stopped
                session.rollback()
    with_db_retry(f"run {run_id} status", write)


def run_job(run_id: int, settings: Settings) -> int:
    """Train run ``run_id`` to the end; returns a process exit code."""
    engine = make_engine(settings.DATABASE_URL)
    session_factory = make_session_factory(engine)
    with session_factory() as session:
        run = crud.get_run(session=session, run_id=run_id)
        if run is None:
            log.error("Run %s not found.", run_id)
            return 2
        # a resumed run continues after its last stored round, from that round's checkpoint
        try:
            start, checkpoint = resume_point(session, run_id)
        except ResumeError as exc:
            log.error("%s", exc)
            return 4
        ss = server_settings(run, start, checkpoint, settings.ROUND_TIMEOUT)
        if start:
            log.info("Run %s: resuming after round %s of %s.", run_id, start, run.rounds)
        clients = run.clients
        try:
            crud.set_run_status(session=session, run_id=run_id, status="running")
            session.commit()
        except RunStateError as exc:
            log.error("Run %s cannot start: %s", run_id, exc)
            return 3
    provider = run_policy_provider(session_factory, run_id)
    recorder = DbRecorder(session_factory, run_id)
    try:
        if ss.start_round >= ss.rounds:
            log.info("Run %s: every round is already recorded.", run_id)
        elif settings.SUPERLINK:
            from server.flower.fleet import submit_to_superlink

            submit_to_superlink(settings.SUPERLINK, ss, db_url=settings.DATABASE_URL,
                                coordinator_run_id=run_id)
        else:
            from server.flower.simulation import run_federated

            run_federated(ss, clients=clients, provider=provider, recorder=recorder)
        def save() -> bool:
            with session_factory() as session:
                run = crud.get_run(session=session, run_id=run_id)
                if run is None or run.status != "running":  # stopped or interrupted
                    log.info("Run %s ended as %s.", run_id,
                             None if run is None else run.status)
                    return False
                crud.set_run_savings(session=session, run_id=run_id,
                                     savings=run_savings(session, run_id))
                session.commit()
                return True
        if not with_db_retry(f"run {run_id} savings", save):
            return 0
        _finish(session_factory, run_id, "completed")
        return 0
    except RunStopped as exc:
        log.info("%s", exc)
        return 0
    except BaseException as exc:  # noqa: BLE001 - any failure must reach the run's status
        log.exception("Run %s failed.", run_id)
        _finish(session_factory, run_id, "failed", f"{type(exc).__name__}: {exc}")
        return 1
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m server.coordinator.job``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_id", type=int)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                                                   "%(message)s")
    return run_job(args.run_id, Settings())


if __name__ == "__main__":
    sys.exit(main())
