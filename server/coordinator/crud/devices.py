"""Data access for devices (Flower nodes) and their per-run history."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Float, and_, case, cast, func, or_, select
from sqlalchemy.orm import Session

from server.coordinator.core.pagination import DEFAULT_PAGE_SIZE, Page, keyset_page
from server.coordinator.crud.bulk import upsert_statement
from server.coordinator.tables import ClientRound, Device, LayerPrecision

#: Statuses of a device that did not reply: its row carries only the default class.
_SILENT_STATUSES = ("failed", "offline")


def upsert_devices(
    *, session: Session, devices: Sequence[tuple[int, str, str]], seen_at: datetime
) -> dict[int, int]:
    """Insert or refresh the devices of one round; return their ids by Flower node id.

    One ``INSERT ... ON CONFLICT DO UPDATE`` for every device (so two runs seeing a new
    node at the same time cannot both insert it); on SQLite one ``SELECT`` of the ids
    follows (its driver returns no rows from ``executemany``).

    Parameters
    ----------
    session : Session
        Open session (SQLite or PostgreSQL).
    devices : Sequence[tuple[int, str, str]]
        ``(node_id, device_class, status)`` of each device, node ids distinct.
    seen_at : datetime
        Stamped as ``last_seen`` (and ``first_seen`` of new devices).
    """
    if not devices:
        return {}
    rows = [
        {
            "node_id": node_id,
            "device_class": device_class,
            "status": status,
            "first_seen": seen_at,
            "last_seen": seen_at,
        }
        for node_id, device_class, status in devices
    ]
    stmt, params = upsert_statement(session, Device, rows)
    new = stmt.excluded
    # a failure row of a device that never replied carries only the default class:
    # keep the class the device reported before
    # (OR, not IN: an expanding IN cannot be part of an executemany statement)
    silent = or_(*(new.status == status for status in _SILENT_STATUSES))
    keep_class = and_(silent, new.device_class == "standard")
    stmt = stmt.on_conflict_do_update(
        index_elements=[Device.node_id],
        set_={
            "status": new.status,
            "last_seen": new.last_seen,
            "device_class": case((keep_class, Device.device_class), else_=new.device_class),
        },
    )
    if params is None:  # PostgreSQL: the rows are in the statement
        found = session.execute(stmt.returning(Device.node_id, Device.id))
    else:
        session.execute(stmt, params)
        nodes = [node_id for node_id, _, _ in devices]
        found = session.execute(select(Device.node_id, Device.id).where(Device.node_id.in_(nodes)))
    return {int(node_id): int(device_id) for node_id, device_id in found}


def list_devices(*, session: Session, skip: int = 0, limit: int = 100) -> tuple[list[Device], int]:
    """One page of devices, most recently seen first, and the total count."""
    count = session.scalar(select(func.count()).select_from(Device)) or 0
    stmt = select(Device).order_by(Device.last_seen.desc(), Device.id).offset(skip).limit(limit)
    return list(session.scalars(stmt).all()), count


def page_devices(
    *, session: Session, cursor: str | None = None, skip: int = 0, limit: int = DEFAULT_PAGE_SIZE
) -> Page[Device]:
    """One page of devices, most recently seen first (cursor key: ``(last_seen, id)``).

    A device seen again while a client walks the pages moves to the front; a walk then
    misses it once (it is not listed twice).
    """
    count = session.scalar(select(func.count()).select_from(Device)) or 0
    return keyset_page(
        session,
        select(Device),
        order=[Device.last_seen, Device.id],
        cursor=cursor,
        limit=limit,
        count=count,
        skip=skip,
        descending=True,
    )


def get_device(*, session: Session, device_id: int) -> Device | None:
    """The device with id ``device_id``, if any."""
    return session.get(Device, device_id)


def device_history(*, session: Session, device_id: int) -> list[dict[str, Any]]:
    """Per-run totals of one device (rounds, failures, energy, bytes, mean bits).

    Returns
    -------
    list[dict[str, Any]]
        One dict per run, ordered by run id, with the keys of ``DeviceRunPublic``.
    """
    cr = ClientRound
    totals = session.execute(
        select(
            cr.run_id,
            func.count().label("rounds"),
            func.count(cr.failure).label("failures"),
            func.count(cr.rejected).label("rejections"),
            func.min(cr.round).label("first_round"),
            func.max(cr.round).label("last_round"),
            func.coalesce(func.sum(cr.energy_j), 0.0).label("energy_j"),
            func.coalesce(func.sum(cr.uplink_bytes), 0).label("uplink_bytes"),
            func.coalesce(func.sum(cr.downlink_bytes), 0).label("downlink_bytes"),
            func.coalesce(func.sum(cr.num_examples), 0).label("num_examples"),
        )
        .where(cr.device_id == device_id)
        .group_by(cr.run_id)
        .order_by(cr.run_id)
    ).all()
    bits: dict[int, float] = {
        row.run_id: float(row.mean_bits)
        for row in session.execute(
            select(
                LayerPrecision.run_id, func.avg(cast(LayerPrecision.bits, Float)).label("mean_bits")
            )
            .where(LayerPrecision.device_id == device_id)
            .group_by(LayerPrecision.run_id)
        )
    }
    return [_history_row(row._mapping, bits.get(row.run_id)) for row in totals]


def _history_row(row: Mapping[Any, Any], mean_bits: float | None) -> dict[str, Any]:
    out = dict(row)
    out["energy_j"] = float(out["energy_j"])
    for key in ("uplink_bytes", "downlink_bytes", "num_examples"):
        out[key] = int(out[key])
    out["mean_bits"] = mean_bits
    return out
