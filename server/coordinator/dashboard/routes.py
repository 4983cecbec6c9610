"""Routes of the read-only operator dashboard: ``/``, ``/runs/{id}``, sign-in and its CSS."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse

from server.coordinator import crud
from server.coordinator.api.deps import INT32_MAX, SessionDep
from server.coordinator.dashboard import pages
from server.coordinator.dashboard.auth import (
    LoginFormDep,
    ViewerDep,
    clear_login_cookie,
    login_redirect,
    safe_next,
    set_login_cookie,
)
from server.coordinator.dashboard.markup import Markup
from server.coordinator.dashboard.stylesheet import STYLESHEET

router = APIRouter(prefix="", tags=["dashboard"], include_in_schema=False)

#: Pages load nothing but the same-origin stylesheet: no script, frame or remote resource.
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_RUNS_SHOWN = 100
_POLICIES_SHOWN = 20


def _html(document: Markup, status_code: int = status.HTTP_200_OK) -> HTMLResponse:
    return HTMLResponse(document, status_code=status_code, headers=_HEADERS)


def _run_id(value: str | None) -> int | None:
    """A run id from a URL, or None when it cannot name a run (so the page answers 404)."""
    if value is None or not value.isdigit() or len(value) > 10:
        return None
    run_id = int(value)
    return run_id if 1 <= run_id <= INT32_MAX else None


@router.get("/dashboard.css")
def read_stylesheet() -> Response:
    """The dashboard stylesheet (public: it holds no fleet data)."""
    return Response(STYLESHEET, media_type="text/css",
                    headers={"Cache-Control": "public, max-age=3600",
                             "X-Content-Type-Options": "nosniff"})


@router.get("/login", response_class=HTMLResponse)
def read_login_page(next_path: Annotated[str | None, Query(alias="next")] = None,
                    expired: bool = False) -> HTMLResponse:
    """The sign-in form."""
    notice = "Your token is no longer valid; sign in again." if expired else None
    return _html(pages.login_page(next_path=safe_next(next_path), notice=notice))


@router.post("/login")
def create_login_session(request: Request, session: SessionDep,
                         form: LoginFormDep) -> Response:
    """Check the submitted token and keep it in the session cookie (401 page if invalid)."""
    token = (crud.authenticate_token(session=session, token=form.token)
             if form.token else None)
    if token is None:
        return _html(pages.login_page(next_path=form.next,
                                      error="Invalid or revoked token."),
                     status.HTTP_401_UNAUTHORIZED)
    response = RedirectResponse(form.next, status_code=status.HTTP_303_SEE_OTHER)
    set_login_cookie(request, response, form.token)
    return response


@router.post("/logout")
def delete_login_session() -> Response:
    """Forget the session cookie and go back to the sign-in form."""
    response = RedirectResponse("/login", status_code=status.HTTP_303_SEE_OTHER)
    clear_login_cookie(response)
    return response


@router.get("/", response_class=HTMLResponse)
def read_overview(request: Request, session: SessionDep, viewer: ViewerDep,
                  run: str | None = None) -> Response:
    """Fleet totals, runs with status and progress, and the policy history.

    ``/?run=ID`` redirects to the run's page ``/runs/ID``.
    """
    if viewer is None:
        return login_redirect(request)
    if run is not None:
        run_id = _run_id(run)
        if run_id is None:
            return _html(pages.error_page(title="Run not found",
                                          message=f"There is no run {run!r}.", viewer=viewer),
                         status.HTTP_404_NOT_FOUND)
        return RedirectResponse(f"/runs/{run_id}", status_code=status.HTTP_303_SEE_OTHER)
    runs, count = crud.list_runs(session=session, limit=_RUNS_SHOWN)
    policies, policy_count = crud.list_policies(session=session, limit=_POLICIES_SHOWN)
    return _html(pages.overview_page(
        viewer=viewer, runs=runs, count=count, totals=crud.fleet_totals(session=session),
        policies=policies, policy_count=policy_count))


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def read_run_page(request: Request, session: SessionDep, viewer: ViewerDep,
                  run_id: str) -> Response:
    """One run: progress, savings, per-round curves, per-layer bits heatmap, policies."""
    if viewer is None:
        return login_redirect(request)
    parsed = _run_id(run_id)
    run = crud.get_run(session=session, run_id=parsed) if parsed is not None else None
    if run is None:
        return _html(pages.error_page(title="Run not found",
                                      message=f"There is no run {run_id!r}.", viewer=viewer),
                     status.HTTP_404_NOT_FOUND)
    policies, policy_count = crud.list_policies(session=session, limit=_POLICIES_SHOWN)
    return _html(pages.run_page(
        viewer=viewer, run=run, rounds=crud.list_rounds(session=session, run_id=run.id),
        summary=crud.precision_summary(session=session, run_id=run.id), policies=policies,
        policy_count=policy_count))
