"""``aptfleet store-bench``: the store at fleet scale, measured on SQLite and PostgreSQL.

For each database: a new, empty database; a synthetic run of N devices x R rounds written
round by round through ``crud.record_round`` (each write + commit timed); then a real
``aptfleet serve`` on it, every API read and the run's dashboard page timed, and the
coordinator's memory sampled while four readers loop over the heaviest reads.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import statistics
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, text

from server.cli.load.store_data import StoreShape, create_store_run, write_rounds
from server.cli.load.store_reads import (
    api_reads,
    dashboard_read,
    rss_under_readers,
    signed_in_client,
    time_read,
)
from server.cli.load.stress import POSTGRES_URL, _database
from server.cli.service import Coordinator
from server.coordinator.core.db import make_engine, make_session_factory
from server.coordinator.services.startup import init_db
from server.coordinator.tables import Device

log = logging.getLogger(__name__)

#: The targets of issue 11 (benchmark, not timed tests).
TARGETS = {"api_p99_ms": 100.0, "dashboard_ms": 300.0, "rss_bytes": 500e6, "write_s": 0.5}


@dataclass(frozen=True)
class StoreBenchOptions:
    """What ``aptfleet store-bench`` measures."""

    databases: tuple[str, ...] = ("sqlite", "postgresql")
    devices: int = 1000
    rounds: int = 250
    postgres_url: str = POSTGRES_URL
    repeats: int = 50
    rss_seconds: float = 20.0


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "mean_s": statistics.fmean(values),
        "p50_s": statistics.median(values),
        "p99_s": ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))],
        "max_s": ordered[-1],
    }


def _generate(url: str, shape: StoreShape) -> tuple[int, int, dict[str, Any]]:
    """Write the synthetic run; its id, one device's id and the write times."""
    init_db(url)
    engine = make_engine(url)
    try:
        factory = make_session_factory(engine)
        run_id = create_store_run(factory, shape)

        def progress(round_: int, seconds: float) -> None:
            if round_ % 25 == 0 or round_ == 1:
                log.warning("round %s/%s written in %.3f s", round_, shape.rounds, seconds)

        times = write_rounds(factory, run_id, shape, on_round=progress)
        with factory() as session:
            device_id = session.scalar(select(Device.id).order_by(Device.id).limit(1))
            # fresh planner statistics, as autovacuum's analyze leaves a table that grew
            # by 10%: read right after the bulk write, PostgreSQL still estimated 817 rows
            # for the run's 1M and sorted them all for a 1,000-row page (280 ms, not 0.2 ms)
            session.execute(text("ANALYZE"))
            session.commit()
    finally:
        engine.dispose()
    cpu = [a + b for a, b in zip(times.cpu, times.server_cpu, strict=True)]
    writes = {
        "rounds": len(times.wall),
        **_percentiles(times.wall),
        "first_s": times.wall[0],
        "cpu_p50_s": statistics.median(cpu),
        "cpu_p99_s": _percentiles(cpu)["p99_s"],
        "server_cpu_p50_s": statistics.median(times.server_cpu),
    }
    return run_id, int(device_id or 1), writes


def _reads(
    coordinator: Coordinator,
    token: str,
    run_id: int,
    device_id: int,
    shape: StoreShape,
    options: StoreBenchOptions,
) -> dict[str, Any]:
    """Latency of every read, then memory under four readers."""
    reads = [*api_reads(run_id, device_id, shape.rounds), dashboard_read(run_id)]
    client = signed_in_client(coordinator.base, token)
    try:
        timed = []
        for read in reads:
            timed.append(time_read(client, read, options.repeats, coordinator.pid))
            log.warning("%s: p99 %.1f ms", read.label, timed[-1]["p99_ms"])
    finally:
        client.close()
    heavy = [r for r in reads if r.params.get("limit") == 1000 or r.dashboard]
    memory = rss_under_readers(
        coordinator.pid,
        lambda: signed_in_client(coordinator.base, token),
        heavy,
        seconds=options.rss_seconds,
    )
    return {"reads": timed, "memory": memory}


def measure_database(database: str, options: StoreBenchOptions) -> dict[str, Any]:
    """Generate the store on a new database of kind ``database`` and measure it."""
    shape = StoreShape(devices=options.devices, rounds=options.rounds)
    data_dir = Path(tempfile.mkdtemp(prefix="aptfleet-store-"))
    load: dict[str, float] = {}
    try:
        with _database(database, data_dir, options.postgres_url) as (url, described):
            log.warning("%s: writing %s x %s devices", database, shape.rounds, shape.devices)
            load["writes start"] = os.getloadavg()[0]
            run_id, device_id, writes = _generate(url, shape)
            coordinator = Coordinator(data_dir, url)
            coordinator.start(timeout=120)
            try:
                token = coordinator.token("admin", "store-bench")
                load["reads start"] = os.getloadavg()[0]
                reads = _reads(coordinator, token, run_id, device_id, shape, options)
                load["reads end"] = os.getloadavg()[0]
            finally:
                coordinator.stop()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return {
        "database": database,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command_of(database, options),
        "described": described,
        "shape": {**asdict(shape), "precision_rows": shape.precision_rows},
        "writes": writes,
        "load_average": load,
        **reads,
    }


def command_of(database: str, options: StoreBenchOptions) -> str:
    """The command line that measures ``database`` with ``options``."""
    defaults = StoreBenchOptions()
    parts = ["aptfleet store-bench", f"--database {database}"]
    for name in ("devices", "rounds", "repeats", "rss_seconds"):
        if getattr(options, name) != getattr(defaults, name):
            parts.append(f"--{name.replace('_', '-')} {getattr(options, name)}")
    return " ".join([*parts, "--out docs/results"])


def machine() -> dict[str, Any]:
    """Where the figures were measured."""
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
    }


def run_store_bench(options: StoreBenchOptions) -> dict[str, Any]:
    """Every database in turn; the report's figures."""
    results = {}
    for database in options.databases:
        results[database] = measure_database(database, options)
    return {
        "kind": "measured",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "targets": TARGETS,
        "options": asdict(options),
        "machine": machine(),
        "results": results,
    }
