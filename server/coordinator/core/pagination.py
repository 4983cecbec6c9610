"""Keyset pagination: opaque cursors and the page every list function returns.

A cursor is the sort key of the last row of a page (for example ``(round, device_id)``),
as URL-safe base64 of a JSON array. The next page starts strictly after that key, so a page
costs the same wherever it lies in a long history (no OFFSET scan) and rows written
meanwhile are neither skipped nor repeated. Cursors are opaque to clients: they pass back
``next_cursor`` as ``cursor`` until it is null.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, literal, tuple_
from sqlalchemy.orm import InstrumentedAttribute, Session

from server.coordinator.exceptions import InvalidQueryError

T = TypeVar("T")

#: Page sizes of every list endpoint: the default, and the most one page may hold.
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
#: Longest cursor accepted (a key of a few ints and a layer name is far shorter).
MAX_CURSOR_CHARS = 512

#: A column a list is ordered by: a mapped attribute or a column expression.
SortColumn = InstrumentedAttribute[Any] | ColumnElement[Any]
#: Types a cursor key may hold, in order: int, str (a layer name) or datetime (ISO text).
KeyType = type[int] | type[str] | type[datetime]


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list.

    Attributes
    ----------
    data : list[T]
        The rows of this page, in the list's order.
    count : int
        Rows matching the filters over every page.
    next_cursor : str | None
        Pass as ``cursor`` for the next page; None on the last page.
    """

    data: list[T]
    count: int
    next_cursor: str | None

    def fields(self) -> dict[str, Any]:
        """``data``, ``count`` and ``next_cursor`` as a dict (shallow, unlike ``asdict``)."""
        return {"data": self.data, "count": self.count, "next_cursor": self.next_cursor}


def encode_cursor(key: Sequence[Any]) -> str:
    """The opaque cursor of a row's sort key (datetimes as ISO text)."""
    values = [v.isoformat() if isinstance(v, datetime) else v for v in key]
    raw = json.dumps(values, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _bad(cursor: str, why: str) -> InvalidQueryError:
    shown = cursor if len(cursor) <= 64 else cursor[:64] + "..."
    return InvalidQueryError(
        ("cursor",),
        f"Query parameter 'cursor' = {shown!r} is not a cursor of this list ({why}); pass "
        "the 'next_cursor' of the previous page unchanged, or leave it out for the first page.",
        shown,
    )


def _typed(value: Any, kind: KeyType) -> Any:
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is str and isinstance(value, str):
        return value
    if kind is datetime and isinstance(value, str):
        return datetime.fromisoformat(value)
    raise TypeError(f"{value!r} is not a {kind.__name__}")


def decode_cursor(cursor: str | None, types: Sequence[KeyType]) -> tuple[Any, ...] | None:
    """The sort key a cursor holds, checked against the list's key ``types``.

    Raises
    ------
    InvalidQueryError
        If the cursor is not one this list issued (HTTP 422 naming ``cursor``).
    """
    if cursor is None:
        return None
    if len(cursor) > MAX_CURSOR_CHARS:
        raise _bad(cursor, f"longer than {MAX_CURSOR_CHARS} characters")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise _bad(cursor, "not base64 of JSON") from exc
    if not isinstance(values, list) or len(values) != len(types):
        raise _bad(cursor, f"not a key of {len(types)} values")
    try:
        return tuple(_typed(v, kind) for v, kind in zip(values, types, strict=True))
    except (TypeError, ValueError) as exc:
        raise _bad(cursor, str(exc)) from exc


def page_of(
    rows: Sequence[T], *, limit: int, count: int, key: Callable[[T], Sequence[Any]]
) -> Page[T]:
    """The page of ``rows`` fetched with ``limit + 1``: the extra row only says more follow.

    Parameters
    ----------
    rows : Sequence[T]
        At most ``limit + 1`` rows in the list's order.
    limit : int
        Page size.
    count : int
        Rows matching over every page.
    key : Callable[[T], Sequence[Any]]
        The sort key of a row (what the next page starts after).
    """
    data = list(rows[:limit])
    more = len(rows) > limit and bool(data)
    return Page(data=data, count=count, next_cursor=encode_cursor(key(data[-1])) if more else None)


def after(
    columns: Sequence[SortColumn], key: Sequence[Any], *, descending: bool = False
) -> ColumnElement[bool]:
    """Rows strictly after ``key`` in the order of ``columns`` (all ascending or all descending).

    A row-value comparison, ``(a, b) > (:a, :b)``, which PostgreSQL and SQLite (3.15+)
    answer from an index on those columns; each value is bound with its column's type.
    """
    values = zip(key, columns, strict=True)
    bound = tuple_(*(literal(value, column.type) for value, column in values))
    row = tuple_(*columns)
    return row < bound if descending else row > bound


def keyset_page(
    session: Session,
    stmt: Select[Any],
    *,
    order: Sequence[InstrumentedAttribute[Any]],
    cursor: str | None,
    limit: int,
    count: int,
    skip: int = 0,
    descending: bool = False,
) -> Page[Any]:
    """One page of the ORM rows ``stmt`` selects, ordered by ``order`` (the cursor key).

    Parameters
    ----------
    session : Session
        Open session.
    stmt : Select
        ``select(Entity)`` with the list's filters, without order or limit.
    order : Sequence[InstrumentedAttribute]
        The entity's columns that order the list; together they are unique.
    cursor : str | None
        The previous page's ``next_cursor``; None for the first page.
    limit, count, skip : int
        Page size; rows over every page; rows dropped after the cursor (older clients).
    descending : bool (default: False)
        Newest first.
    """
    key = decode_cursor(cursor, [_key_type(column) for column in order])
    if key is not None:
        stmt = stmt.where(after(order, key, descending=descending))
    ordering = [column.desc() if descending else column for column in order]
    rows = list(session.scalars(stmt.order_by(*ordering).offset(skip).limit(limit + 1)))
    names = [column.key for column in order]
    return page_of(rows, limit=limit, count=count, key=lambda row: [getattr(row, n) for n in names])


def _key_type(column: InstrumentedAttribute[Any]) -> KeyType:
    column_type = column.type
    # a TypeDecorator (UTCDateTime, UInt64) reports ``object``: ask what it decorates
    impl = getattr(column_type, "impl_instance", column_type)
    python_type = impl.python_type
    if issubclass(python_type, datetime):
        return datetime
    return str if issubclass(python_type, str) else int
