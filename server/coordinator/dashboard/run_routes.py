"""Console routes of runs: the run page, start form, stop, resume, live summary, downloads."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from sqlalchemy.orm import Session

from server.coordinator import crud
from server.coordinator.api.deps import LauncherDep, SessionDep
from server.coordinator.api.routes.runs import read_run_summary
from server.coordinator.crud.actions import list_actions
from server.coordinator.dashboard.auth import Viewer, ViewerDep, login_redirect
from server.coordinator.dashboard.forms import FieldsDep, check_action
from server.coordinator.dashboard.responses import (
    HEADERS,
    failed,
    html,
    not_found,
    parse_id,
    refused,
)
from server.coordinator.dashboard.run_controls import new_run_page, run_create_from_form
from server.coordinator.dashboard.run_page import RunView, run_page
from server.coordinator.exceptions import (
    CsrfError,
    LaunchError,
    PermissionDeniedError,
    RunStateError,
)
from server.coordinator.services import launcher as run_launcher
from server.coordinator.tables import Run

router = APIRouter(prefix="", tags=["dashboard"], include_in_schema=False)

_POLICIES_SHOWN = 20
_OCTET = "application/octet-stream"


def _find_run(session: Session, run_id: str) -> Run | None:
    parsed = parse_id(run_id)
    return crud.get_run(session=session, run_id=parsed) if parsed is not None else None


def _queue_position(session: Session, run: Run) -> int | None:
    if run.status != "queued":
        return None
    return crud.queue_positions(session=session).get(run.id)


def _run_view(session: Session, run: Run) -> RunView:
    policies, policy_count = crud.list_policies(session=session, limit=_POLICIES_SHOWN)
    return RunView(
        run=run,
        rounds=crud.list_rounds(session=session, run_id=run.id),
        summary=crud.precision_summary(session=session, run_id=run.id),
        policies=policies,
        policy_count=policy_count,
        queue_position=_queue_position(session, run),
        has_checkpoint=crud.get_latest_checkpoint(session=session, run_id=run.id) is not None,
        actions=list_actions(session=session, target=f"run:{run.id}"),
        totals=crud.run_totals(session=session, run_id=run.id),
    )


@router.get("/runs/new", response_class=HTMLResponse)
def read_new_run_form(request: Request, viewer: ViewerDep) -> Response:
    """The start form (operators and admins)."""
    if viewer is None:
        return login_redirect(request)
    return html(new_run_page(viewer=viewer))


@router.post("/runs/new")
def create_run_from_form(
    request: Request,
    session: SessionDep,
    launcher: LauncherDep,
    viewer: ViewerDep,
    fields: FieldsDep,
) -> Response:
    """Start a run from the form: 422 with each field's error, or 303 to the run's page."""
    if viewer is None:
        return login_redirect(request)
    try:
        check_action(request, viewer, fields)
    except CsrfError as exc:
        return refused(str(exc), viewer)
    run_in, errors = run_create_from_form(fields)
    if run_in is None:
        page = new_run_page(viewer=viewer, values=fields.values, errors=errors)
        return html(page, status.HTTP_422_UNPROCESSABLE_ENTITY)
    try:
        run = run_launcher.launch_run(
            session=session, launcher=launcher, run_in=run_in, actor=viewer
        )
    except LaunchError as exc:
        return failed("Run not started", str(exc), viewer, status.HTTP_503_SERVICE_UNAVAILABLE)
    return RedirectResponse(f"/runs/{run.id}", status_code=status.HTTP_303_SEE_OTHER)


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def read_run_page(
    request: Request, session: SessionDep, viewer: ViewerDep, run_id: str
) -> Response:
    """One run: facts, controls, savings, curves, per-layer bits heatmap, actions, policies."""
    if viewer is None:
        return login_redirect(request)
    run = _find_run(session, run_id)
    if run is None:
        return not_found("run", run_id, viewer)
    return html(run_page(viewer=viewer, view=_run_view(session, run)))


def _control(
    request: Request,
    session: Session,
    launcher: Any,
    viewer: Viewer | None,
    fields: Any,
    run_id: str,
    action: Literal["stop", "resume"],
) -> Response:
    """Stop or resume through the API's service (which records who); 303 back, or the reason."""
    if viewer is None:
        return login_redirect(request)
    try:
        check_action(request, viewer, fields)
    except (CsrfError, PermissionDeniedError) as exc:
        return refused(str(exc), viewer)
    run = _find_run(session, run_id)
    if run is None:
        return not_found("run", run_id, viewer)
    verb = run_launcher.stop_run if action == "stop" else run_launcher.resume_run
    try:
        run = verb(session=session, launcher=launcher, run=run, actor=viewer)
    except RunStateError as exc:
        return failed(
            f"Run not {action}ped" if action == "stop" else "Run not resumed",
            str(exc),
            viewer,
            status.HTTP_409_CONFLICT,
        )
    except LaunchError as exc:
        return failed(f"Run not {action}d", str(exc), viewer, status.HTTP_503_SERVICE_UNAVAILABLE)
    return RedirectResponse(f"/runs/{run.id}", status_code=status.HTTP_303_SEE_OTHER)


