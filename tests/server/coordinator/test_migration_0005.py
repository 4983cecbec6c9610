"""Alembic 0005 (store-scale indexes, precision summary, round device counts), both databases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect, select

from server.coordinator import crud
from server.coordinator.core.db import (
    alembic_config,
    make_engine,
    make_session_factory,
    upgrade_head,
)
from server.coordinator.services.startup import init_db
from server.coordinator.tables import PrecisionSummary, Round
from tests.utils.db import BACKENDS, empty_database
from tests.utils.run import create_random_run, make_round_record


@pytest.fixture(params=BACKENDS)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with empty_database(request.param, tmp_path) as url:
        yield url


def _summaries(url: str) -> list[tuple[int, int, str, int, int, float, int, float]]:
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            ps = PrecisionSummary
            stmt = select(
                ps.run_id,
                ps.round,
                ps.layer,
                ps.devices,
                ps.min_bits,
                ps.mean_bits,
                ps.max_bits,
                ps.mean_gavg,
            ).order_by(ps.run_id, ps.round, ps.layer)
            return [tuple(row) for row in session.execute(stmt)]
    finally:
        engine.dispose()


def _round_devices(url: str) -> list[int]:
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            return list(session.scalars(select(Round.devices).order_by(Round.round)))
    finally:
        engine.dispose()


def test_migration_0005_backfills_summary_of_stored_rounds(empty_db_url: str) -> None:
    # Prepare: rounds recorded at head, so their summary was written with them
    init_db(empty_db_url)
    engine = make_engine(empty_db_url)
    try:
        with make_session_factory(engine)() as session:
            run = create_random_run(session, status="running")
            for r in (1, 2):
                record = make_round_record(r, nodes=(11, 12, 13), layers=("conv1", "fc"))
                crud.record_round(session=session, run_id=run.id, record=record)
            session.commit()
    finally:
        engine.dispose()
    written = _summaries(empty_db_url)

    # Execute: back to 0004 (the summary table goes), then up again
    command.downgrade(alembic_config(empty_db_url), "0004")
    engine = make_engine(empty_db_url)
    try:
        assert "precision_summaries" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()
    upgrade_head(empty_db_url)

    # Assert: the back-filled summary is the one written with the rounds
    backfilled = _summaries(empty_db_url)
    assert len(written) == 4
    assert [row[:5] + row[6:7] for row in backfilled] == [row[:5] + row[6:7] for row in written]
    for new, old in zip(backfilled, written, strict=True):
        assert new[5] == pytest.approx(old[5]) and new[7] == pytest.approx(old[7])
    assert _round_devices(empty_db_url) == [3, 3]
