"""Database engines, sessions and Alembic migrations driven from Python."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

logger = logging.getLogger(__name__)

#: The migration scripts ship inside the package, so this works from an installed wheel.
ALEMBIC_DIR = Path(__file__).resolve().parent.parent / "alembic"

#: Seconds a SQLite writer waits on a lock held by another connection before failing.
SQLITE_BUSY_TIMEOUT_S = 30

#: Execution option that makes a SQLite transaction begin with ``BEGIN IMMEDIATE``.
_WRITE_OPTION = "aptfleet_write"


def _configure_sqlite(engine: Engine) -> None:
    """Foreign keys, WAL, an honoured busy timeout, SAVEPOINT, and write transactions.

    pysqlite defers BEGIN until the first write, which breaks SAVEPOINT (used by
    ``crud.record_round``); SQLAlchemy's documented recipe emits BEGIN itself. A session
    marked by :func:`begin_write` begins with ``BEGIN IMMEDIATE``: it takes the write lock
    up front, waiting up to the busy timeout. A plain (deferred) transaction that read
    first and writes later fails at once with ``database is locked`` when another
    connection wrote meanwhile; SQLite never waits on that lock upgrade.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
        if engine.url.database not in (None, "", ":memory:"):
            # WAL lets the API read while a job writes a round; NORMAL is WAL's safe sync.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        write = connection.get_execution_options().get(_WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def begin_write(session: Session) -> None:
    """Make every transaction of ``session`` from now on a write transaction.

    On SQLite each one then begins with ``BEGIN IMMEDIATE`` (see :func:`_configure_sqlite`),
    so concurrent writers queue on the busy timeout instead of failing with ``database is
    locked``; other databases are unaffected. Call it before the session changes anything:
    a transaction already open (reads only) is committed first, so the next statement
    starts the write transaction.
    """
    if session.in_transaction():
        session.commit()
    session.execution_options = session.execution_options.union({_WRITE_OPTION: True})


def is_database_locked(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite's ``database is locked`` (or ``busy``) error."""
    text_ = str(getattr(exc, "orig", exc)).lower()
    return isinstance(exc, OperationalError) and ("locked" in text_ or "busy" in text_)


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
            parsed,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S},
            **pool,
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(
        parsed, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=POOL_CONNECTIONS - POOL_SIZE
    )


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
