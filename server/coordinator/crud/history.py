"""Reading a run's history: rounds, per-device rows, per-layer precision and summaries.

The ``page_*`` functions return one keyset page (``core.pagination.Page``); a page costs the
same at round 5 and at round 500 because it starts from an index key, never an OFFSET
scan, and every count comes from an index or from the summary rows written with the
round. The ``list_*`` functions return a run's whole history for the run's own bookkeeping
(resume point, savings at the end of a run): not for request paths.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from server.coordinator.core.pagination import (
    DEFAULT_PAGE_SIZE,
    Page,
    after,
    decode_cursor,
    page_of,
)
from server.coordinator.crud.runs import count_active_runs
from server.coordinator.tables import (
    Checkpoint,
    ClientRound,
    Device,
    LayerPrecision,
    PrecisionSummary,
    Round,
)


def list_rounds(*, session: Session, run_id: int) -> list[Round]:
    """Every recorded round of a run, in round order."""
    stmt = select(Round).where(Round.run_id == run_id).order_by(Round.round)
    return list(session.scalars(stmt).all())


def list_client_rounds(*, session: Session, run_id: int) -> list[ClientRound]:
    """Every per-device row of a run, by round and device."""
    return list(
        session.scalars(
            select(ClientRound)
            .where(ClientRound.run_id == run_id)
            .order_by(ClientRound.round, ClientRound.device_id)
        )
    )


def get_latest_checkpoint(*, session: Session, run_id: int) -> Checkpoint | None:
    """The checkpoint of the run's highest recorded round, if any."""
    stmt = (
        select(Checkpoint)
        .where(Checkpoint.run_id == run_id)
        .order_by(Checkpoint.round.desc())
        .limit(1)
    )
    return session.scalar(stmt)


def _dicts(session: Session, stmt: Any) -> list[dict[str, Any]]:
    """The rows of ``stmt`` as dicts (column label -> value), built without Row mappings."""
    result = session.execute(stmt)
    keys = list(result.keys())
    return [dict(zip(keys, row, strict=True)) for row in result]


def _count(session: Session, table: Any, conditions: list[ColumnElement[bool]]) -> int:
    return int(session.scalar(select(func.count()).select_from(table).where(*conditions)) or 0)


def page_rounds(
    *, session: Session, run_id: int, cursor: str | None = None, limit: int = DEFAULT_PAGE_SIZE
) -> Page[Round]:
    """One page of a run's rounds in round order (cursor key: ``(round,)``)."""
    conditions = [Round.run_id == run_id]
    count = _count(session, Round, conditions)
    key = decode_cursor(cursor, (int,))
    if key is not None:
        conditions.append(after([Round.round], key))
    stmt = select(Round).where(*conditions).order_by(Round.round).limit(limit + 1)
    rows = list(session.scalars(stmt))
    return page_of(rows, limit=limit, count=count, key=lambda r: (r.round,))


#: The columns of a per-device row a page shows (the keys of ``ClientRoundPublic``).
_CLIENT_COLUMNS = (
    "round",
    "device_id",
    "partition_id",
    "policy_version",
    "energy_j",
    "uplink_bytes",
    "downlink_bytes",
    "num_examples",
    "train_loss",
    "param_bytes",
    "peak_memory_bytes",
    "bits_cap",
    "rejected",
    "failure",
)


def page_client_rounds(
    *,
    session: Session,
    run_id: int,
    device_id: int | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
) -> Page[dict[str, Any]]:
    """One page of a run's per-device rows, by round and device id.

    Cursor key ``(round, device_id)``; ``device_id`` keeps one device's rows (index
    ``(device_id, run_id, round)``). Rows are dicts with the keys of ``ClientRoundPublic``
    (columns, not ORM objects: a page of 1,000 costs a fraction of loading entities).
    """
    cr = ClientRound
    conditions = [cr.run_id == run_id]
    if device_id is not None:
        conditions.append(cr.device_id == device_id)
        count = _count(session, cr, conditions)
    else:  # one row per round, not a scan of the run's per-device rows
        total = select(func.coalesce(func.sum(Round.devices), 0)).where(Round.run_id == run_id)
        count = int(session.scalar(total) or 0)
    key = decode_cursor(cursor, (int, int))
    if key is not None:
        conditions.append(after([cr.round, cr.device_id], key))
    columns = [getattr(cr, name) for name in _CLIENT_COLUMNS]
    stmt = select(*columns).where(*conditions).order_by(cr.round, cr.device_id).limit(limit + 1)
    rows = _dicts(session, stmt)
    return page_of(rows, limit=limit, count=count, key=lambda r: (r["round"], r["device_id"]))


