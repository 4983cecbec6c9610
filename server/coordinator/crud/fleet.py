"""Fleet views of the console: devices filtered and paged by key, one device's history."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, tuple_
from sqlalchemy.orm import Session

from server.coordinator.core.pagination import Page, keyset_page
from server.coordinator.tables import ClientRound, Device, LayerPrecision

#: ``status`` filter values: online is any status but offline.
ONLINE, OFFLINE = "online", "offline"


def page_fleet(
    *,
    session: Session,
    device_class: str | None = None,
    status: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> Page[Device]:
    """One page of devices in id order (cursor key: ``(id,)``), filtered by class and status.

    ``status`` is ``online``, ``offline`` or None (every device).
    """
    stmt = select(Device)
    if device_class:
        stmt = stmt.where(Device.device_class == device_class)
    if status == OFFLINE:
        stmt = stmt.where(Device.status == "offline")
    elif status == ONLINE:
        stmt = stmt.where(Device.status != "offline")
    count = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    return keyset_page(session, stmt, order=[Device.id], cursor=cursor, limit=limit, count=count)


def device_classes(*, session: Session) -> list[str]:
    """Every device class seen, sorted (the class filter's choices)."""
    return list(
        session.scalars(select(Device.device_class).distinct().order_by(Device.device_class))
    )


def runs_per_device(*, session: Session, device_ids: list[int]) -> dict[int, int]:
    """How many runs each device took part in."""
    rows = session.execute(
        select(ClientRound.device_id, func.count(func.distinct(ClientRound.run_id)))
        .where(ClientRound.device_id.in_(device_ids))
        .group_by(ClientRound.device_id)
    )
    return {device_id: int(n) for device_id, n in rows}


def latest_rows(*, session: Session, device_ids: list[int]) -> dict[int, ClientRound]:
    """Each device's most recent client-round row (highest run, then round)."""
    newest = (
        select(func.max(ClientRound.id))
        .where(ClientRound.device_id.in_(device_ids))
        .group_by(ClientRound.device_id)
    )
    rows = session.scalars(select(ClientRound).where(ClientRound.id.in_(newest)))
    return {row.device_id: row for row in rows}


def layer_bits_of(*, session: Session, rows: list[ClientRound]) -> dict[int, dict[str, int]]:
    """Per-layer bits each device reported in the given client-round rows."""
    if not rows:
        return {}
    keys = [(r.run_id, r.round, r.device_id) for r in rows]
    lp = LayerPrecision
    found: dict[int, dict[str, int]] = {}
    for device_id, layer, bits in session.execute(
        select(lp.device_id, lp.layer, lp.bits)
        .where(tuple_(lp.run_id, lp.round, lp.device_id).in_(keys))
        .order_by(lp.device_id, lp.id)
    ):
        found.setdefault(device_id, {})[layer] = bits
    return found


def page_device_rounds(
    *, session: Session, device_id: int, cursor: str | None = None, limit: int = 100
) -> Page[ClientRound]:
    """One page of the device's client-round rows, newest first (cursor key: ``(run, round)``).

    Keyset-paged on the ``(device_id, run_id, round)`` index: any page costs the same, however
    many rounds the device took part in.
    """
    stmt = select(ClientRound).where(ClientRound.device_id == device_id)
    count = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    order = [ClientRound.run_id, ClientRound.round]
    return keyset_page(
        session, stmt, order=order, cursor=cursor, limit=limit, count=count, descending=True
    )


def device_rejections(*, session: Session, device_id: int) -> list[ClientRound]:
    """Every rejected or failed update of the device, newest first."""
    stmt = (
        select(ClientRound)
        .where(
            ClientRound.device_id == device_id,
            (ClientRound.rejected.is_not(None)) | (ClientRound.failure.is_not(None)),
        )
        .order_by(ClientRound.run_id.desc(), ClientRound.round.desc())
    )
    return list(session.scalars(stmt).all())


def device_run_ids(*, session: Session, device_id: int, limit: int) -> list[int]:
    """The ``limit`` newest runs the device took part in, newest first."""
    stmt = (
        select(ClientRound.run_id)
        .where(ClientRound.device_id == device_id)
        .distinct()
        .order_by(ClientRound.run_id.desc())
        .limit(limit)
    )
    return list(session.scalars(stmt).all())


def device_rounds_in(*, session: Session, device_id: int, run_ids: list[int]) -> list[ClientRound]:
    """The device's client-round rows in ``run_ids`` (the per-round charts), by run and round."""
    stmt = (
        select(ClientRound)
        .where(ClientRound.device_id == device_id, ClientRound.run_id.in_(run_ids))
        .order_by(ClientRound.run_id.desc(), ClientRound.round)
    )
    return list(session.scalars(stmt).all())


def device_layer_bits(
    *, session: Session, device_id: int, run_ids: list[int]
) -> list[dict[str, Any]]:
    """``{run_id, round, layer, bits}`` of the device in ``run_ids``, by run, round, layer."""
    lp = LayerPrecision
    rows = session.execute(
        select(lp.run_id, lp.round, lp.layer, lp.bits)
        .where(lp.device_id == device_id, lp.run_id.in_(run_ids))
        .order_by(lp.run_id, lp.round, lp.id)
    )
    return [dict(row._mapping) for row in rows]
