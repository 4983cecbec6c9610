"""Recording a round: its per-device and per-layer rows, summary and checkpoint, in bulk."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import Float, cast, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.coordinator.crud.bulk import bulk_insert
from server.coordinator.crud.devices import upsert_devices
from server.coordinator.exceptions import DuplicateRoundError, NotFoundError, RoundRecordError
from server.coordinator.tables import (
    Checkpoint,
    ClientRound,
    LayerPrecision,
    PrecisionSummary,
    Round,
    Run,
    utcnow,
)
from server.flower.records import ClientReport, LayerReport, RoundReport


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

    Writes the round, one row per device, one row per device and layer, the round's
    per-layer summary (``precision_summaries``), upserts the devices (class, status,
    last_seen), stores the packed model as a checkpoint and advances the run's
    ``current_round`` / ``latest_accuracy``. Each table gets one statement for the whole
    round (multi-row, batched by the driver), so 1,000 devices cost a handful of
    statements, not thousands. The writes happen inside a SAVEPOINT: if any fails, none
    of them remains in the session. The caller commits once.

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
            row = _round_row(run_id, record, now)
            session.add(row)
            session.flush()
            _insert_clients(session, run_id, record, now)
            if record.packed_model is not None:
                session.add(
                    Checkpoint(
                        run_id=run_id,
                        round=record.round,
                        packed=bytes(record.packed_model),
                        created_at=now,
                    )
                )
            _advance(run, record)
            session.flush()
    except IntegrityError as exc:
        # Another writer stored the same round between our check and our insert.
        if session.scalar(exists) is not None:
            raise _duplicate(run_id, record.round) from exc
        raise
    return row


def _advance(run: Run, record: RoundReport) -> None:
    """Move the run's progress to this round unless a later one is already stored."""
    if record.round >= run.current_round:
        run.current_round = record.round
        if record.accuracy is not None:
            run.latest_accuracy = record.accuracy


def _round_row(run_id: int, record: RoundReport, now: datetime) -> Round:
    return Round(
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
        devices=len(record.clients),
        mean_bits=record.mean_bits,
        policy_version=record.policy_version,
        global_bits=dict(record.global_bits),
        created_at=now,
    )


def _insert_clients(session: Session, run_id: int, record: RoundReport, now: datetime) -> None:
    """The round's devices, device rows, layer rows and layer summary: a statement each."""
    if not record.clients:
        return
    ids = upsert_devices(
        session=session,
        devices=[(c.node_id, c.device_class, _device_status(c)) for c in record.clients],
        seen_at=now,
    )
    key = {"run_id": run_id, "round": record.round}
    clients = [{"device_id": ids[c.node_id], **_client_values(c)} for c in record.clients]
    bulk_insert(session, ClientRound, clients, key)
    layers = [
        {"device_id": ids[c.node_id], **_layer_values(layer)}
        for c in record.clients
        for layer in c.layers
    ]
    if layers:
        bulk_insert(session, LayerPrecision, layers, key)
        session.execute(_summary_insert(run_id, record.round))


def _client_values(client: ClientReport) -> dict[str, Any]:
    return {
        "partition_id": client.partition_id,
        "policy_version": client.policy_version,
        "energy_j": client.energy_j,
        "uplink_bytes": client.uplink_bytes,
        "downlink_bytes": client.downlink_bytes,
        "num_examples": client.num_examples,
        "train_loss": client.train_loss,
        "param_bytes": client.param_bytes,
        "peak_memory_bytes": client.peak_memory_bytes,
        "bits_cap": client.bits_cap,
        "rejected": client.rejected,
        "failure": client.failure,
    }


def _layer_values(layer: LayerReport) -> dict[str, Any]:
    return {
        "layer": layer.layer,
        "bits": layer.bits,
        "exponent": layer.exponent,
        "gavg": layer.gavg,
        "underflow": layer.underflow,
        "checks": layer.checks,
    }


def _summary_insert(run_id: int, round_: int) -> Any:
    """``INSERT ... SELECT``: the round's per-layer aggregates over its devices' rows."""
    lp = LayerPrecision
    aggregates = (
        select(
            lp.run_id,
            lp.round,
            lp.layer,
            func.count(func.distinct(lp.device_id)),
            func.min(lp.bits),
            func.avg(cast(lp.bits, Float)),
            func.max(lp.bits),
            func.avg(lp.gavg),
        )
        .where(lp.run_id == run_id, lp.round == round_)
        .group_by(lp.run_id, lp.round, lp.layer)
    )
    columns = ["run_id", "round", "layer", "devices", "min_bits", "mean_bits", "max_bits"]
    return insert(PrecisionSummary).from_select([*columns, "mean_gavg"], aggregates)
