"""Policy lookups of the console: one stored version, and the runs a new version reaches."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.coordinator.tables import ACTIVE_RUN_STATUSES, Policy, Run


def list_fleet_policy_runs(*, session: Session, limit: int = 100) -> list[Run]:
    """Queued, pending and running runs without a policy of their own, oldest first.

    Each reads the current fleet version when its next round starts; runs created with a
    named policy keep it (version 0) and are not listed.
    """
    stmt = (
        select(Run)
        .where(Run.status.in_(ACTIVE_RUN_STATUSES), Run.policy.is_(None))
        .order_by(Run.id)
        .limit(limit)
    )
    return list(session.scalars(stmt).all())


def get_policy_version(*, session: Session, version: int) -> Policy | None:
    """The stored policy version ``version``, if any."""
    return session.scalar(select(Policy).where(Policy.version == version))
