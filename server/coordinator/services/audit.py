"""Who did what: the one path that records every state-changing action, API or console.

The services that change state (``launcher``, ``policy_versions``, ``tokens``) call
``record`` themselves, in the transaction of the change, so a run stopped with
``POST /api/v1/runs/{id}/stop`` and one stopped from the console's button leave the same
row: the token's name and role, the time, the action and its target. Neither the bearer
secret nor the session id ever reaches this module: an actor is only a name and a role.
"""

from __future__ import annotations

import logging
from typing import Protocol

from sqlalchemy.orm import Session

from server.coordinator.crud.actions import record_action

logger = logging.getLogger(__name__)


class Actor(Protocol):
    """Who acts: an API token (``tables.ApiToken``) or a console viewer (``Viewer``)."""

    @property
    def name(self) -> str:
        """The token's label, shown as "who"."""
        ...

    @property
    def role(self) -> str:
        """``admin`` or ``operator``."""
        ...


def run_target(run_id: int) -> str:
    """The ``target`` of actions on run ``run_id`` (what the run page lists)."""
    return f"run:{run_id}"


#: The ``target`` of policy changes (what the policy page lists).
POLICY_TARGET = "policy"


def record(
    *, session: Session, actor: Actor, action: str, target: str, detail: str | None = None
) -> None:
    """Add the action's row to the open transaction (the caller's commit stores both).

    Parameters
    ----------
    session : Session
        The session that makes the change itself.
    actor : Actor
        Who acts; only its name and role are stored.
    action : str
        What was done: ``start``, ``stop``, ``resume``, ``policy-update``, ``policy-revert``,
        ``token-revoke`` (API or CLI), ``token-create`` (CLI only); the CLI acts as
        ``cli:<user>``.
    target : str
        What it was done to: ``run:12``, ``policy``, ``token:3``.
    detail : str | None (default: None)
        A short sentence (the run's settings, the policy note); never a secret.
    """
    record_action(
        session=session,
        actor=actor.name,
        role=actor.role,
        action=action,
        target=target,
        detail=detail,
    )
    logger.info("Action %s on %s by %s (%s).", action, target, actor.name, actor.role)
