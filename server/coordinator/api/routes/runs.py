"""Runs: create, list, read, stop, rounds and model download."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, Response, status

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

router = APIRouter(prefix="/runs", tags=["runs"])

_OCTET = "application/octet-stream"


@router.post("", response_model=RunPublic, status_code=status.HTTP_201_CREATED,
             responses={400: {"model": Message, "description": "The body is not valid JSON."},
                        503: {"model": Message}})
def create_run(session: SessionDep, launcher: LauncherDep, run_in: RunCreate) -> RunPublic:
    """Store a run (status pending) and hand it to the run launcher."""
    run = run_launcher.launch_run(session=session, launcher=launcher, run_in=run_in)
    return RunPublic.model_validate(run)


@router.get("", response_model=RunsPublic)
def read_runs(session: SessionDep, skip: Skip = 0, limit: Limit = 100) -> RunsPublic:
    """One page of runs, newest first."""
    runs, count = crud.list_runs(session=session, skip=skip, limit=limit)
    return RunsPublic(data=[RunPublic.model_validate(run) for run in runs], count=count)


@router.get("/{run_id}", response_model=RunPublic, responses={404: {"model": Message}})
def read_run(run: RunDep) -> RunPublic:
    """Status, progress, latest accuracy and savings of one run."""
    return RunPublic.model_validate(run)


@router.post("/{run_id}/stop", response_model=RunPublic,
             responses={404: {"model": Message}, 409: {"model": Message}})
def stop_run(session: SessionDep, launcher: LauncherDep, run: RunDep) -> RunPublic:
    """Stop a pending or running run."""
    run = run_launcher.stop_run(session=session, launcher=launcher, run=run)
    return RunPublic.model_validate(run)


@router.post("/{run_id}/resume", response_model=RunPublic,
             responses={404: {"model": Message}, 409: {"model": Message},
                        503: {"model": Message}})
def resume_run(session: SessionDep, launcher: LauncherDep, run: RunDep) -> RunPublic:
    """Resume an interrupted, stopped or failed run from its latest checkpoint."""
    run = run_launcher.resume_run(session=session, launcher=launcher, run=run)
    return RunPublic.model_validate(run)


@router.get("/{run_id}/rounds", response_model=RoundsPublic,
            responses={404: {"model": Message}})
def read_rounds(session: SessionDep, run: RunDep) -> RoundsPublic:
    """Every recorded round of the run."""
    rounds = crud.list_rounds(session=session, run_id=run.id)
    return RoundsPublic(data=[RoundPublic.model_validate(r) for r in rounds], count=len(rounds))


@router.get("/{run_id}/clients", response_model=ClientRoundsPublic,
            responses={404: {"model": Message}})
def read_run_clients(session: SessionDep, run: RunDep) -> ClientRoundsPublic:
    """Every device's part in every round, with rejection and failure reasons."""
    rows = crud.list_client_rounds(session=session, run_id=run.id)
    return ClientRoundsPublic(data=[ClientRoundPublic.model_validate(r) for r in rows],
                              count=len(rows))


@router.get("/{run_id}/model", response_class=Response,
            responses={200: {"content": {_OCTET: {}}}, 404: {"model": Message},
                       501: {"model": Message}})
def read_model(request: Request, session: SessionDep, run: RunDep,
               format: Literal["packed", "torch"] = "packed") -> Response:
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
                "coordinator; download format=packed instead.")
        payload, suffix = converter(checkpoint.packed, run), "pt"
    filename = f"run-{run.id}-round-{checkpoint.round}.{suffix}"
    return Response(content=payload, media_type=_OCTET,
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})
