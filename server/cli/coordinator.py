"""Command line of the coordinator: serve, manage tokens, migrate the database."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from server.coordinator.core.config import settings

server_cli = typer.Typer(help="The aptfleet coordinator.", no_args_is_help=True)
token_cli = typer.Typer(help="API bearer tokens.", no_args_is_help=True)
db_cli = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
server_cli.add_typer(token_cli, name="token")
server_cli.add_typer(db_cli, name="db")



class Role(StrEnum):
    """Roles a token can have."""

    admin = "admin"
    operator = "operator"


DatabaseUrl = Annotated[
    str | None,
    typer.Option("--database-url", help="SQLAlchemy URL (default: APTFLEET_DATABASE_URL)."),
]


def _url(database_url: str | None) -> str:
    return database_url or settings.DATABASE_URL


@server_cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface (default: APTFLEET_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: APTFLEET_PORT).")] = None,
) -> None:
    """Run the coordinator API with uvicorn (migrates the database at startup)."""
    import uvicorn

    uvicorn.run("server.coordinator.main:create_service_app", factory=True,
                host=host or settings.HOST, port=port or settings.PORT)


@token_cli.command("create")
def create_token(
    role: Annotated[Role, typer.Option(help="admin: everything; operator: runs only.")],
    name: Annotated[str | None, typer.Option(help="Label, shown as policy author.")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a token and print it once; only its SHA-256 digest is stored."""
    from server.coordinator import crud
    from server.coordinator.core.db import make_engine, make_session_factory
    from server.coordinator.services.startup import init_db

    url = _url(database_url)
    init_db(url)
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            token = crud.create_token(session=session, role=role.value, name=name)
            session.commit()
    finally:
        engine.dispose()
    typer.echo(token)
    typer.echo(f"Created {role.value} token. It is shown only this once.", err=True)


@db_cli.command("upgrade")
def db_upgrade(database_url: DatabaseUrl = None) -> None:
    """Migrate the database to the newest schema and seed policy version 1 if missing."""
    from server.coordinator.services.startup import init_db

    init_db(_url(database_url))
    typer.echo("Database at head, default policy seeded.", err=True)


@db_cli.command("downgrade")
def db_downgrade(
    database_url: DatabaseUrl = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Undo every migration: drops all coordinator tables and their data."""
    from server.coordinator.core.db import downgrade_base

    if not yes:
        typer.confirm("Drop every aptfleet table and all stored runs?", abort=True)
    downgrade_base(_url(database_url))
    typer.echo("Database downgraded to base (empty).", err=True)
