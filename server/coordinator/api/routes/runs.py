"""Runs: create, list, read, stop, rounds and model download."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response, status
from sqlalchemy.orm import Session

from server.coordinator import crud
from server.coordinator.api.deps import (
    INT32_MAX,
    CurrentToken,
    Cursor,
    LauncherDep,
    Limit,
    RunDep,
    SessionDep,
    Skip,
)
from server.coordinator.exceptions import NotConfiguredError, NotFoundError
from server.coordinator.schemas import (
    ClientRoundsPublic,
    Message,
    RoundPublic,
    RoundsPublic,
    RunCreate,
    RunPublic,
    RunsPublic,
    RunSummaryPublic,
)
from server.coordinator.services import launcher as run_launcher
from server.coordinator.tables import Run

router = APIRouter(prefix="/runs", tags=["runs"])

_OCTET = "application/octet-stream"


def _public(session: Session, runs: list[Run]) -> list[RunPublic]:
    """The runs as the API shows them, with their queue positions."""
    positions = (
        crud.queue_positions(session=session) if any(run.status == "queued" for run in runs) else {}
    )
    return [
        RunPublic.model_validate(run).model_copy(update={"queue_position": positions.get(run.id)})
        for run in runs
    ]


@router.post(
    "",
    response_model=RunPublic,
    status_code=status.HTTP_201_CREATED,
    responses={
        400: {"model": Message, "description": "The body is not valid JSON."},
        503: {"model": Message},
    },
)
def create_run(
    session: SessionDep, launcher: LauncherDep, token: CurrentToken, run_in: RunCreate
) -> RunPublic:
    """Queue a run (status queued); the launcher starts it when an admission slot is free.

    At most ``APTFLEET_MAX_ACTIVE_RUNS`` runs are pending or running at once. The token's
    name and role are recorded as the run's ``start`` action.
    """
    run = run_launcher.launch_run(session=session, launcher=launcher, run_in=run_in, actor=token)
    return _public(session, [run])[0]


@router.get("", response_model=RunsPublic)
def read_runs(
    session: SessionDep, cursor: Cursor = None, skip: Skip = 0, limit: Limit = 100
) -> RunsPublic:
    """One page of runs, newest first; follow ``next_cursor`` for the next page."""
    page = crud.page_runs(session=session, cursor=cursor, skip=skip, limit=limit)
    return RunsPublic(
        data=_public(session, page.data), count=page.count, next_cursor=page.next_cursor
    )


@router.get("/{run_id}", response_model=RunPublic, responses={404: {"model": Message}})
def read_run(session: SessionDep, run: RunDep) -> RunPublic:
    """Status, queue position, progress, latest accuracy and savings of one run."""
    return _public(session, [run])[0]


@router.post(
    "/{run_id}/stop",
    response_model=RunPublic,
    responses={404: {"model": Message}, 409: {"model": Message}},
)
def stop_run(
    session: SessionDep, launcher: LauncherDep, token: CurrentToken, run: RunDep
) -> RunPublic:
    """Stop a queued, pending or running run (a queued one never starts); records who."""
    run = run_launcher.stop_run(session=session, launcher=launcher, run=run, actor=token)
    return _public(session, [run])[0]


@router.post(
    "/{run_id}/resume",
    response_model=RunPublic,
    responses={404: {"model": Message}, 409: {"model": Message}, 503: {"model": Message}},
)
def resume_run(
    session: SessionDep, launcher: LauncherDep, token: CurrentToken, run: RunDep
) -> RunPublic:
    """Queue an interrupted, stopped or failed run again; records who.

    It resumes from its latest checkpoint.
    """
    run = run_launcher.resume_run(session=session, launcher=launcher, run=run, actor=token)
    return _public(session, [run])[0]


@router.get(
    "/{run_id}/summary", response_model=RunSummaryPublic, responses={404: {"model": Message}}
)
def read_run_summary(session: SessionDep, run: RunDep) -> RunSummaryPublic:
    """State, totals and latest round of the run: cheap to poll at any fleet size."""
    totals = crud.run_totals(session=session, run_id=run.id)
    latest = totals.pop("latest_round")
    public = _public(session, [run])[0]
    return RunSummaryPublic(
        **public.model_dump(
            include={"id", "status", "rounds", "current_round", "progress", "latest_accuracy"}
        ),
        queue_position=public.queue_position,
        finished_at=run.finished_at,
        latest_round=None if latest is None else RoundPublic.model_validate(latest),
        **totals,
    )


@router.get("/{run_id}/rounds", response_model=RoundsPublic, responses={404: {"model": Message}})
def read_rounds(
    session: SessionDep, run: RunDep, cursor: Cursor = None, limit: Limit = 100
) -> RoundsPublic:
    """One page of the run's recorded rounds, in round order."""
    page = crud.page_rounds(session=session, run_id=run.id, cursor=cursor, limit=limit)
    return RoundsPublic.model_validate(page.fields(), from_attributes=True)


@router.get(
    "/{run_id}/clients", response_model=ClientRoundsPublic, responses={404: {"model": Message}}
)
def read_run_clients(
    session: SessionDep,
    run: RunDep,
    device: Annotated[
        int | None, Query(ge=1, le=INT32_MAX, description="Device id (not node id).")
    ] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> ClientRoundsPublic:
    """One page of the devices' parts in the run's rounds, with rejection and failure reasons.

    Ordered by round and device id.
    """
    page = crud.page_client_rounds(
        session=session, run_id=run.id, device_id=device, cursor=cursor, limit=limit
    )
    return ClientRoundsPublic.model_validate(page.fields())


@router.get(
    "/{run_id}/model",
    response_class=Response,
    responses={200: {"content": {_OCTET: {}}}, 404: {"model": Message}, 501: {"model": Message}},
)
def read_model(
    request: Request,
    session: SessionDep,
    run: RunDep,
    format: Literal["packed", "torch"] = "packed",
) -> Response:
    """The latest checkpoint: packed integer codes, or a torch file via the converter."""
    checkpoint = crud.get_latest_checkpoint(session=session, run_id=run.id)
    if checkpoint is None:
        raise NotFoundError(f"Run {run.id} has no checkpoint yet")
    payload, suffix = checkpoint.packed, "apt"
    if format == "torch":
        converter = getattr(request.app.state, "model_converter", None)
        if converter is None:
            raise NotConfiguredError(
                "format=torch needs a model converter and none is configured on this "
                "coordinator; download format=packed instead."
            )
        payload, suffix = converter(checkpoint.packed, run), "pt"
    filename = f"run-{run.id}-round-{checkpoint.round}.{suffix}"
    return Response(
        content=payload,
        media_type=_OCTET,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
