"""Routes of the read-only operator dashboard: ``/``, ``/runs/{id}``, sign-in and its CSS."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse

from server.coordinator import crud
from server.coordinator.api.deps import INT32_MAX, AuthThrottleDep, SessionDep
from server.coordinator.core.security import generate_csrf_token
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
from server.coordinator.dashboard.markup import Markup
from server.coordinator.dashboard.stylesheet import STYLESHEET
from server.coordinator.exceptions import AuthenticationError, CsrfError, TooManyAttemptsError

router = APIRouter(prefix="", tags=["dashboard"], include_in_schema=False)

#: Pages load nothing but the same-origin stylesheet: no script, frame or remote resource.
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: browsers then send the real Origin on the forms' POSTs
    # (no-referrer makes it "null"), which the CSRF check compares with this site
    "Referrer-Policy": "same-origin",
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
    response = _html(
        pages.login_page(next_path=next_path, csrf_token=csrf_token, error=error, notice=notice),
        status_code,
    )
    response.headers.update(headers or {})
    set_login_csrf_cookie(request, response, csrf_token)
    return response


def _refused(message: str) -> HTMLResponse:
    """403 page for a form POST that failed its CSRF checks."""
    return _html(
        pages.error_page(title="Request refused", message=message), status.HTTP_403_FORBIDDEN
    )


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
        return _refused(str(exc))
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
        return _refused(str(exc))
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
        run_id = _run_id(run)
        if run_id is None:
            return _html(
                pages.error_page(
                    title="Run not found", message=f"There is no run {run!r}.", viewer=viewer
                ),
                status.HTTP_404_NOT_FOUND,
            )
        return RedirectResponse(f"/runs/{run_id}", status_code=status.HTTP_303_SEE_OTHER)
    runs, count = crud.list_runs(session=session, limit=_RUNS_SHOWN)
    policies, policy_count = crud.list_policies(session=session, limit=_POLICIES_SHOWN)
    return _html(
        pages.overview_page(
            viewer=viewer,
            runs=runs,
            count=count,
            totals=crud.fleet_totals(session=session),
            policies=policies,
            policy_count=policy_count,
        )
    )


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def read_run_page(
    request: Request, session: SessionDep, viewer: ViewerDep, run_id: str
) -> Response:
    """One run: progress, savings, per-round curves, per-layer bits heatmap, policies."""
    if viewer is None:
        return login_redirect(request)
    parsed = _run_id(run_id)
    run = crud.get_run(session=session, run_id=parsed) if parsed is not None else None
    if run is None:
        return _html(
            pages.error_page(
                title="Run not found", message=f"There is no run {run_id!r}.", viewer=viewer
            ),
            status.HTTP_404_NOT_FOUND,
        )
    policies, policy_count = crud.list_policies(session=session, limit=_POLICIES_SHOWN)
    return _html(
        pages.run_page(
            viewer=viewer,
            run=run,
            rounds=crud.list_rounds(session=session, run_id=run.id),
            summary=crud.precision_summary(session=session, run_id=run.id),
            policies=policies,
            policy_count=policy_count,
        )
    )
