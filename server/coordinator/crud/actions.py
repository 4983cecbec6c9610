"""The action log: who started, stopped or resumed a run, changed the policy, revoked a token.

Rows come from ``services.audit.record`` only, for the API and the console alike.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.coordinator.core.pagination import Page, keyset_page
from server.coordinator.tables import ConsoleAction


def record_action(
    *, session: Session, actor: str, role: str, action: str, target: str, detail: str | None = None
) -> ConsoleAction:
    """Add one action row (flushed, not committed: it belongs to the action's transaction)."""
    row = ConsoleAction(
        actor=actor, role=role, action=action, target=target, detail=(detail or None)
    )
    session.add(row)
    session.flush()
    return row


def list_actions(
    *, session: Session, target: str | None = None, limit: int = 50
) -> list[ConsoleAction]:
    """The newest actions first, optionally only those on ``target`` (e.g. ``run:12``)."""
    stmt = select(ConsoleAction).order_by(ConsoleAction.id.desc()).limit(limit)
    if target is not None:
        stmt = stmt.where(ConsoleAction.target == target)
    return list(session.scalars(stmt).all())


def page_actions(
    *, session: Session, cursor: str | None = None, limit: int = 50
) -> Page[ConsoleAction]:
    """One page of every action, newest first (cursor key: ``(id,)``)."""
    count = session.scalar(select(func.count()).select_from(ConsoleAction)) or 0
    return keyset_page(
        session,
        select(ConsoleAction),
        order=[ConsoleAction.id],
        cursor=cursor,
        limit=limit,
        count=count,
        descending=True,
    )
