"""Dependencies shared by the routes: database session, auth, launcher, run lookup."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from server.coordinator import crud
from server.coordinator.exceptions import (
    AuthenticationError,
    NotFoundError,
    PermissionDeniedError,
)
from server.coordinator.services.launcher import RunLauncher
from server.coordinator.tables import ApiToken, Run

#: Ids and counts beyond a 32-bit INTEGER column would make the database raise (a 500);
#: bounding them in the request turns such input into a 422 that names the parameter.
INT32_MAX = 2**31 - 1

RunId = Annotated[int, Path(ge=1, le=INT32_MAX)]
DeviceId = Annotated[int, Path(ge=1, le=INT32_MAX)]
Skip = Annotated[int, Query(ge=0, le=INT32_MAX)]
Limit = Annotated[int, Query(ge=1, le=1000)]

_bearer = HTTPBearer(auto_error=False, description="Token from 'aptfleet server token create'.")


def get_db(request: Request) -> Iterator[Session]:
    """A session from the app's factory, closed after the request."""
    with request.app.state.session_factory() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_db)]


def get_current_token(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiToken:
    """The token of the request's ``Authorization: Bearer`` header (401 if missing or bad)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise AuthenticationError(
            "Missing bearer token: send 'Authorization: Bearer <token>'.")
    token = crud.authenticate_token(session=session, token=credentials.credentials)
    if token is None:
        raise AuthenticationError("Invalid or revoked bearer token.")
    return token


CurrentToken = Annotated[ApiToken, Depends(get_current_token)]


def require_admin(token: CurrentToken) -> ApiToken:
    """The request's token if its role is admin (403 otherwise)."""
    if token.role != "admin":
        raise PermissionDeniedError(f"This action needs the admin role; token '{token.name}' "
                                    f"has role '{token.role}'.")
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
