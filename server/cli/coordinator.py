"""Command line of the coordinator: serve, manage tokens, migrate the database."""

from __future__ import annotations

import getpass
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from server.coordinator.core.config import settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

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
    """Run the coordinator API with uvicorn (migrates the database at startup).

    A connection must complete each request head within APTFLEET_HEADER_TIMEOUT seconds;
    bodies, admission and the per-address limit are the app's (``api/middleware.py``).
    """
    import uvicorn

    from server.coordinator.core.http_protocol import header_deadline_protocol

    uvicorn.run(
        "server.coordinator.main:create_service_app",
        factory=True,
        host=host or settings.HOST,
        port=port or settings.PORT,
        http=header_deadline_protocol(settings.HEADER_TIMEOUT),
        # no limit_concurrency: it counts stalled connections and would answer
        # everyone 503; the app's per-address limit and admission do that job
        timeout_keep_alive=5,
        h11_max_incomplete_event_size=16 * 1024,
    )


_DURATION = re.compile(r"([1-9][0-9]{0,5})([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
#: Longest expiry accepted at creation (ten years); no expiry at all is the default.
_MAX_EXPIRY = timedelta(days=3650)


def _parse_expires_in(value: str | None) -> timedelta | None:
    """``30d``, ``12h``, ``90m``, ``2w``, ``3600s`` -> a duration (None stays None)."""
    if value is None:
        return None
    match = _DURATION.fullmatch(value.strip())
    if match is None:
        raise typer.BadParameter(
            f"{value!r} is not a duration such as 30d, 12h, 90m, 2w or 3600s.",
            param_hint="'--expires-in'",
        )
    duration = timedelta(seconds=int(match[1]) * _UNIT_S[match[2]])
    if duration > _MAX_EXPIRY:
        raise typer.BadParameter(
            f"{value!r} is longer than the maximum of 3650d.", param_hint="'--expires-in'"
        )
    return duration


@contextmanager
def _db_session(database_url: str | None) -> Iterator[Session]:
    """A session on the migrated database (``init_db``); the caller commits."""
    from server.coordinator.core.db import make_engine, make_session_factory
    from server.coordinator.services.startup import init_db

    url = _url(database_url)
    init_db(url)
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            yield session
    finally:
        engine.dispose()


@dataclass(frozen=True)
class _CliActor:
    """Whoever runs the CLI on the coordinator's machine: they hold the database itself."""

    name: str
    role: str = "admin"


def _cli_actor() -> _CliActor:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        user = "unknown"
    return _CliActor(name=f"cli:{user}"[:64])


def _when(value: datetime | None, never: str = "never") -> str:
    return never if value is None else value.strftime("%Y-%m-%d %H:%M UTC")


@token_cli.command("create")
def create_token(
    role: Annotated[Role, typer.Option(help="admin: everything; operator: runs only.")],
    name: Annotated[str | None, typer.Option(help="Label, shown as policy author.")] = None,
    expires_in: Annotated[
        str | None,
        typer.Option(
            "--expires-in",
            help="Lifetime, e.g. 30d, 12h, 90m, 2w (default: never expires).",
        ),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a token and print it once; only its SHA-256 digest is stored."""
    from server.coordinator import crud
    from server.coordinator.services import audit
    from server.coordinator.tables import utcnow

    lifetime = _parse_expires_in(expires_in)
    expires_at = None if lifetime is None else utcnow() + lifetime
    with _db_session(database_url) as session:
        token = crud.create_token(
            session=session, role=role.value, name=name, expires_at=expires_at
        )
        detail = f"{role.value} token '{name or ''}'" + (
            "" if lifetime is None else f", {expires_in}"
        )
        audit.record(
            session=session,
            actor=_cli_actor(),
            action="token-create",
            target="token",
            detail=detail,
        )
        session.commit()
    typer.echo(token)
    expiry = "" if expires_at is None else f", expiring {_when(expires_at)}"
    typer.echo(f"Created {role.value} token{expiry}. It is shown only this once.", err=True)


@token_cli.command("list")
def list_tokens(database_url: DatabaseUrl = None) -> None:
    """List every token: id, role, name, created, expires, last used, status (no secrets)."""
    from server.coordinator import crud
    from server.coordinator.crud.tokens import token_refusal
    from server.coordinator.tables import utcnow

    with _db_session(database_url) as session:
        tokens, _ = crud.list_tokens(session=session)
        now = utcnow()
        rows = [
            (
                str(t.id),
                t.role,
                t.name,
                _when(t.created_at),
                _when(t.expires_at),
                _when(t.last_used_at),
                "revoked" if t.revoked else "expired" if token_refusal(t, now=now) else "active",
            )
            for t in tokens
        ]
    header = ("ID", "ROLE", "NAME", "CREATED", "EXPIRES", "LAST USED", "STATUS")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if not rows:
        typer.echo("No tokens yet: create one with 'aptfleet token create --role admin'.", err=True)


@token_cli.command("revoke")
def revoke_token(
    token_id: Annotated[
        int, typer.Argument(metavar="ID", min=1, help="Id from 'aptfleet token list'.")
    ],
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke a token: it gets 401 from now on and its dashboard sessions end."""
    from server.coordinator.exceptions import NotFoundError
    from server.coordinator.services import tokens

    with _db_session(database_url) as session:
        try:
            token = tokens.revoke_token(session=session, actor=_cli_actor(), token_id=token_id)
        except NotFoundError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(1) from exc
        typer.echo(
            f"Revoked token {token.id} ('{token.name}', {token.role}); its dashboard "
            "sessions ended.",
            err=True,
        )


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
