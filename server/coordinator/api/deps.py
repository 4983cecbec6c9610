"""Dependencies shared by the routes: database session, auth, launcher, run lookup."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from server.coordinator import crud
from server.coordinator.core.db import begin_write
from server.coordinator.core.pagination import MAX_CURSOR_CHARS, MAX_PAGE_SIZE
from server.coordinator.core.throttle import AuthFailureThrottle
from server.coordinator.crud.tokens import CREATE_COMMAND
from server.coordinator.exceptions import (
    AuthenticationError,
    NotFoundError,
    PermissionDeniedError,
)
from server.coordinator.services.authentication import authenticate
from server.coordinator.services.launcher import RunLauncher
from server.coordinator.tables import ApiToken, Run

#: Ids and counts beyond a 32-bit INTEGER column would make the database raise (a 500);
#: bounding them in the request turns such input into a 422 that names the parameter.
INT32_MAX = 2**31 - 1

RunId = Annotated[int, Path(ge=1, le=INT32_MAX)]
DeviceId = Annotated[int, Path(ge=1, le=INT32_MAX)]
Skip = Annotated[
    int, Query(ge=0, le=INT32_MAX, description="Rows to drop first (prefer 'cursor').")
]
Limit = Annotated[
    int, Query(ge=1, le=MAX_PAGE_SIZE, description=f"Page size, at most {MAX_PAGE_SIZE}.")
]
Cursor = Annotated[
    str | None,
    Query(
        max_length=MAX_CURSOR_CHARS,
        description="The 'next_cursor' of the previous page; leave out for the first page.",
    ),
]

_bearer = HTTPBearer(
    auto_error=False,
    description=(
        f"A token from '{CREATE_COMMAND}' (or '--role operator'); 'aptfleet token list' shows "
        "the tokens, 'aptfleet token revoke ID' ends one."
    ),
)


#: Requests that only read; every other method gets write transactions.
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_db(request: Request) -> Iterator[Session]:
    """A session from the app's factory, closed after the request.

    A request that may write (any method but GET, HEAD, OPTIONS) gets write transactions
    (``core.db.begin_write``): on SQLite concurrent writers then wait their turn instead of
    failing with ``database is locked``.
    """
    with request.app.state.session_factory() as session:
        if request.method not in _READ_METHODS:
            begin_write(session)
        yield session


SessionDep = Annotated[Session, Depends(get_db)]


def client_address(request: Request) -> str:
    """The client's address, the unit of authentication throttling."""
    return request.client.host if request.client is not None else "unknown"


def get_auth_throttle(request: Request) -> AuthFailureThrottle:
    """The app's authentication failure counts."""
    throttle: AuthFailureThrottle = request.app.state.auth_throttle
    return throttle


AuthThrottleDep = Annotated[AuthFailureThrottle, Depends(get_auth_throttle)]


def get_current_token(
    request: Request,
    session: SessionDep,
    throttle: AuthThrottleDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiToken:
    """The token of the request's ``Authorization: Bearer`` header.

    401 if missing, unknown, revoked or expired; 429 once the client's address failed
    ``APTFLEET_AUTH_FAILURE_LIMIT`` times within the window.
    """
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise AuthenticationError(
            "Missing bearer token: send 'Authorization: Bearer <token>' with a token from "
            f"'{CREATE_COMMAND}'."
        )
    return authenticate(
        session=session,
        secret=credentials.credentials,
        address=client_address(request),
        throttle=throttle,
    )


CurrentToken = Annotated[ApiToken, Depends(get_current_token)]


def require_admin(token: CurrentToken) -> ApiToken:
    """The request's token if its role is admin (403 otherwise)."""
    if token.role != "admin":
        raise PermissionDeniedError(
            f"This action needs the admin role; token '{token.name}' has role '{token.role}'."
        )
    return token


AdminToken = Annotated[ApiToken, Depends(require_admin)]


def get_launcher(request: Request) -> RunLauncher:
    """The app's run launcher."""
    launcher: RunLauncher = request.app.state.launcher
    return launcher


LauncherDep = Annotated[RunLauncher, Depends(get_launcher)]


def get_run_or_404(run_id: RunId, session: SessionDep) -> Run:
    """The run of the ``{run_id}`` path parameter (404 if unknown)."""
    run = crud.get_run(session=session, run_id=run_id)
    if run is None:
        raise NotFoundError(f"Run {run_id} not found")
    return run


RunDep = Annotated[Run, Depends(get_run_or_404)]
