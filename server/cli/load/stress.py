"""``aptfleet load --scenario stress``: the coordinator under stress, reads measured.

Stalled clients, a burst of run starts and concurrent policy writes, with steady reads
measured throughout.

For each database (a temporary SQLite file; a fresh PostgreSQL database created next to
``--postgres-url`` and dropped afterwards) a real ``aptfleet serve`` process with its real
run launcher is started on 127.0.0.1, and then, on one timeline:

1. idle: ``rate`` reads/s (GET /api/v1/runs, /api/v1/devices, /healthz) and nothing else;
2. stress, for ``duration`` s: ``stalled`` raw sockets from 127.0.0.2 send partial heads or
   partial bodies and are held (reconnected when the server closes them); after a few
   seconds ``run_burst`` simultaneous ``POST /api/v1/runs`` and ``writers`` admins doing
   ``PUT /api/v1/policy`` back to back; the queue is read every few seconds;
3. after: the stalled sockets are closed; the reads go on for ``after_duration`` s.

Then every run the burst created is checked (stored, queued/pending/running/completed,
queue positions 1..k), the policy history is checked (versions 1..n, one per 200), the
unfinished runs are stopped and the coordinator is ended. Every loop is bounded in count
and time; the command stops by itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

from server.cli.load.stalled import hold_stalled
from server.cli.load.stress_plot import plot_stress
from server.cli.load.stress_report import earlier_summary, markdown, result_of
from server.cli.load.stress_traffic import (
    policy_check,
    policy_writers,
    queue_snapshots,
    run_burst,
    runs_check,
    steady_reads,
    stop_unfinished,
)
from server.cli.service import Coordinator, kill_run_jobs, run_job_pids, wait_for

log = logging.getLogger("load")

DATABASES = ("sqlite", "postgresql")
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
#: Seconds between opening the stalled sockets and firing the burst and the writers.
STALL_RAMP_S = 3.0
SNAPSHOT_EVERY_S = 5.0
JOB_EXIT_TIMEOUT_S = 90.0
#: Earlier measurements of a database kept (in summary) when it is measured again.
MAX_EARLIER = 3


@dataclass(frozen=True)
class StressOptions:
    """The flags of ``aptfleet load --scenario stress``."""

    databases: tuple[str, ...] = DATABASES
    rate: float = 50.0
    idle_duration: float = 15.0
    duration: float = 60.0
    after_duration: float = 10.0
    stalled: int = 300
    run_burst: int = 40
    writers: int = 4
    writes: int = 25
    rounds: int = 1
    clients: int = 2
    max_active_runs: int = 1
    postgres_url: str = POSTGRES_URL
    out: Path = Path("docs/results")
    keep: bool = False

    def command(self, database: str) -> str:
        """The command line that reproduces the measurement of ``database``."""
        pg = (
            f" --postgres-url {self.postgres_url}"
            if database == "postgresql" and self.postgres_url != POSTGRES_URL
            else ""
        )
        return (
            f"aptfleet load --scenario stress --database {database}{pg} "
            f"--rate {self.rate:g} --idle-duration {self.idle_duration:g} "
            f"--duration {self.duration:g} --after-duration {self.after_duration:g} "
            f"--stalled {self.stalled} --run-burst {self.run_burst} "
            f"--writers {self.writers} --writes {self.writes} --rounds {self.rounds} "
            f"--clients {self.clients} --max-active-runs {self.max_active_runs}"
        )

    @property
    def run_body(self) -> dict[str, Any]:
        """POST /runs body of every run of the burst (cheap: few rounds and clients)."""
        return {
            "task": "digits",
            "method": "apt",
            "clients": self.clients,
            "fraction": 1.0,
            "rounds": self.rounds,
            "alpha": 1.0,
            "seed": 0,
        }


def run_stress(options: StressOptions) -> dict[str, Any]:
    """Measure every database of ``options`` in turn; write stress.json/.md/.png.

    Results of databases not measured this time are kept from an existing stress.json
    in ``options.out``, so the databases can be measured by separate commands; the
    previous result of a database measured again is kept in summary under ``earlier``.

    Returns
    -------
    dict[str, Any]
        What stress.json holds: ``{"databases": {name: result}}``.
    """
    options.out.mkdir(parents=True, exist_ok=True)
    path = options.out / "stress.json"
    report = json.loads(path.read_text()) if path.exists() else {}
    report.setdefault("databases", {})
    for database in options.databases:
        result = measure(database, options)
        if (previous := report["databases"].get(database)) is not None:
            result["earlier"] = [earlier_summary(previous), *previous.get("earlier", [])][
                :MAX_EARLIER
            ]
        report["databases"][database] = result
        path.write_text(json.dumps(report, indent=2) + "\n")
        log.info("%s: %s", database, result["verdict"])
    write_reports(report, options.out)
    return report


def write_reports(report: dict[str, Any], out: Path) -> None:
    """stress.md and stress.png from the figures of stress.json."""
    (out / "stress.md").write_text(markdown(report))
    plot_stress(report, out / "stress.png")


@contextmanager
def _database(kind: str, data_dir: Path, admin_url: str) -> Iterator[tuple[str, str]]:
    """(URL, description) of an empty database of ``kind``.

    A PostgreSQL one is created fresh next to ``admin_url`` and dropped afterwards.
    """
    if kind == "sqlite":
        yield f"sqlite:///{data_dir / 'aptfleet.db'}", "a new SQLite file (WAL)"
        return
    admin = create_engine(
        admin_url,
        isolation_level="AUTOCOMMIT",
        poolclass=NullPool,
        connect_args={"connect_timeout": 5},
    )
    name = f"aptfleet_stress_{uuid.uuid4().hex[:10]}"
    url = make_url(admin_url).set(database=name)
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
        version = connection.execute(text("SHOW server_version")).scalar()
    try:
        yield (
            url.render_as_string(hide_password=False),
            f"a new PostgreSQL {version} database on {url.host}:{url.port}",
        )
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def measure(database: str, options: StressOptions) -> dict[str, Any]:
    """One stress run on a new, empty database of kind ``database``; its figures."""
    data_dir = Path(tempfile.mkdtemp(prefix="aptfleet-stress-"))
    loadavg = {"before": _loadavg()}
    try:
        with _database(database, data_dir, options.postgres_url) as (url, described):
            service = Coordinator(data_dir, url)
            service.env["APTFLEET_MAX_ACTIVE_RUNS"] = str(options.max_active_runs)
            try:
                service.start(timeout=120)
                tokens = {
                    "reader": service.token("operator", "stress-reader"),
                    "operators": [service.token("operator", f"stress-op{i}") for i in range(2)],
                    "admins": [service.token("admin", f"stress-admin{i}") for i in range(2)],
                }
                log.info("%s: coordinator on %s, %s", database, service.base, described)
                timeline = asyncio.run(_scenario(service, tokens, options, loadavg))
                timeline["limits"] = _limits(service.env)
                checks = _checks(service, tokens, timeline)
            finally:
                service.stop(grace=20)
                kill_run_jobs(data_dir)
                log_text = service.log()
    finally:
        if not options.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    loadavg["after"] = _loadavg()
    return result_of(database, described, options, timeline, checks, loadavg, log_text)


def _limits(env: dict[str, str]) -> dict[str, Any]:
    """The coordinator's client limits in force (its environment, else the defaults)."""
    from server.coordinator.core.config import Settings

    return {
        name: env.get(f"APTFLEET_{name}", Settings.model_fields[name].default)
        for name in ("HEADER_TIMEOUT", "BODY_TIMEOUT", "MAX_REQUESTS_PER_CLIENT", "MAX_ACTIVE_RUNS")
    }


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


