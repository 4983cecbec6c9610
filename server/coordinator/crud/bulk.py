"""Many rows in one statement, the fast way for each supported database.

PostgreSQL gets ``INSERT ... SELECT ... FROM unnest(:col1, :col2, ...)``: one short
statement with one array parameter per column, whatever the number of rows (psycopg would
otherwise pipeline one INSERT per row, and a long multi-row VALUES costs more to build than
to run). SQLite gets one ``INSERT`` run by the driver's ``executemany``, a loop in C.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Table, func, insert, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from server.coordinator.tables import Base

#: An ``INSERT`` that knows ``ON CONFLICT`` (``excluded``, ``on_conflict_do_update``).
Upsert = postgresql.Insert | sqlite.Insert


def dialect_of(session: Session) -> str:
    """``postgresql`` or ``sqlite``; anything else is refused."""
    name = session.get_bind().dialect.name
    if name not in ("postgresql", "sqlite"):
        raise NotImplementedError(f"Database dialect {name!r}: use SQLite or PostgreSQL.")
    return name


def _unnest_select(
    model: type[Base], rows: Sequence[Mapping[str, Any]], fixed: Mapping[str, Any]
) -> tuple[list[str], Any]:
    """The columns and ``SELECT :fixed..., col... FROM unnest(:arrays) AS t(col...)``."""
    table = model.__table__
    varying = list(rows[0])
    arrays = [
        literal([row[name] for row in rows], postgresql.ARRAY(table.c[name].type))
        for name in varying
    ]
    source = func.unnest(*arrays).table_valued(*varying).render_derived()
    constants = [literal(value, table.c[name].type) for name, value in fixed.items()]
    query = select(*constants, *(source.c[name] for name in varying))
    return [*fixed, *varying], query


def bulk_insert(
    session: Session,
    model: type[Base],
    rows: Sequence[Mapping[str, Any]],
    fixed: Mapping[str, Any],
) -> None:
    """Insert ``rows`` (same keys each) with the ``fixed`` values in one statement.

    Parameters
    ----------
    session : Session
        Open session on SQLite or PostgreSQL.
    model : type[Base]
        The table's mapped class.
    rows : Sequence[Mapping[str, Any]]
        One mapping per row, every one with the same keys; empty: nothing is sent.
    fixed : Mapping[str, Any]
        Values every row shares (e.g. the run and round).
    """
    if not rows:
        return
    if dialect_of(session) == "postgresql":
        columns, query = _unnest_select(model, rows, fixed)
        session.execute(insert(model).from_select(columns, query))
    else:
        # Core, not the ORM's bulk insert (which splits rows by their None values)
        table = cast(Table, model.__table__)
        session.execute(insert(table), [{**fixed, **row} for row in rows])


def upsert_statement(
    session: Session, model: type[Base], rows: Sequence[Mapping[str, Any]]
) -> tuple[Upsert, list[dict[str, Any]] | None]:
    """The dialect's ``INSERT`` of ``rows``, ready for ``on_conflict_do_update``.

    Returns the statement and the executemany parameters (None on PostgreSQL, where the
    rows travel inside the statement as arrays).
    """
    if dialect_of(session) == "postgresql":
        columns, query = _unnest_select(model, rows, {})
        return postgresql.insert(model).from_select(columns, query), None
    return sqlite.insert(model), [dict(row) for row in rows]