def _round_bounds(
    column: Any, from_round: int | None, to_round: int | None
) -> list[ColumnElement[bool]]:
    bounds = []
    if from_round is not None:
        bounds.append(column >= from_round)
    if to_round is not None:
        bounds.append(column <= to_round)
    return bounds


def _precision_count(
    session: Session,
    run_id: int,
    layer: str | None,
    device_id: int | None,
    rounds: tuple[int | None, int | None],
) -> int:
    """Matching per-layer rows: from the summary rows unless one device is asked for."""
    if device_id is not None:
        lp = LayerPrecision
        conditions = [lp.run_id == run_id, lp.device_id == device_id]
        conditions += _round_bounds(lp.round, *rounds)
        if layer is not None:
            conditions.append(lp.layer == layer)
        return _count(session, lp, conditions)
    ps = PrecisionSummary
    conditions = [ps.run_id == run_id, *_round_bounds(ps.round, *rounds)]
    if layer is not None:
        conditions.append(ps.layer == layer)
    total = session.scalar(select(func.coalesce(func.sum(ps.devices), 0)).where(*conditions))
    return int(total or 0)


def page_layer_precision(
    *,
    session: Session,
    run_id: int,
    layer: str | None = None,
    device_id: int | None = None,
    from_round: int | None = None,
    to_round: int | None = None,
    cursor: str | None = None,
    skip: int = 0,
    limit: int = DEFAULT_PAGE_SIZE,
) -> Page[dict[str, Any]]:
    """One page of a run's per-layer precision rows, filtered, with the device's node id.

    Ordered by round, device id and layer (the cursor key); ``from_round`` / ``to_round``
    are inclusive; ``skip`` drops rows after the cursor (kept for older clients). Rows are
    dicts with the keys of ``LayerPrecisionPublic``.
    """
    lp = LayerPrecision
    count = _precision_count(session, run_id, layer, device_id, (from_round, to_round))
    conditions = [lp.run_id == run_id, *_round_bounds(lp.round, from_round, to_round)]
    if layer is not None:
        conditions.append(lp.layer == layer)
    if device_id is not None:
        conditions.append(lp.device_id == device_id)
    key = decode_cursor(cursor, (int, int, str))
    if key is not None:
        conditions.append(after([lp.round, lp.device_id, lp.layer], key))
    # the page is cut from layer_precision alone (its (run_id, round, device_id, layer) index
    # serves the order and the limit), then joined to devices: joined first, PostgreSQL
    # hash-joined every row of the run and sorted them (300 ms for 1M rows)
    page = (
        select(lp.round, lp.device_id, lp.layer, lp.bits, lp.exponent)
        .add_columns(lp.gavg, lp.underflow, lp.checks)
        .where(*conditions)
        .order_by(lp.round, lp.device_id, lp.layer)
        .offset(skip)
        .limit(limit + 1)
        .subquery()
    )
    c = page.c
    stmt = (
        select(c.round, c.device_id, Device.node_id, c.layer, c.bits, c.exponent)
        .add_columns(c.gavg, c.underflow, c.checks)
        .join(Device, Device.id == c.device_id)
        .order_by(c.round, c.device_id, c.layer)
    )
    rows = _dicts(session, stmt)
    return page_of(
        rows, limit=limit, count=count, key=lambda r: (r["round"], r["device_id"], r["layer"])
    )


_SUMMARY_KEYS = ("round", "layer", "devices", "min_bits", "mean_bits", "max_bits", "mean_gavg")


def _summary_dict(row: PrecisionSummary) -> dict[str, Any]:
    return {name: getattr(row, name) for name in _SUMMARY_KEYS}


def page_precision_summary(
    *,
    session: Session,
    run_id: int,
    layer: str | None = None,
    from_round: int | None = None,
    to_round: int | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
) -> Page[dict[str, Any]]:
    """One page of the per-round, per-layer summary (min / mean / max bits, mean Gavg).

    Read from ``precision_summaries`` (written with each round), ordered by round and
    layer (the cursor key). Rows are dicts with the keys of ``PrecisionSummaryPublic``.
    """
    ps = PrecisionSummary
    conditions = [ps.run_id == run_id, *_round_bounds(ps.round, from_round, to_round)]
    if layer is not None:
        conditions.append(ps.layer == layer)
    count = _count(session, ps, conditions)
    key = decode_cursor(cursor, (int, str))
    if key is not None:
        conditions.append(after([ps.round, ps.layer], key))
    stmt = select(ps).where(*conditions).order_by(ps.round, ps.layer).limit(limit + 1)
    rows = [_summary_dict(row) for row in session.scalars(stmt)]
    return page_of(rows, limit=limit, count=count, key=lambda r: (r["round"], r["layer"]))


