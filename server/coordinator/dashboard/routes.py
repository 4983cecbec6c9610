"""Routes of the console's shell: the runs overview, sign-in and out, CSS, script, cost model."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from server.coordinator import crud
from server.coordinator.api.deps import AuthThrottleDep, SessionDep
from server.coordinator.core.security import generate_csrf_token
from server.coordinator.crud.actions import list_actions, page_actions
from server.coordinator.crud.runs import runs_by_id
from server.coordinator.dashboard import pages
from server.coordinator.dashboard.auth import (
    FormDep,
    ViewerDep,
    check_login_csrf,
    check_session_csrf,
    clear_login_csrf_cookie,
    clear_session_cookie,
    login_redirect,
    safe_next,
    set_login_csrf_cookie,
    set_session_cookie,
    sign_in,
    sign_out,
)
from server.coordinator.dashboard.cost_model import cost_model_page
from server.coordinator.dashboard.responses import failed, html, not_found, parse_id, refused
from server.coordinator.dashboard.script import SCRIPT
from server.coordinator.dashboard.stylesheet import STYLESHEET
from server.coordinator.exceptions import (
    AuthenticationError,
    CsrfError,
    InvalidQueryError,
    TooManyAttemptsError,
)

router = APIRouter(prefix="", tags=["dashboard"], include_in_schema=False)

_RUNS_SHOWN = 100
_POLICIES_SHOWN = 20
_ACTIONS_SHOWN = 10
#: Rows per key page of the actions page.
ACTIONS_PER_PAGE = 50


@router.get("/dashboard.css")
def read_stylesheet() -> Response:
    """The dashboard stylesheet (public: it holds no fleet data)."""
    return Response(
        STYLESHEET,
        media_type="text/css",
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


def _login_page(
    request: Request,
    *,
    next_path: str,
    status_code: int = status.HTTP_200_OK,
    error: str | None = None,
    notice: str | None = None,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """The sign-in form with a fresh CSRF token, also set in its cookie."""
    csrf_token = generate_csrf_token()
    response = html(
        pages.login_page(next_path=next_path, csrf_token=csrf_token, error=error, notice=notice),
        status_code,
    )
    response.headers.update(headers or {})
    set_login_csrf_cookie(request, response, csrf_token)
    return response


@router.get("/dashboard.js")
def read_script() -> Response:
    """The live-update script (public: it holds no fleet data)."""
    return Response(
        SCRIPT,
        media_type="text/javascript",
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


@router.get("/cost-model", response_class=HTMLResponse)
def read_cost_model(request: Request, viewer: ViewerDep) -> Response:
    """Which figures are measured and which modelled; the energy model and its citation."""
    if viewer is None:
        return login_redirect(request)
    return html(cost_model_page(viewer=viewer))


@router.get("/login", response_class=HTMLResponse)
def read_login_page(
    request: Request,
    next_path: Annotated[str | None, Query(alias="next")] = None,
    expired: bool = False,
) -> HTMLResponse:
    """The sign-in form."""
    notice = "Your session ended; sign in again." if expired else None
    return _login_page(request, next_path=safe_next(next_path), notice=notice)


@router.post("/login")
def create_login_session(
    request: Request, session: SessionDep, throttle: AuthThrottleDep, form: FormDep
) -> Response:
    """Check the token and open a server-side session.

    Answers 403 when cross-site or without the form's CSRF token, a 401 page when the token is
    invalid, and 429 after too many failures.
    """
    try:
        check_login_csrf(request, form)
    except CsrfError as exc:
        return refused(str(exc))
    try:
        session_id = sign_in(request, session, throttle, form)
    except TooManyAttemptsError as exc:
        return _login_page(
            request,
            next_path=form.next,
            error=str(exc),
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            headers={"Retry-After": str(exc.retry_after)},
        )
    except AuthenticationError as exc:
        return _login_page(
            request, next_path=form.next, error=str(exc), status_code=status.HTTP_401_UNAUTHORIZED
        )
    sign_out(request, session)  # a previous session of this browser ends here
    response = RedirectResponse(form.next, status_code=status.HTTP_303_SEE_OTHER)
    set_session_cookie(request, response, session_id)
    clear_login_csrf_cookie(response)
    return response


@router.post("/logout")
def delete_login_session(request: Request, session: SessionDep, form: FormDep) -> Response:
    """End the session server-side, forget its cookie and go back to the sign-in form."""
    try:
        check_session_csrf(request, form)
    except CsrfError as exc:
        return refused(str(exc))
    sign_out(request, session)
    response = RedirectResponse("/login", status_code=status.HTTP_303_SEE_OTHER)
    clear_session_cookie(response)
    return response


@router.get("/", response_class=HTMLResponse)
def read_overview(
    request: Request, session: SessionDep, viewer: ViewerDep, run: str | None = None
) -> Response:
    """Fleet totals, runs with status and progress, and the policy history.

    ``/?run=ID`` redirects to the run's page ``/runs/ID``.
    """
    if viewer is None:
        return login_redirect(request)
    if run is not None:
        run_id = parse_id(run)
        if run_id is None:
            return not_found("run", run, viewer)
        return RedirectResponse(f"/runs/{run_id}", status_code=status.HTTP_303_SEE_OTHER)
    runs, count = crud.list_runs(session=session, limit=_RUNS_SHOWN)
    policies, policy_count = crud.list_policies(session=session, limit=_POLICIES_SHOWN)
    return html(
        pages.overview_page(
            viewer=viewer,
            runs=runs,
            count=count,
            totals=crud.fleet_totals(session=session),
            policies=policies,
            policy_count=policy_count,
            actions=list_actions(session=session, limit=_ACTIONS_SHOWN),
        )
    )


@router.get("/overview/live")
def read_overview_live(
    session: SessionDep,
    viewer: ViewerDep,
    run: Annotated[list[str] | None, Query(max_length=_RUNS_SHOWN)] = None,
) -> Response:
    """The overview's live summary: fleet totals, the run count, the state of runs ``run``.

    The overview's script asks only for the runs it shows as active and stops when none
    is, so an open tab costs a few hundred bytes a poll however long the runs are.
    """
    if viewer is None:
        return JSONResponse({"detail": "Sign in first."}, status_code=401)
    ids = list(dict.fromkeys(i for i in (parse_id(v) for v in run or []) if i is not None))
    runs, count = runs_by_id(session=session, run_ids=ids)
    summary = pages.overview_summary(
        runs=runs, count=count, totals=crud.fleet_totals(session=session)
    )
    return JSONResponse(summary, headers={"Cache-Control": "no-store"})


@router.get("/actions", response_class=HTMLResponse)
def read_actions_page(
    request: Request,
    session: SessionDep,
    viewer: ViewerDep,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    """Every recorded action, console or API, with who took it; one key page at a time."""
    if viewer is None:
        return login_redirect(request)
    try:
        found = page_actions(session=session, cursor=cursor or None, limit=ACTIONS_PER_PAGE)
    except InvalidQueryError as exc:
        return failed("Bad page cursor", exc.message, viewer, 422)
    return html(pages.actions_page(viewer=viewer, actions=found, first=not cursor))
