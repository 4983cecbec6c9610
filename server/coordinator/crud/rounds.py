"""Data access for rounds, their per-device and per-layer rows, and checkpoints."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import Float, cast, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.coordinator.crud.devices import upsert_device
from server.coordinator.crud.runs import count_active_runs
from server.coordinator.exceptions import DuplicateRoundError, NotFoundError, RoundRecordError
from server.coordinator.tables import (
    Checkpoint,
    ClientRound,
    Device,
    LayerPrecision,
    Round,
    Run,
    utcnow,
)
from server.flower.records import ClientReport, RoundReport


def _check_record(run_id: int, record: RoundReport) -> None:
    if record.round < 1:
        raise RoundRecordError(
            f"RoundReport for run {run_id}: field 'round' = {record.round}: must be >= 1."
        )
    nodes = Counter(client.node_id for client in record.clients)
    for node_id, seen in nodes.items():
        if seen > 1:
            raise RoundRecordError(
                f"RoundReport for run {run_id} round {record.round} lists "
                f"node {node_id} {seen} times."
            )
    for client in record.clients:
        layers = Counter(layer.layer for layer in client.layers)
        for name, seen in layers.items():
            if seen > 1:
                raise RoundRecordError(
                    f"RoundReport for run {run_id} round {record.round}: node "
                    f"{client.node_id} reports layer '{name}' {seen} times."
                )


def _duplicate(run_id: int, round_: int) -> DuplicateRoundError:
    return DuplicateRoundError(
        f"Round {round_} of run {run_id} is already recorded; the new copy was not stored."
    )


#: Failure reasons (written by the strategy) that mean the device is gone, not faulty.
_OFFLINE_REASONS = ("The device went offline", "The device sent no reply")


def _device_status(client: ClientReport) -> str:
    if client.failure is not None:
        return "offline" if client.failure.startswith(_OFFLINE_REASONS) else "failed"
    return "rejected" if client.rejected is not None else "active"


def record_round(*, session: Session, run_id: int, record: RoundReport) -> Round:
    """Store everything one finished round produced, all or nothing.

    Writes the round, one row per device, one row per device and layer, upserts the
    devices (class, status, last_seen), stores the packed model as a checkpoint and
    advances the run's ``current_round`` / ``latest_accuracy``. The writes happen inside a
    SAVEPOINT: if any fails, none of them remains in the session. The caller commits once.

    Parameters
    ----------
    session : Session
        Open session.
    run_id : int
        Id of the run the round belongs to.
    record : RoundReport
        What the strategy reported at round end.

    Returns
    -------
    Round
        The stored round row.

    Raises
    ------
    NotFoundError
        If the run does not exist.
    DuplicateRoundError
        If this round of this run is already stored (nothing is written).
    RoundRecordError
        If the record is inconsistent, e.g. one node listed twice.
    """
    _check_record(run_id, record)
    run = session.get(Run, run_id, with_for_update=True)
    if run is None:
        raise NotFoundError(f"Run {run_id} not found")
    exists = select(Round.id).where(Round.run_id == run_id, Round.round == record.round)
    if session.scalar(exists) is not None:
        raise _duplicate(run_id, record.round)
    now = utcnow()
    try:
        with session.begin_nested():
            row = Round(
                run_id=run_id,
                round=record.round,
                accuracy=record.accuracy,
                loss=record.loss,
                energy_j=record.energy_j,
                uplink_bytes=record.uplink_bytes,
                downlink_bytes=record.downlink_bytes,
                participants=record.participants,
                failures=record.failures,
                rejections=record.rejections,
                mean_bits=record.mean_bits,
                policy_version=record.policy_version,
                global_bits=dict(record.global_bits),
                created_at=now,
            )
            session.add(row)
            session.flush()
            for client in record.clients:
                _add_client_round(session, run_id, record.round, client, now)
            if record.packed_model is not None:
                session.add(
                    Checkpoint(
                        run_id=run_id,
                        round=record.round,
                        packed=bytes(record.packed_model),
                        created_at=now,
                    )
                )
            if record.round >= run.current_round:
                run.current_round = record.round
                if record.accuracy is not None:
                    run.latest_accuracy = record.accuracy
            session.flush()
    except IntegrityError as exc:
        # Another writer stored the same round between our check and our insert.
        if session.scalar(exists) is not None:
            raise _duplicate(run_id, record.round) from exc
        raise
    return row


def _add_client_round(
    session: Session, run_id: int, round_: int, client: ClientReport, now: datetime
) -> None:
    device_id = upsert_device(
        session=session,
        node_id=client.node_id,
        device_class=client.device_class,
        status=_device_status(client),
        seen_at=now,
    )
    session.add(
        ClientRound(
            run_id=run_id,
            round=round_,
            device_id=device_id,
            partition_id=client.partition_id,
            policy_version=client.policy_version,
            energy_j=client.energy_j,
            uplink_bytes=client.uplink_bytes,
            downlink_bytes=client.downlink_bytes,
            num_examples=client.num_examples,
            train_loss=client.train_loss,
            param_bytes=client.param_bytes,
            peak_memory_bytes=client.peak_memory_bytes,
            rejected=client.rejected,
            failure=client.failure,
        )
    )
    session.add_all(
        LayerPrecision(
            run_id=run_id,
            round=round_,
            device_id=device_id,
            layer=layer.layer,
            bits=layer.bits,
            exponent=layer.exponent,
            gavg=layer.gavg,
            underflow=layer.underflow,
            checks=layer.checks,
        )
        for layer in client.layers
    )


def list_rounds(*, session: Session, run_id: int) -> list[Round]:
    """Every recorded round of a run, in round order."""
    stmt = select(Round).where(Round.run_id == run_id).order_by(Round.round)
    return list(session.scalars(stmt).all())


def list_client_rounds(*, session: Session, run_id: int) -> list[ClientRound]:
    """Every per-device row of a run, by round."""
    return list(
        session.scalars(
            select(ClientRound)
            .where(ClientRound.run_id == run_id)
            .order_by(ClientRound.round, ClientRound.id)
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


def list_layer_precision(
    *,
    session: Session,
    run_id: int,
    layer: str | None = None,
    device_id: int | None = None,
    from_round: int | None = None,
    to_round: int | None = None,
    skip: int = 0,
    limit: int = 1000,
) -> tuple[list[dict[str, Any]], int]:
    """Per-layer precision rows of a run, filtered, with the device's node id.

    Rows are ordered by round, device and layer; ``from_round`` / ``to_round`` are
    inclusive. Returns one page (dicts with the keys of ``LayerPrecisionPublic``) and the
    total count of matching rows.
    """
    lp = LayerPrecision
    conditions = [lp.run_id == run_id]
    if layer is not None:
        conditions.append(lp.layer == layer)
    if device_id is not None:
        conditions.append(lp.device_id == device_id)
    if from_round is not None:
        conditions.append(lp.round >= from_round)
    if to_round is not None:
        conditions.append(lp.round <= to_round)
    count = session.scalar(select(func.count()).select_from(lp).where(*conditions)) or 0
    stmt = (
        select(
            lp.round,
            lp.device_id,
            Device.node_id,
            lp.layer,
            lp.bits,
            lp.exponent,
            lp.gavg,
            lp.underflow,
            lp.checks,
        )
        .join(Device, Device.id == lp.device_id)
        .where(*conditions)
        .order_by(lp.round, lp.device_id, lp.layer)
        .offset(skip)
        .limit(limit)
    )
    return [dict(row._mapping) for row in session.execute(stmt)], count


def precision_summary(
    *, session: Session, run_id: int, layer: str | None = None
) -> list[dict[str, Any]]:
    """Min / mean / max bits and mean Gavg over devices, per layer and round (SQL aggregates).

    Returns dicts with the keys of ``PrecisionSummaryPublic``, ordered by round and layer.
    """
    lp = LayerPrecision
    stmt = (
        select(
            lp.round,
            lp.layer,
            func.count(func.distinct(lp.device_id)).label("devices"),
            func.min(lp.bits).label("min_bits"),
            func.avg(cast(lp.bits, Float)).label("mean_bits"),
            func.max(lp.bits).label("max_bits"),
            func.avg(lp.gavg).label("mean_gavg"),
        )
        .where(lp.run_id == run_id)
        .group_by(lp.round, lp.layer)
        .order_by(lp.round, lp.layer)
    )
    if layer is not None:
        stmt = stmt.where(lp.layer == layer)
    return [dict(row._mapping) for row in session.execute(stmt)]


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
