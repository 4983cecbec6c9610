"""Console routes of the fleet policy: read (everyone), edit, preview and revert (admins).

Saving goes through the service behind ``PUT /api/v1/policy``
(``services.policy_versions.store_policy_version``), so the console and the API store
versions by exactly the same rules (validation, overrides, budgets, author, action row).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.orm import Session

from server.coordinator import crud
from server.coordinator.api.deps import SessionDep
from server.coordinator.crud.actions import list_actions
from server.coordinator.crud.policy_console import get_policy_version, list_fleet_policy_runs
from server.coordinator.dashboard.auth import Viewer, ViewerDep, login_redirect
from server.coordinator.dashboard.forms import Fields, FieldsDep, check_action
from server.coordinator.dashboard.markup import Markup
from server.coordinator.dashboard.policy_form import (
    PolicyEdit,
    form_values,
    read_policy_edit,
    revert_update,
)
from server.coordinator.dashboard.policy_page import policy_page, preview_markup
from server.coordinator.dashboard.responses import html, not_found, parse_id, refused
from server.coordinator.exceptions import (
    ConflictError,
    CsrfError,
    PermissionDeniedError,
    PolicyUpdateError,
)
from server.coordinator.schemas import PolicyUpdate
from server.coordinator.services.audit import POLICY_TARGET
from server.coordinator.services.policy_versions import store_policy_version

router = APIRouter(prefix="", tags=["dashboard"], include_in_schema=False)

_SHOWN = 50


def _page(
    session: Session,
    viewer: Viewer,
    *,
    edit: PolicyEdit | None = None,
    preview: Markup | None = None,
    notice: str | None = None,
) -> Markup:
    current = crud.get_current_policy_row(session=session)
    policies, count = crud.list_policies(session=session, limit=_SHOWN)
    if edit is None and viewer.role == "admin":
        edit = PolicyEdit(values={**form_values(current), "note": ""})
    return policy_page(
        viewer=viewer,
        current=current,
        policies=policies,
        count=count,
        actions=list_actions(session=session, target=POLICY_TARGET, limit=20),
        edit=edit,
        preview=preview,
        notice=notice,
    )


@router.get("/policy", response_class=HTMLResponse)
def read_policy_page(
    request: Request, session: SessionDep, viewer: ViewerDep, saved: str | None = None
) -> Response:
    """Current version, history with author, time and note; the editor for admins."""
    if viewer is None:
        return login_redirect(request)
    notice = f"Saved as version {saved}." if saved and saved.isdigit() else None
    return html(_page(session, viewer, notice=notice))


def _store(
    session: Session, viewer: Viewer, update: PolicyUpdate, action: str = "policy-update"
) -> int:
    """Create the next version through the API's service (which records who); its number."""
    return store_policy_version(
        session=session, actor=viewer, policy_in=update, action=action
    ).version


def _checked(request: Request, viewer: Viewer | None, fields: Fields) -> Response | Viewer:
    if viewer is None:
        return login_redirect(request)
    try:
        check_action(request, viewer, fields, admin=True)
    except (CsrfError, PermissionDeniedError) as exc:
        return refused(str(exc), viewer)
    return viewer


@router.post("/policy")
def update_policy_from_form(
    request: Request, session: SessionDep, viewer: ViewerDep, fields: FieldsDep
) -> Response:
    """Preview or save an edit (admin only; an operator's POST is a 403)."""
    checked = _checked(request, viewer, fields)
    if isinstance(checked, Response):
        return checked
    save = fields.get("intent") == "save"
    current = crud.get_current_policy_row(session=session)
    edit = read_policy_edit(fields, current, need_note=save)
    if edit.update is None:
        return html(_page(session, checked, edit=edit), status.HTTP_422_UNPROCESSABLE_ENTITY)
    if not save:
        followers = list_fleet_policy_runs(session=session)
        preview = preview_markup(edit, followers, current.version)
        return html(_page(session, checked, edit=edit, preview=preview))
    try:
        version = _store(session, checked, edit.update)
    except (PolicyUpdateError, ConflictError) as exc:
        session.rollback()
        name = exc.loc[0] if isinstance(exc, PolicyUpdateError) and exc.loc else "form"
        edit.errors[name] = str(exc)
        return html(_page(session, checked, edit=edit), status.HTTP_422_UNPROCESSABLE_ENTITY)
    return RedirectResponse(f"/policy?saved={version}", status_code=status.HTTP_303_SEE_OTHER)


@router.post("/policy/revert/{version}")
def revert_policy_from_form(
    request: Request, session: SessionDep, viewer: ViewerDep, fields: FieldsDep, version: str
) -> Response:
    """Store version ``version``'s values as a new version (admin only)."""
    checked = _checked(request, viewer, fields)
    if isinstance(checked, Response):
        return checked
    parsed = parse_id(version)
    row = get_policy_version(session=session, version=parsed) if parsed is not None else None
    if row is None:
        return not_found("policy version", version, checked)
    note = f"Revert to v{row.version}" + (f": {fields.get('note')}" if fields.get("note") else "")
    new_version = _store(session, checked, revert_update(row, note), "policy-revert")
    return RedirectResponse(f"/policy?saved={new_version}", status_code=status.HTTP_303_SEE_OTHER)
