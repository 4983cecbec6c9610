"""Round recording in bulk and the summaries written with it, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session

from server.coordinator import crud
from server.coordinator.tables import PrecisionSummary
from server.flower.records import ClientReport
from tests.utils.run import create_random_run, make_round_record


@contextmanager
def _statements(db: Session) -> Iterator[list[str]]:
    """The SQL statements sent to the database inside the block (each batch counts)."""
    seen: list[str] = []
    engine = db.get_bind()

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", before)


def _record(db: Session, devices: int) -> list[str]:
    run = create_random_run(db, status="running")
    record = make_round_record(1, nodes=range(100, 100 + devices), layers=("a", "b", "c"))
    with _statements(db) as seen:
        crud.record_round(session=db, run_id=run.id, record=record)
    db.commit()
    return seen


def test_record_round_statements_do_not_grow_with_devices(db: Session) -> None:
    # Execute
    few = _record(db, devices=2)
    many = _record(db, devices=60)

    # Assert: one statement per table, whatever the number of devices
    assert len(many) == len(few)
    inserts = [s for s in many if s.lstrip().upper().startswith("INSERT")]
    tables = [s.split()[2] for s in inserts]
    assert sorted(tables) == sorted(set(tables)), tables


def test_record_round_writes_summary_matching_rows(db: Session) -> None:
    # Prepare
    run = create_random_run(db, status="running")
    record = make_round_record(1, nodes=(11, 12, 13, 14), layers=("conv1", "fc"))
    record.clients[0].layers = record.clients[0].layers[:1]  # node 11 reports conv1 only

    # Execute
    crud.record_round(session=db, run_id=run.id, record=record)
    db.commit()

    # Assert
    rows = {
        r.layer: r
        for r in db.scalars(select(PrecisionSummary).where(PrecisionSummary.run_id == run.id))
    }
    for name, row in rows.items():
        bits = [lr.bits for c in record.clients for lr in c.layers if lr.layer == name]
        assert (row.round, row.devices, row.min_bits, row.max_bits) == (
            1,
            len(bits),
            min(bits),
            max(bits),
        )
        assert row.mean_bits == pytest.approx(sum(bits) / len(bits))
    assert sorted(rows) == ["conv1", "fc"] and rows["fc"].devices == 3


def test_record_round_failure_leaves_no_summary(db: Session) -> None:
    # Prepare
    run = create_random_run(db, status="running")
    record = make_round_record(1, nodes=(11, 12))
    record.clients.append(ClientReport(node_id=-1))  # not a uint64: fails on write

    # Execute
    with pytest.raises(StatementError):
        crud.record_round(session=db, run_id=run.id, record=record)
    db.commit()

    # Assert
    assert db.scalar(select(func.count()).select_from(PrecisionSummary)) == 0


def test_run_totals_sum_rounds_and_name_latest(db: Session) -> None:
    # Prepare
    run = create_random_run(db, status="running")
    for r in (1, 3, 2):
        crud.record_round(session=db, run_id=run.id, record=make_round_record(r, nodes=(11, 12)))
    db.commit()

    # Execute
    totals = crud.run_totals(session=db, run_id=run.id)

    # Assert
    assert totals["latest_round"].round == 3
    assert (totals["rounds_recorded"], totals["participants"]) == (3, 6)
    assert (totals["uplink_bytes"], totals["downlink_bytes"]) == (6000, 12000)
    assert totals["energy_j"] == pytest.approx(9.0)


def test_run_totals_of_run_without_rounds(db: Session) -> None:
    run = create_random_run(db, status="running")
    totals = crud.run_totals(session=db, run_id=run.id)
    assert (totals["rounds_recorded"], totals["energy_j"], totals["latest_round"]) == (0, 0.0, None)
