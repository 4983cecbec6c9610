"""Database engines, sessions and Alembic migrations driven from Python."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

logger = logging.getLogger(__name__)

#: The migration scripts ship inside the package, so this works from an installed wheel.
ALEMBIC_DIR = Path(__file__).resolve().parent.parent / "alembic"

#: Seconds a SQLite writer waits on a lock held by another connection before failing.
_SQLITE_BUSY_TIMEOUT_S = 30


def _configure_sqlite(engine: Engine) -> None:
    """Enforce foreign keys and make SAVEPOINT work on pysqlite.

    pysqlite defers BEGIN until the first write, which breaks SAVEPOINT (used by
    ``crud.record_round``); SQLAlchemy's documented recipe emits BEGIN itself.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        if engine.url.database not in (None, "", ":memory:"):
            # WAL lets the API read while a launcher thread writes a round.
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN")


#: Connections an engine keeps (POOL_SIZE) and may open in all (POOL_CONNECTIONS); the
#: app admits fewer requests at a time than that (``ConcurrencyLimitMiddleware``).
POOL_SIZE = 5
POOL_CONNECTIONS = 15


def make_engine(url: str) -> Engine:
    """An engine for ``url``; a SQLite file's directory is created when missing.

    Parameters
    ----------
    url : str
        SQLAlchemy URL, e.g. ``sqlite:///./.aptfleet/aptfleet.db`` or
        ``postgresql+psycopg://user:pw@host:5432/aptfleet``.

    Returns
    -------
    Engine
        With foreign keys enforced on SQLite and pre-ping on every backend.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        pool: dict[str, int] = {}
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            pool = {"pool_size": POOL_SIZE, "max_overflow": POOL_CONNECTIONS - POOL_SIZE}
        engine = create_engine(
            parsed, connect_args={"check_same_thread": False, "timeout": _SQLITE_BUSY_TIMEOUT_S},
            **pool)
        _configure_sqlite(engine)
        return engine
    return create_engine(parsed, pool_pre_ping=True, pool_size=POOL_SIZE,
                         max_overflow=POOL_CONNECTIONS - POOL_SIZE)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def check_db(engine: Engine) -> bool:
    """Whether ``SELECT 1`` succeeds on ``engine``."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        logger.warning("Database check failed: %s", type(exc).__name__)
        return False
    return True


def alembic_config(url: str) -> Config:
    """An Alembic config for ``url`` whose script location is set in code, not by an ini."""
    config = Config()
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    # Passed as an attribute rather than as sqlalchemy.url: ConfigParser would choke on
    # '%' in URL-encoded passwords.
    config.attributes["url"] = url
    return config


def upgrade_head(url: str) -> None:
    """Migrate the database at ``url`` to the newest schema (idempotent)."""
    command.upgrade(alembic_config(url), "head")


def downgrade_base(url: str) -> None:
    """Undo every migration at ``url``: drops all coordinator tables and their data."""
    command.downgrade(alembic_config(url), "base")
