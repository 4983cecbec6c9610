"""Console routes that read across runs and devices: the comparison and the fleet pages."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from server.coordinator import crud
from server.coordinator.api.deps import SessionDep
from server.coordinator.crud import fleet
from server.coordinator.dashboard.auth import ViewerDep, login_redirect
from server.coordinator.dashboard.compare_page import MAX_RUNS, ComparedRun, compare_page
from server.coordinator.dashboard.fleet_page import (
    DeviceHistory,
    DeviceRow,
    FleetFilters,
    device_page,
    devices_page,
)
from server.coordinator.dashboard.responses import failed, html, not_found, parse_id
from server.coordinator.exceptions import InvalidQueryError
from server.coordinator.services.policy import effective_policy
from server.coordinator.tables import Policy

router = APIRouter(prefix="", tags=["dashboard"], include_in_schema=False)

_CHOICES = 50
_DEVICES_PER_PAGE = 50
_HEATMAP_RUNS = 5
_CHART_RUNS = 3
#: Rows of a device's rounds table per key page.
DEVICE_ROUNDS_PER_PAGE = 100


def _selected(session: Session, values: list[str]) -> tuple[list[ComparedRun], str | None]:
    ids = list(dict.fromkeys(i for i in (parse_id(v) for v in values) if i is not None))
    runs = [r for r in (crud.get_run(session=session, run_id=i) for i in ids[:MAX_RUNS]) if r]
    compared = [ComparedRun(r, crud.list_rounds(session=session, run_id=r.id)) for r in runs]
    message = None
    if len(values) > len(runs):
        message = (
            f"Ignored {len(values) - len(runs)} selection(s) that name no run (or past {MAX_RUNS})."
        )
    if len(compared) < 2:
        message = "Choose two or more runs, for example apt and fp32 of the same settings."
    return compared, message


@router.get("/compare", response_class=HTMLResponse)
def read_compare_page(
    request: Request,
    session: SessionDep,
    viewer: ViewerDep,
    run: Annotated[list[str] | None, Query(max_length=MAX_RUNS * 4)] = None,
) -> Response:
    """Runs side by side: accuracy, cumulative energy and bytes, final bits, savings."""
    if viewer is None:
        return login_redirect(request)
    compared, message = _selected(session, run or [])
    choices, _ = crud.list_runs(session=session, limit=_CHOICES)
    return html(compare_page(viewer=viewer, runs=compared, choices=choices, message=message))


def _class_cap(policy: Policy, device_class: str) -> str:
    """``bits 2-8`` of the class's effective policy, ``(override)`` when the class has one."""
    try:
        effective = effective_policy(crud.policy_of(policy), policy.overrides or {}, device_class)
    except ValueError as exc:
        return f"invalid override: {exc}"
    source = " (class override)" if device_class in (policy.overrides or {}) else " (fleet)"
    budget = (getattr(policy, "budgets", None) or {}).get(device_class)
    budget_text = f"; budget {budget}" if budget else ""
    return f"bits {effective.bits_min}-{effective.bits_max}{source}{budget_text}"


def _rows(session: Session, devices: list[Any], policy: Policy) -> list[DeviceRow]:
    ids = [d.id for d in devices]
    runs = fleet.runs_per_device(session=session, device_ids=ids)
    latest = fleet.latest_rows(session=session, device_ids=ids)
    bits = fleet.layer_bits_of(session=session, rows=list(latest.values()))
    return [
        DeviceRow(
            device=d,
            runs=runs.get(d.id, 0),
            bits=bits.get(d.id, {}),
            class_cap=_class_cap(policy, d.device_class),
            cap_sent=getattr(latest.get(d.id), "bits_cap", None),
        )
        for d in devices
    ]


@router.get("/devices", response_class=HTMLResponse)
def read_devices_page(
    request: Request,
    session: SessionDep,
    viewer: ViewerDep,
    device_class: Annotated[str | None, Query(alias="class", max_length=32)] = None,
    status: Annotated[str | None, Query(pattern="^(online|offline)?$")] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    """Every device with class, status, last seen, runs, current bits, class cap; key pages."""
    if viewer is None:
        return login_redirect(request)
    filters = FleetFilters(
        device_class or None, status or None, cursor or None, fleet.device_classes(session=session)
    )
    try:
        found = fleet.page_fleet(
            session=session,
            device_class=filters.device_class,
            status=filters.status,
            cursor=filters.cursor,
            limit=_DEVICES_PER_PAGE,
        )
    except InvalidQueryError as exc:
        return failed("Bad page cursor", exc.message, viewer, 422)
    rows = _rows(session, found.data, crud.get_current_policy_row(session=session))
    return html(
        devices_page(
            viewer=viewer,
            rows=rows,
            count=found.count,
            next_cursor=found.next_cursor,
            filters=filters,
        )
    )


def _history(
    session: Session, device_id: int, cursor: str | None
) -> DeviceHistory | InvalidQueryError:
    """The device's rounds page (or why the cursor is bad), rejections, chart rows, bits."""
    try:
        rounds = fleet.page_device_rounds(
            session=session, device_id=device_id, cursor=cursor, limit=DEVICE_ROUNDS_PER_PAGE
        )
    except InvalidQueryError as exc:
        return exc
    run_ids = fleet.device_run_ids(session=session, device_id=device_id, limit=_HEATMAP_RUNS)
    return DeviceHistory(
        rounds=rounds,
        first=cursor is None,
        rejections=fleet.device_rejections(session=session, device_id=device_id),
        chart_rounds=fleet.device_rounds_in(
            session=session, device_id=device_id, run_ids=run_ids[:_CHART_RUNS]
        ),
        bits=fleet.device_layer_bits(session=session, device_id=device_id, run_ids=run_ids),
    )


@router.get("/devices/{device_id}", response_class=HTMLResponse)
def read_device_page(
    request: Request,
    session: SessionDep,
    viewer: ViewerDep,
    device_id: str,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    """A device: rejections with reasons, bits heatmaps, energy and bytes per round.

    Its rounds are listed one key page at a time (``cursor`` from the "next page" link).
    """
    if viewer is None:
        return login_redirect(request)
    parsed = parse_id(device_id)
    device = crud.get_device(session=session, device_id=parsed) if parsed is not None else None
    if device is None:
        return not_found("device", device_id, viewer)
    history = _history(session, device.id, cursor or None)
    if isinstance(history, InvalidQueryError):
        return failed("Bad page cursor", history.message, viewer, 422)
    policy = crud.get_current_policy_row(session=session)
    budget = (getattr(policy, "budgets", None) or {}).get(device.device_class)
    return html(
        device_page(
            viewer=viewer,
            device=device,
            history=history,
            class_cap=_class_cap(policy, device.device_class),
            budget=budget,
        )
    )
