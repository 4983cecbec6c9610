"""Storing the next fleet policy version: validated, budget-checked, authored and recorded."""

from __future__ import annotations

from sqlalchemy.orm import Session

from server.coordinator import crud
from server.coordinator.exceptions import PermissionDeniedError
from server.coordinator.schemas import PolicyUpdate
from server.coordinator.services.audit import POLICY_TARGET, Actor, record
from server.coordinator.services.budgets import apply_budget_update
from server.coordinator.services.policy import apply_policy_update
from server.coordinator.tables import Policy


def store_policy_version(
    *, session: Session, actor: Actor, policy_in: PolicyUpdate, action: str = "policy-update"
) -> Policy:
    """Create the next policy version from a full or partial update, and commit it.

    ``PUT /api/v1/policy`` and the console's editor and revert button all store versions
    here, so they share the rules: admins only, the same validation, ``actor`` as author,
    and one ``action`` row (target ``policy``) in the same transaction.

    Parameters
    ----------
    session : Session
        The request's session.
    actor : Actor
        Who changes the policy (must have the admin role).
    policy_in : PolicyUpdate
        The changed fields and the note.
    action : str (default: "policy-update")
        What the action row calls it (``policy-revert`` for a revert).

    Raises
    ------
    PermissionDeniedError
        If ``actor`` is not an admin.
    PolicyUpdateError
        If the update is not a valid policy, override or budget.
    ConflictError
        If another writer stored the same version number concurrently.
    """
    if actor.role != "admin":
        raise PermissionDeniedError(
            f"This action needs the admin role; '{actor.name}' has role '{actor.role}'."
        )
    current = crud.get_current_policy_row(session=session)
    policy, overrides = apply_policy_update(
        crud.policy_of(current), current.overrides or {}, policy_in
    )
    budgets = apply_budget_update(policy, overrides, current.budgets or {}, policy_in)
    row = crud.create_policy_version(
        session=session,
        policy=policy,
        overrides=overrides,
        budgets=budgets,
        author=actor.name,
        note=policy_in.note,
    )
    record(
        session=session,
        actor=actor,
        action=action,
        target=POLICY_TARGET,
        detail=f"v{row.version}: {policy_in.note or ''}",
    )
    session.commit()
    return row
