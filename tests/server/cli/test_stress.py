"""Tests of the load tool's stress scenario (server.cli.load.stress).

A tiny real run on SQLite, and its pure checks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from server.cli.load.stress import StressOptions
from server.cli.load.stress_traffic import queue_check
from server.cli.service import REPO_ROOT


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_stress_tiny_run_on_sqlite_has_no_5xx_and_loses_no_run(tmp_path: Path) -> None:
    # Prepare: a few stalled sockets, a burst of 6 run starts held queued, 3 policy
    # writers, reads at 10 req/s; short head and body deadlines so both close within 8 s
    args = [
        "load",
        "--scenario",
        "stress",
        "--database",
        "sqlite",
        "--rate",
        "10",
        "--idle-duration",
        "2",
        "--duration",
        "8",
        "--after-duration",
        "2",
        "--stalled",
        "8",
        "--run-burst",
        "6",
        "--writers",
        "3",
        "--writes",
        "4",
        "--rounds",
        "1",
        "--clients",
        "2",
        "--max-active-runs",
        "0",
        "--out",
        str(tmp_path),
    ]
    env = {**os.environ, "APTFLEET_HEADER_TIMEOUT": "2", "APTFLEET_BODY_TIMEOUT": "3"}

    # Execute
    done = subprocess.run(
        [sys.executable, "-m", "server.cli.main", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )

    # Assert
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("stress.json", "stress.md", "stress.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    result = json.loads((tmp_path / "stress.json").read_text())["databases"]["sqlite"]
    assert all(result["verdict"].values()), result["verdict"]
    assert result["run_burst"]["answers"] == {"201": 6}
    assert result["run_burst"]["check"]["lost"] == []
    assert result["run_burst"]["check"]["statuses"] == {"queued": 6}
    assert set(result["policy_writes"]["answers"]) <= {"200", "409"}
    assert result["reads"]["phases"]["stress"]["errors"] == 0
    closed = result["stalled"]["closed_by_server"]
    assert "closed without response" in closed["partial_head"]
    assert "408" in closed["partial_body"]
    assert "--scenario stress --database sqlite" in (tmp_path / "stress.md").read_text()


def test_queue_check_wants_positions_one_to_k_in_creation_order() -> None:
    # Prepare: GET /runs data, newest first
    def run(i: int, status: str, position: int | None, at: str) -> dict[str, object]:
        return {
            "id": i,
            "status": status,
            "queue_position": position,
            "created_at": f"2026-01-01T00:00:{at}",
        }

    good = [run(3, "queued", 2, "03"), run(2, "queued", 1, "02"), run(1, "running", None, "01")]
    ids_swapped = [run(3, "queued", 1, "02"), run(2, "queued", 2, "03")]
    gap = [run(3, "queued", 3, "03"), run(2, "queued", 1, "02")]
    stray = [run(2, "queued", 1, "02"), run(1, "pending", 2, "01")]
    out_of_order = [run(3, "queued", 1, "03"), run(2, "queued", 2, "02")]

    # Execute
    checks = [queue_check(runs) for runs in (good, ids_swapped, gap, stray, out_of_order)]

    # Assert
    assert [c["consistent"] for c in checks] == [True, True, False, False, False]
    assert [c["id_order"] for c in checks[:2]] == [True, False]


def test_stress_command_names_every_flag_and_the_database() -> None:
    # Execute
    command = StressOptions(rate=50, stalled=300, run_burst=40).command("postgresql")

    # Assert
    assert command.startswith("aptfleet load --scenario stress --database postgresql --rate 50 ")
    assert "--stalled 300 --run-burst 40" in command
    assert "--max-active-runs 1" in command
