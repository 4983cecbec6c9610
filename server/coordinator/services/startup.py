"""What the coordinator does to its database before it serves: migrate, seed, recover."""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from server.coordinator import crud
from server.coordinator.core.db import make_engine, make_session_factory, upgrade_head

logger = logging.getLogger(__name__)


def init_db(url: str) -> None:
    """Prepare the database at ``url`` for the service: migrate to head, then seed.

    Seeding stores policy version 1 = ``PrecisionPolicy()`` when no version exists
    (``crud.seed_default_policy``). Idempotent; the app runs it at every startup. It lives
    here rather than in ``core.db`` because ``core`` imports no data access.
    """
    upgrade_head(url)
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            if crud.seed_default_policy(session=session) is not None:
                logger.info("Seeded precision policy version 1 with the defaults.")
            session.commit()
    finally:
        engine.dispose()


def interrupt_stale_runs(session_factory: sessionmaker[Session]) -> int:
    """Mark runs a previous process left pending or running as interrupted; commit.

    Queued runs stay queued: the launcher admits them (``ProcessLauncher.resume_queue``).

    Returns
    -------
    int
        How many runs were marked.
    """
    with session_factory() as session:
        interrupted = crud.mark_interrupted_runs(session=session)
        session.commit()
    if interrupted:
        logger.warning("Marked %s run(s) interrupted: the coordinator restarted.", interrupted)
    return interrupted


def fleet_totals_reader(session_factory: sessionmaker[Session]) -> Callable[[], dict[str, float]]:
    """A reader of the fleet totals, each call in a session of its own (for metrics)."""

    def read() -> dict[str, float]:
        with session_factory() as session:
            return crud.fleet_totals(session=session)

    return read