def precision_summary(
    *, session: Session, run_id: int, layer: str | None = None
) -> list[dict[str, Any]]:
    """The whole per-round, per-layer summary of a run (from the rows written per round).

    One row per round and layer (4 layers x 500 rounds is 2,000 rows), ordered by round
    and layer, dicts with the keys of ``PrecisionSummaryPublic``.
    """
    ps = PrecisionSummary
    stmt = select(ps).where(ps.run_id == run_id).order_by(ps.round, ps.layer)
    if layer is not None:
        stmt = stmt.where(ps.layer == layer)
    return [_summary_dict(row) for row in session.scalars(stmt)]


def run_totals(*, session: Session, run_id: int) -> dict[str, Any]:
    """A run's totals and its latest round, for a cheap live view.

    Sums the run's round rows (one per round, at most a few hundred), so it costs the same
    whatever the fleet's size.

    Returns
    -------
    dict[str, Any]
        ``rounds_recorded``, ``energy_j``, ``uplink_bytes``, ``downlink_bytes``,
        ``participants``, ``failures``, ``rejections`` (sums over rounds) and
        ``latest_round`` (the highest ``Round`` row, or None).
    """
    r = Round
    totals = session.execute(
        select(
            func.count(r.id).label("rounds_recorded"),
            func.coalesce(func.sum(r.energy_j), 0.0).label("energy_j"),
            func.coalesce(func.sum(r.uplink_bytes), 0).label("uplink_bytes"),
            func.coalesce(func.sum(r.downlink_bytes), 0).label("downlink_bytes"),
            func.coalesce(func.sum(r.participants), 0).label("participants"),
            func.coalesce(func.sum(r.failures), 0).label("failures"),
            func.coalesce(func.sum(r.rejections), 0).label("rejections"),
        ).where(r.run_id == run_id)
    ).one()
    latest = session.scalar(select(r).where(r.run_id == run_id).order_by(r.round.desc()).limit(1))
    out: dict[str, Any] = {k: int(v) for k, v in totals._mapping.items() if k != "energy_j"}
    return {**out, "energy_j": float(totals.energy_j), "latest_round": latest}


def fleet_totals(*, session: Session) -> dict[str, float]:
    """Fleet-wide totals for the metrics endpoint.

    Returns
    -------
    dict[str, float]
        ``active_runs``, ``rounds_completed``, ``uplink_bytes``, ``downlink_bytes`` and
        ``energy_j`` (modelled), summed over every stored round.
    """
    active = count_active_runs(session=session)
    totals = session.execute(
        select(
            func.count(Round.id),
            func.coalesce(func.sum(Round.uplink_bytes), 0),
            func.coalesce(func.sum(Round.downlink_bytes), 0),
            func.coalesce(func.sum(Round.energy_j), 0.0),
        )
    ).one()
    return {
        "active_runs": float(active),
        "rounds_completed": float(totals[0]),
        "uplink_bytes": float(totals[1]),
        "downlink_bytes": float(totals[2]),
        "energy_j": float(totals[3]),
    }


def client_totals(*, session: Session, run_id: int) -> dict[str, Any]:
    """What a run's per-device rows add up to, in SQL (no row is loaded).

    Returns
    -------
    dict[str, Any]
        ``client_rounds`` (every per-device row), ``trained`` (neither rejected nor
        failed), ``trained_param_bytes`` (their sum) and ``examples``: for the trained
        rows with examples, ``{num_examples: rows}``.
    """
    cr = ClientRound
    trained = [cr.run_id == run_id, cr.rejected.is_(None), cr.failure.is_(None)]
    total = _count(session, cr, [cr.run_id == run_id])
    counts = session.execute(
        select(func.count(), func.coalesce(func.sum(cr.param_bytes), 0)).where(*trained)
    ).one()
    examples = session.execute(
        select(cr.num_examples, func.count())
        .where(*trained, cr.num_examples > 0)
        .group_by(cr.num_examples)
    )
    return {
        "client_rounds": total,
        "trained": int(counts[0]),
        "trained_param_bytes": int(counts[1]),
        "examples": {int(n): int(rows) for n, rows in examples},
    }
