"""Tests of the load benchmark (server.cli.load): a short real run, and its pure parts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from server.cli.load.benchmark import Options
from server.cli.load.stats import errors, percentile, timeline
from server.cli.load.traffic import Sample
from server.cli.service import REPO_ROOT


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_load_short_run_writes_outputs_without_errors(tmp_path: Path) -> None:
    # Prepare: 5 req/s for 3-5 s, one-round runs of two clients, a burst of 5
    args = [
        "--rate",
        "5",
        "--duration",
        "3",
        "--max-duration",
        "5",
        "--idle-duration",
        "0",
        "--rounds",
        "1",
        "--clients",
        "2",
        "--burst",
        "5",
        "--out",
        str(tmp_path),
    ]

    # Execute
    done = subprocess.run(
        [sys.executable, "-m", "server.cli.main", "load", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )

    # Assert
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("load.json", "load.md", "load.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    result = json.loads((tmp_path / "load.json").read_text())
    assert result["command"].startswith("aptfleet load --rate 5 --duration 3")
    assert result["load"]["errors"] == 0
    assert result["latency"]["count"] >= 15
    assert result["rounds"]["loaded"]["status"] == "completed"
    assert [t["status"] for t in result["rounds"]["baselines"]] == ["completed"] * 2
    assert result["burst"]["answered_2xx"] == 5
    assert "aptfleet load --rate 5" in (tmp_path / "load.md").read_text()


def test_load_module_entry_point_takes_the_same_flags(tmp_path: Path) -> None:
    # Prepare: a load.json to rewrite the report from
    report = REPO_ROOT / "docs" / "results" / "load.json"
    (tmp_path / "load.json").write_text(report.read_text())

    # Execute
    done = subprocess.run(
        [sys.executable, "-m", "server.cli.load", "--report-only", "--out", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    # Assert
    assert done.returncode == 0, done.stderr[-3000:]
    assert (
        (tmp_path / "load.md")
        .read_text()
        .startswith("# Coordinator under read load while a run trains")
    )


def test_options_command_names_the_cli_and_only_changed_run_flags() -> None:
    # Execute
    default = Options(rate=100, duration=60, idle_duration=20).command
    short = Options(rate=5, duration=3, idle_duration=0, rounds=1, clients=2).command

    # Assert
    assert default == "aptfleet load --rate 100 --duration 60 --idle-duration 20"
    assert short == ("aptfleet load --rate 5 --duration 3 --idle-duration 0 --rounds 1 --clients 2")


def test_timeline_counts_answers_and_errors_per_second() -> None:
    # Prepare
    samples = [
        Sample("GET /runs", 0.1, 5.0, 200),
        Sample("GET /runs", 0.6, 7.0, 200),
        Sample("GET /runs", 1.2, 0.0, 0, "ReadTimeout"),
        Sample("GET /devices", 1.5, 3.0, 503),
    ]

    # Execute
    seconds = timeline(samples)

    # Assert
    assert [(p["due"], p["ok"], p["errors"]) for p in seconds] == [(2, 2, 0), (2, 0, 2)]
    assert errors(samples) == 2
    assert percentile([5.0, 7.0], 0.5) == pytest.approx(6.0)
