"""One coordinator run as its own process: Flower training backed by the database.

``python -m server.coordinator.job RUN_ID`` (the launcher starts it) reads the run, marks it
running, trains it on Flower's simulation engine (or the deployment engine when
``APTFLEET_SUPERLINK`` is set; TLS verified with ``APTFLEET_SUPERLINK_CA_FILE``), stores
every round through :class:`DbRecorder`, then stores the savings and the final status. A
separate process keeps Ray away from the web server and lets ``stop`` end the whole process
group.

Before the run is marked running the job starts Ray (simulation engine), so a Ray start-up
failure ends the job with :data:`EXIT_START_FAILED` and the run still ``pending``: the
launcher starts the job again. While it lives the job stamps the run's heartbeat every
:data:`HEARTBEAT_S` seconds. Other exit codes: 0 done (or stopped), 1 the run failed, 2 no
such run, 3 the run cannot start (already finished or stopped), 4 no usable checkpoint.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import threading

from sqlalchemy.orm import Session, sessionmaker

from server.coordinator import crud
from server.coordinator.core.config import Settings
from server.coordinator.core.db import begin_write, make_engine, make_session_factory
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
#: Seconds between two heartbeats of a job (``runs.heartbeat_at``).
HEARTBEAT_S = 10.0
#: Exit code of a job that could not start training (EX_TEMPFAIL): the launcher retries.
EXIT_START_FAILED = 75


def server_settings(
    run: Run,
    start_round: int = 0,
    checkpoint: bytes | None = None,
    round_timeout: float = ServerSettings().timeout,
) -> ServerSettings:
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
    return ServerSettings(
        run=run_settings_of(run),
        rounds=run.rounds,
        fraction_train=run.fraction,
        fraction_evaluate=0.0,
        min_nodes=min(MIN_NODES, run.clients),
        timeout=round_timeout,
        start_round=start_round,
        checkpoint=checkpoint,
    )


def _finish(
    session_factory: sessionmaker[Session], run_id: int, status: str, error: str | None = None
) -> None:
    def write() -> None:
        with session_factory() as session:
            begin_write(session)
            try:
                crud.set_run_status(session=session, run_id=run_id, status=status, error=error)
                session.commit()
            except RunStateError:  # stopped through the API meanwhile: leave it stopped
                session.rollback()

    with_db_retry(f"run {run_id} status", write)


class _Heartbeat:
    """Stamps the run's heartbeat every ``every`` seconds from a daemon thread."""

    def __init__(
        self, session_factory: sessionmaker[Session], run_id: int, every: float = HEARTBEAT_S
    ) -> None:
        self._session_factory = session_factory
        self._run_id = run_id
        self._every = every
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._done.set()
        self._thread.join(5)

    def _beat(self) -> None:
        while not self._done.wait(self._every):
            try:
                with self._session_factory() as session:
                    begin_write(session)
                    crud.touch_run(session=session, run_id=self._run_id)
                    session.commit()
            except Exception as exc:  # noqa: BLE001 - a missed beat is retried next time
                log.warning("Run %s: heartbeat not written (%s)", self._run_id, type(exc).__name__)


def _start_ray(num_cpus: int = 2, address: str = "") -> None:
    """Start this job's Ray cluster now, before the run is marked running (Flower reuses it).

    A start-up failure thus happens while the run is not yet running. The arguments are the
    simulation engine's; with ``address`` (``APTFLEET_RAY_ADDRESS``) the job joins that
    existing cluster instead.
    """
    import ray

    from server.flower.simulation import REPO_ROOT, backend_config

    pythonpath = os.pathsep.join([str(REPO_ROOT), *sys.path])
    ray.init(
        runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
        **backend_config(num_cpus, address or None)["init_args"],
    )


def _prepare(
    session_factory: sessionmaker[Session], run_id: int, round_timeout: float
) -> tuple[ServerSettings, int] | int:
    """The run's Flower settings and client count, or an exit code."""
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
        if start:
            log.info("Run %s: resuming after round %s of %s.", run_id, start, run.rounds)
        return server_settings(run, start, checkpoint, round_timeout), run.clients


def _mark_running(session_factory: sessionmaker[Session], run_id: int) -> bool:
    """Mark the run running in a write transaction, retried while the database is locked.

    Returns False when the run cannot start any more (stopped meanwhile).
    """

    def write() -> bool:
        with session_factory() as session:
            begin_write(session)
            try:
                crud.set_run_status(session=session, run_id=run_id, status="running")
                crud.touch_run(session=session, run_id=run_id)
                session.commit()
            except RunStateError as exc:
                log.error("Run %s cannot start: %s", run_id, exc)
                return False
        return True

    return with_db_retry(f"run {run_id} status", write)


def run_job(run_id: int, settings: Settings) -> int:
    """Train run ``run_id`` to the end; returns a process exit code."""
    engine = make_engine(settings.DATABASE_URL)
    session_factory = make_session_factory(engine)
    try:
        with _Heartbeat(session_factory, run_id):
            return _train(run_id, settings, session_factory)
    finally:
        engine.dispose()


def _train(run_id: int, settings: Settings, session_factory: sessionmaker[Session]) -> int:
    prepared = with_db_retry(
        f"run {run_id} read", lambda: _prepare(session_factory, run_id, settings.ROUND_TIMEOUT)
    )
    if isinstance(prepared, int):
        return prepared
    ss, clients = prepared
    if not settings.SUPERLINK and ss.start_round < ss.rounds:
        try:
            _start_ray(address=settings.RAY_ADDRESS)
        except Exception:  # noqa: BLE001 - the launcher retries, then fails the run
            log.exception("Run %s: Ray did not start; the run stays pending.", run_id)
            return EXIT_START_FAILED
    if not _mark_running(session_factory, run_id):
        return 3
    try:
        _launch(run_id, ss, clients, settings, session_factory)
        save = functools.partial(_save_savings, session_factory, run_id)
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


def _launch(
    run_id: int,
    ss: ServerSettings,
    clients: int,
    settings: Settings,
    session_factory: sessionmaker[Session],
) -> None:
    """Train the run's remaining rounds: on the SuperLink, else on the simulation engine."""
    if ss.start_round >= ss.rounds:
        log.info("Run %s: every round is already recorded.", run_id)
    elif settings.SUPERLINK:
        from server.flower.fleet import submit_to_superlink

        submit_to_superlink(
            settings.SUPERLINK,
            ss,
            db_url=settings.DATABASE_URL,
            coordinator_run_id=run_id,
            ca_file=settings.SUPERLINK_CA_FILE,
            insecure=settings.SUPERLINK_INSECURE,
        )
    else:
        from server.flower.simulation import run_federated

        run_federated(
            ss,
            clients=clients,
            provider=run_policy_provider(session_factory, run_id),
            recorder=DbRecorder(session_factory, run_id),
            ray_address=settings.RAY_ADDRESS or None,
        )


def _save_savings(session_factory: sessionmaker[Session], run_id: int) -> bool:
    """Store the run's savings; False when it is no longer running (stopped or interrupted)."""
    with session_factory() as session:
        begin_write(session)
        run = crud.get_run(session=session, run_id=run_id)
        if run is None or run.status != "running":
            log.info("Run %s ended as %s.", run_id, None if run is None else run.status)
            return False
        crud.set_run_savings(session=session, run_id=run_id, savings=run_savings(session, run_id))
        session.commit()
        return True


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m server.coordinator.job``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_id", type=int)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # before Ray is imported: it keeps every Ray process on 127.0.0.1
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    return run_job(args.run_id, Settings())


if __name__ == "__main__":
    sys.exit(main())
