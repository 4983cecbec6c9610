"""Per-layer precision history of a run, raw and summarised."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from server.coordinator import crud
from server.coordinator.api.deps import INT32_MAX, Cursor, Limit, RunDep, SessionDep, Skip
from server.coordinator.schemas import (
    LayerPrecisionsPublic,
    Message,
    PrecisionSummariesPublic,
)

router = APIRouter(prefix="/runs", tags=["precision"])


@router.get(
    "/{run_id}/precision", response_model=LayerPrecisionsPublic, responses={404: {"model": Message}}
)
def read_precision(
    session: SessionDep,
    run: RunDep,
    layer: Annotated[str | None, Query(max_length=200)] = None,
    device: Annotated[
        int | None, Query(ge=1, le=INT32_MAX, description="Device id (not node id).")
    ] = None,
    from_round: Annotated[int | None, Query(ge=1, le=INT32_MAX)] = None,
    to_round: Annotated[int | None, Query(ge=1, le=INT32_MAX)] = None,
    cursor: Cursor = None,
    skip: Skip = 0,
    limit: Limit = 1000,
) -> LayerPrecisionsPublic:
    """Bits, exponent and Gavg per layer, device and round (bounds inclusive).

    One page ordered by round, device id and layer; follow ``next_cursor``.
    """
    page = crud.page_layer_precision(
        session=session,
        run_id=run.id,
        layer=layer,
        device_id=device,
        from_round=from_round,
        to_round=to_round,
        cursor=cursor,
        skip=skip,
        limit=limit,
    )
    return LayerPrecisionsPublic.model_validate(page.fields())


@router.get(
    "/{run_id}/precision/summary",
    response_model=PrecisionSummariesPublic,
    responses={404: {"model": Message}},
)
def read_precision_summary(
    session: SessionDep,
    run: RunDep,
    layer: Annotated[str | None, Query(max_length=200)] = None,
    from_round: Annotated[int | None, Query(ge=1, le=INT32_MAX)] = None,
    to_round: Annotated[int | None, Query(ge=1, le=INT32_MAX)] = None,
    cursor: Cursor = None,
    limit: Limit = 1000,
) -> PrecisionSummariesPublic:
    """Min / mean / max bits and mean Gavg over devices, per layer and round.

    Summarised when each round is stored, so a page costs the same at round 5 and at round
    500. One page ordered by round and layer; follow ``next_cursor``.
    """
    page = crud.page_precision_summary(
        session=session,
        run_id=run.id,
        layer=layer,
        from_round=from_round,
        to_round=to_round,
        cursor=cursor,
        limit=limit,
    )
    return PrecisionSummariesPublic.model_validate(page.fields())