async def _scenario(
    service: Coordinator,
    tokens: dict[str, Any],
    options: StressOptions,
    loadavg: dict[str, list[float]],
) -> dict[str, Any]:
    """Idle reads, then the stress scenarios on one timeline, then reads after."""
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.2
    stress_start = t0 + options.idle_duration
    stress_end = stress_start + options.duration
    total = options.idle_duration + options.duration + options.after_duration
    reads = asyncio.create_task(
        steady_reads(service.base, tokens["reader"], options.rate, total, t0)
    )
    await asyncio.sleep(max(0.0, stress_start - loop.time()))
    log.info(
        "stress: %d stalled sockets, then %d run starts and %d policy writers",
        options.stalled,
        options.run_burst,
        options.writers,
    )
    stalled = asyncio.create_task(hold_stalled(service.port, options.stalled, options.duration))
    await asyncio.sleep(STALL_RAMP_S)
    burst_at = loop.time() - t0
    burst = asyncio.create_task(
        run_burst(service.base, tokens["operators"], options.run_burst, options.run_body)
    )
    writes = asyncio.create_task(
        policy_writers(service.base, tokens["admins"], options.writers, options.writes, stress_end)
    )
    snapshots = await queue_snapshots(service.base, tokens["reader"], SNAPSHOT_EVERY_S, stress_end)
    stall_report = await stalled
    loadavg["end_of_stress"] = _loadavg()
    log.info("stress over; reads go on for %.0f s", options.after_duration)
    return {
        "phases": {
            "idle": [0.0, options.idle_duration],
            "stress": [options.idle_duration, stress_end - t0],
            "after": [stress_end - t0, total],
        },
        "burst_at_s": burst_at,
        "samples": await reads,
        "stalled": stall_report,
        "burst": await burst,
        "writes": await writes,
        "snapshots": snapshots,
    }


def _checks(
    service: Coordinator, tokens: dict[str, Any], timeline: dict[str, Any]
) -> dict[str, Any]:
    """What the coordinator stored, then stop the unfinished runs and wait for their jobs."""
    with service.client(tokens["admins"][0]) as api:
        runs = runs_check(api, timeline["burst"])
        policy = policy_check(api, timeline["writes"])
        stop_answers = stop_unfinished(api, timeline["burst"])
    try:
        wait_for(
            lambda: not run_job_pids(service.data_dir),
            JOB_EXIT_TIMEOUT_S,
            "the run jobs to exit",
            every=1.0,
        )
        jobs_exited = True
    except TimeoutError:
        jobs_exited = False
    return {
        "runs": runs,
        "policy": policy,
        "stop_answers": stop_answers,
        "jobs_exited_after_stop": jobs_exited,
    }