@router.post("/runs/{run_id}/stop")
def stop_run_from_form(
    request: Request,
    session: SessionDep,
    launcher: LauncherDep,
    viewer: ViewerDep,
    fields: FieldsDep,
    run_id: str,
) -> Response:
    """Stop a queued, pending or running run (409 page when it already ended)."""
    return _control(request, session, launcher, viewer, fields, run_id, "stop")


@router.post("/runs/{run_id}/resume")
def resume_run_from_form(
    request: Request,
    session: SessionDep,
    launcher: LauncherDep,
    viewer: ViewerDep,
    fields: FieldsDep,
    run_id: str,
) -> Response:
    """Queue an interrupted, stopped or failed run again (409 page otherwise)."""
    return _control(request, session, launcher, viewer, fields, run_id, "resume")


@router.get("/runs/{run_id}/live")
def read_run_live(session: SessionDep, viewer: ViewerDep, run_id: str) -> Response:
    """The API's run summary (``GET /api/v1/runs/{id}/summary``) for a signed-in browser.

    Its size does not grow with the rounds: the run page polls it instead of reloading.
    """
    if viewer is None:
        return JSONResponse({"detail": "Sign in first."}, status_code=401)
    run = _find_run(session, run_id)
    if run is None:
        return JSONResponse({"detail": f"Run {run_id!r} not found"}, status_code=404)
    summary = read_run_summary(session=session, run=run)
    return JSONResponse(summary.model_dump(mode="json"), headers={"Cache-Control": "no-store"})


@router.get("/runs/{run_id}/model")
def read_run_model(
    request: Request,
    session: SessionDep,
    viewer: ViewerDep,
    run_id: str,
    format: Literal["packed", "torch"] = "packed",
) -> Response:
    """The run's latest checkpoint for a signed-in browser: packed codes or a float torch file."""
    if viewer is None:
        return login_redirect(request)
    run = _find_run(session, run_id)
    if run is None:
        return not_found("run", run_id, viewer)
    checkpoint = crud.get_latest_checkpoint(session=session, run_id=run.id)
    if checkpoint is None:
        return not_found("model of run", run_id, viewer)
    payload, suffix = checkpoint.packed, "apt"
    if format == "torch":
        converter = getattr(request.app.state, "model_converter", None)
        if converter is None:
            message = "This coordinator has no model converter: download the packed model."
            return failed("No float export", message, viewer, status.HTTP_501_NOT_IMPLEMENTED)
        payload, suffix = converter(checkpoint.packed, run), "pt"
    filename = f"run-{run.id}-round-{checkpoint.round}.{suffix}"
    headers = {**HEADERS, "Content-Disposition": f'attachment; filename="{filename}"'}
    return Response(content=payload, media_type=_OCTET, headers=headers)
