"""The training runs of the benchmark: start them, wait for them, time their rounds."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from server.cli.service import wait_for

log = logging.getLogger("load")

DEFAULT_ROUNDS = 6
DEFAULT_CLIENTS = 4
RUN_BODY: dict[str, Any] = {
    "task": "digits",
    "method": "apt",
    "clients": DEFAULT_CLIENTS,
    "fraction": 1.0,
    "rounds": DEFAULT_ROUNDS,
    "alpha": 1.0,
    "seed": 0,
}
TERMINAL = {"completed", "failed", "stopped", "interrupted"}
RUN_TIMEOUT_S = 900.0


@dataclass
class RunTiming:
    """Wall times of one run, from its rounds' ``created_at``."""

    run_id: int
    label: str
    status: str
    started_at: str
    finished_at: str
    round_ends: list[str] = field(default_factory=list)
    round_s: list[float] = field(default_factory=list)

    @property
    def steady_round_s(self) -> list[float]:
        """Rounds 2..N: round 1 also pays for starting Ray and the first model."""
        return self.round_s[1:]


def parse_ts(value: str) -> datetime:
    """An API timestamp as an aware datetime (naive ones are UTC)."""
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def start_run(api: httpx.Client, body: Mapping[str, Any]) -> int:
    """POST /runs with ``body``; returns the new run's id."""
    response = api.post("/runs", json=dict(body))
    response.raise_for_status()
    return int(response.json()["id"])


def _run_status(api: httpx.Client, run_id: int) -> str:
    """The run's status; "unknown" when an overloaded service does not answer in time."""
    try:
        return str(api.get(f"/runs/{run_id}").json()["status"])
    except httpx.HTTPError as exc:
        log.warning("status of run %s: %s", run_id, type(exc).__name__)
        return "unknown"


def timing(api: httpx.Client, run_id: int, label: str) -> RunTiming:
    """The run's round wall times from its rounds' ``created_at``."""
    run = api.get(f"/runs/{run_id}").json()
    # a run has at most 500 rounds: one page of 1000 holds them all
    rounds = api.get(f"/runs/{run_id}/rounds", params={"limit": 1000}).json()["data"]
    ends = [parse_ts(r["created_at"]) for r in rounds]
    starts = [parse_ts(run["started_at"]), *ends[:-1]]
    return RunTiming(
        run_id=run_id,
        label=label,
        status=run["status"],
        started_at=run["started_at"],
        finished_at=run["finished_at"] or "",
        round_ends=[r["created_at"] for r in rounds],
        round_s=[(e - s).total_seconds() for s, e in zip(starts, ends, strict=True)],
    )


def train(api: httpx.Client, label: str, body: Mapping[str, Any]) -> RunTiming:
    """Start a run, wait until it ends, and return its timing."""
    run_id = start_run(api, body)
    log.info("%s: run %s started", label, run_id)
    status = wait_for(
        lambda: (s := _run_status(api, run_id)) in TERMINAL and s,
        RUN_TIMEOUT_S,
        f"run {run_id} to finish",
        every=2.0,
    )
    result = timing(api, run_id, label)
    log.info(
        "%s: run %s %s, rounds %s s", label, run_id, status, [round(s, 2) for s in result.round_s]
    )
    return result


def db_run_status(data_dir: Path, run_id: int) -> str:
    """The run's status read straight from the SQLite file: works when the API does not."""
    try:
        with sqlite3.connect(
            f"file:{data_dir / 'aptfleet.db'}?mode=ro", uri=True, timeout=5
        ) as connection:
            row = connection.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
    except sqlite3.Error:
        return "unknown"
    return str(row[0]) if row else "unknown"
