"""Data access for devices (Flower nodes) and their per-run history."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Float, cast, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from server.coordinator.tables import ClientRound, Device, LayerPrecision


def upsert_device(
    *, session: Session, node_id: int, device_class: str, status: str, seen_at: datetime
) -> int:
    """Insert or refresh the device of Flower node ``node_id``; return its id.

    A single ``INSERT ... ON CONFLICT DO UPDATE``, so two runs seeing a new node at the
    same time cannot both insert it.
    """
    dialect = session.get_bind().dialect.name
    values: dict[str, Any] = {
        "node_id": node_id,
        "device_class": device_class,
        "status": status,
        "first_seen": seen_at,
        "last_seen": seen_at,
    }
    refresh: dict[str, Any] = {"status": status, "last_seen": seen_at}
    if status not in ("failed", "offline") or device_class != "standard":
        # a failure row of a device that never replied carries only the default class:
        # keep the class the device reported before
        refresh["device_class"] = device_class
    if dialect in ("postgresql", "sqlite"):
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = insert(Device).values(**values)
        stmt = stmt.on_conflict_do_update(index_elements=[Device.node_id], set_=refresh)
        return int(session.execute(stmt.returning(Device.id)).scalar_one())
    device = session.scalar(select(Device).where(Device.node_id == node_id))
    if device is None:
        device = Device(**values)
        session.add(device)
    else:
        for key, value in refresh.items():
            setattr(device, key, value)
    session.flush()
    return device.id


def list_devices(*, session: Session, skip: int = 0, limit: int = 100) -> tuple[list[Device], int]:
    """One page of devices, most recently seen first, and the total count."""
    count = session.scalar(select(func.count()).select_from(Device)) or 0
    stmt = select(Device).order_by(Device.last_seen.desc(), Device.id).offset(skip).limit(limit)
    return list(session.scalars(stmt).all()), count


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
