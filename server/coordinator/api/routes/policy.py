"""The fleet precision policy: current version, history, and admin updates."""

from __future__ import annotations

from fastapi import APIRouter

from server.coordinator import crud
from server.coordinator.api.deps import AdminToken, Cursor, Limit, SessionDep, Skip
from server.coordinator.schemas import Message, PoliciesPublic, PolicyPublic, PolicyUpdate
from server.coordinator.services.budgets import apply_budget_update
from server.coordinator.services.policy import apply_policy_update

router = APIRouter(prefix="/policy", tags=["policy"])


@router.get("", response_model=PolicyPublic)
def read_policy(session: SessionDep) -> PolicyPublic:
    """The current policy, its version and its per-device-class overrides."""
    return PolicyPublic.model_validate(crud.get_current_policy_row(session=session))


@router.get("/history", response_model=PoliciesPublic)
def read_policy_history(
    session: SessionDep, cursor: Cursor = None, skip: Skip = 0, limit: Limit = 100
) -> PoliciesPublic:
    """One page of policy versions, newest first; follow ``next_cursor``."""
    page = crud.page_policies(session=session, cursor=cursor, skip=skip, limit=limit)
    return PoliciesPublic.model_validate(page.fields(), from_attributes=True)


@router.put(
    "",
    response_model=PolicyPublic,
    responses={
        400: {"model": Message, "description": "The body is not valid JSON."},
        403: {"model": Message},
        409: {"model": Message},
    },
)
def update_policy(session: SessionDep, token: AdminToken, policy_in: PolicyUpdate) -> PolicyPublic:
    """Create the next policy version from a full or partial body (admin only)."""
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
        author=token.name,
        note=policy_in.note,
    )
    session.commit()
    return PolicyPublic.model_validate(row)
