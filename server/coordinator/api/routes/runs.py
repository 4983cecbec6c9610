"""Runs: create, list, read, stop, rounds and model download."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, Response, status
from sqlalchemy.orm import Session

from server.coordinator import crud
from server.coordinator.api.deps import LauncherDep, Limit, RunDep, SessionDep, Skip
from server.coordinator.exceptions import NotConfiguredError, NotFoundError
from server.coordinator.schemas import (
    ClientRoundPublic,
    ClientRoundsPublic,
    Message,
    RoundPublic,
    RoundsPublic,
    RunCreate,
    RunPublic,
    RunsPublic,
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
def create_run(session: SessionDep, launcher: LauncherDep, run_in: RunCreate) -> RunPublic:
    """Queue a run (status queued); the launcher starts it when an admission slot is free.

    At most ``APTFLEET_MAX_ACTIVE_RUNS`` runs are pending or running at once.
    """
    run = run_launcher.launch_run(session=session, launcher=launcher, run_in=run_in)
    return _public(session, [run])[0]


@router.get("", response_model=RunsPublic)
def read_runs(session: SessionDep, skip: Skip = 0, limit: Limit = 100) -> RunsPublic:
    """One page of runs, newest first."""
    runs, count = crud.list_runs(session=session, skip=skip, limit=limit)
    return RunsPublic(data=_public(session, runs), count=count)


@router.get("/{run_id}", response_model=RunPublic, responses={404: {"model": Message}})
def read_run(session: SessionDep, run: RunDep) -> RunPublic:
    """Status, queue position, progress, latest accuracy and savings of one run."""
    return _public(session, [run])[0]


@router.post(
    "/{run_id}/stop",
    response_model=RunPublic,
    responses={404: {"model": Message}, 409: {"model": Message}},
)
def stop_run(session: SessionDep, launcher: LauncherDep, run: RunDep) -> RunPublic:
    """Stop a queued, pending or running run (a queued one never starts)."""
    run = run_launcher.stop_run(session=session, launcher=launcher, run=run)
    return _public(session, [run])[0]


@router.post(
    "/{run_id}/resume",
    response_model=RunPublic,
    responses={404: {"model": Message}, 409: {"model": Message}, 503: {"model": Message}},
)
def resume_run(session: SessionDep, launcher: LauncherDep, run: RunDep) -> RunPublic:
    """Queue an interrupted, stopped or failed run again.

    It resumes from its latest checkpoint.
    """
    run = run_launcher.resume_run(session=session, launcher=launcher, run=run)
    return _public(session, [run])[0]


@router.get("/{run_id}/rounds", response_model=RoundsPublic, responses={404: {"model": Message}})
def read_rounds(session: SessionDep, run: RunDep) -> RoundsPublic:
    """Every recorded round of the run."""
    rounds = crud.list_rounds(session=session, run_id=run.id)
    return RoundsPublic(data=[RoundPublic.model_validate(r) for r in rounds], count=len(rounds))


@router.get(
    "/{run_id}/clients", response_model=ClientRoundsPublic, responses={404: {"model": Message}}
)
def read_run_clients(session: SessionDep, run: RunDep) -> ClientRoundsPublic:
    """Every device's part in every round, with rejection and failure reasons."""
    rows = crud.list_client_rounds(session=session, run_id=run.id)
    return ClientRoundsPublic(
        data=[ClientRoundPublic.model_validate(r) for r in rows], count=len(rows)
    )


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
