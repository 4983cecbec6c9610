"""Data access for the versioned fleet precision policy."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from apt_core.config import PrecisionPolicy
from apt_core.federated import Overrides
from server.coordinator.core.pagination import DEFAULT_PAGE_SIZE, Page, keyset_page
from server.coordinator.exceptions import ConflictError, PolicyNotSeededError
from server.coordinator.tables import Policy

#: The ``PrecisionPolicy`` fields a ``policies`` row stores in columns of the same name.
POLICY_FIELDS = tuple(f.name for f in fields(PrecisionPolicy))


def policy_of(row: Policy) -> PrecisionPolicy:
    """The validated ``PrecisionPolicy`` a stored version describes."""
    return PrecisionPolicy(**{name: getattr(row, name) for name in POLICY_FIELDS})


def get_current_policy_row(*, session: Session) -> Policy:
    """The newest policy version.

    Raises
    ------
    PolicyNotSeededError
        If no version exists (the database was not migrated to head).
    """
    row = session.scalar(select(Policy).order_by(Policy.version.desc()).limit(1))
    if row is None:
        raise PolicyNotSeededError(
            "No precision policy is stored; run 'aptfleet server db upgrade' (or "
            "server.coordinator.services.startup.init_db) to seed version 1."
        )
    return row


def current_policy(session: Session) -> tuple[int, PrecisionPolicy, Overrides]:
    """The fleet's current policy.

    Returns
    -------
    tuple[int, PrecisionPolicy, dict[str, dict[str, Any]]]
        Version number, fleet-wide policy, and per-device-class overrides (apply one with
        ``server.coordinator.services.policy.effective_policy``).
    """
    row = get_current_policy_row(session=session)
    return row.version, policy_of(row), dict(row.overrides or {})


def list_policies(*, session: Session, skip: int = 0, limit: int = 100) -> tuple[list[Policy], int]:
    """Policy versions, newest first, and the total count."""
    count = session.scalar(select(func.count()).select_from(Policy)) or 0
    stmt = select(Policy).order_by(Policy.version.desc()).offset(skip).limit(limit)
    return list(session.scalars(stmt).all()), count


def page_policies(
    *, session: Session, cursor: str | None = None, skip: int = 0, limit: int = DEFAULT_PAGE_SIZE
) -> Page[Policy]:
    """One page of policy versions, newest first (cursor key: ``(version,)``)."""
    count = session.scalar(select(func.count()).select_from(Policy)) or 0
    return keyset_page(
        session,
        select(Policy),
        order=[Policy.version],
        cursor=cursor,
        limit=limit,
        count=count,
        skip=skip,
        descending=True,
    )


def create_policy_version(
    *,
    session: Session,
    policy: PrecisionPolicy,
    overrides: dict[str, dict[str, Any]],
    author: str,
    note: str | None = None,
    budgets: dict[str, dict[str, Any]] | None = None,
) -> Policy:
    """Store ``policy`` as the next version (current + 1); the caller commits.

    ``budgets`` (per-class resource budgets, already validated) default to none.

    Raises
    ------
    ConflictError
        If another writer created the same version number concurrently.
    """
    latest = session.scalar(select(func.max(Policy.version))) or 0
    row = Policy(
        version=latest + 1,
        **policy.to_dict(),
        overrides=overrides,
        budgets=budgets or {},
        author=author,
        note=note,
    )
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError as exc:
        raise ConflictError(
            f"Policy version {latest + 1} was created concurrently; re-read the policy and retry."
        ) from exc
    return row


def seed_default_policy(*, session: Session) -> Policy | None:
    """Store version 1 = ``PrecisionPolicy()`` if no version exists yet; the caller commits.

    Seeding runs at startup (``server.coordinator.services.startup.init_db``), not in a
    migration, so version 1 takes the apt_core defaults of the code that first starts on the
    database; later default changes never rewrite a stored version.

    Returns
    -------
    Policy | None
        The new row, or None when a version already existed.
    """
    if session.scalar(select(Policy.id).limit(1)) is not None:
        return None
    row = Policy(
        version=1,
        **PrecisionPolicy().to_dict(),
        overrides={},
        budgets={},
        author="system",
        note="Seeded from the apt_core PrecisionPolicy() defaults.",
    )
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        return None  # another process seeded it first
    return row
