"""The fleet precision policy: current version, history, and admin updates."""

from __future__ import annotations

from fastapi import APIRouter

from server.coordinator import crud
from server.coordinator.api.deps import AdminToken, Cursor, Limit, SessionDep, Skip
from server.coordinator.schemas import Message, PoliciesPublic, PolicyPublic, PolicyUpdate
from server.coordinator.services.policy_versions import store_policy_version

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
    """Create the next policy version from a full or partial body (admin only).

    The token's name is the version's author and the ``policy-update`` action's "who".
    """
    row = store_policy_version(session=session, actor=token, policy_in=policy_in)
    return PolicyPublic.model_validate(row)
