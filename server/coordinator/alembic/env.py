"""Alembic environment of the coordinator schema.

The database URL is taken, in order, from ``config.attributes["url"]`` (set by
``server.coordinator.core.db.upgrade_head``), ``-x db_url=...`` on the command line,
``sqlalchemy.url`` in the ini file, and finally ``APTFLEET_DATABASE_URL`` through the settings.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

from server.coordinator.core.db import make_engine
from server.coordinator.tables import Base

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _database_url() -> str:
    url = config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("db_url")
    if not url:
        url = config.get_main_option("sqlalchemy.url")
    if not url:
        from server.coordinator.core.config import settings

        url = settings.DATABASE_URL
    return str(url)


def run_migrations_offline() -> None:
    """Emit the SQL to stdout instead of running it."""
    url = _database_url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on a live connection."""
    engine = make_engine(_database_url())
    is_sqlite = engine.dialect.name == "sqlite"
    try:
        with engine.connect() as connection:
            if is_sqlite:
                # Batch migrations copy and drop tables; with foreign keys on, the drop
                # would cascade. Set on the raw connection: the pragma is a no-op in a
                # transaction, and SQLAlchemy would open one first.
                cursor = connection.connection.cursor()
                cursor.execute("PRAGMA foreign_keys=OFF")
                cursor.close()
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=is_sqlite,
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
