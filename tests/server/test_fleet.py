"""Deployment engine end to end: a real SuperLink and two SuperNodes on loopback."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from server import fleet

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
WANTED = {"num-server-rounds": 2, "arch": "mlp", "batch-size": 64, "min-nodes": 2}


def _overrides() -> dict:
    """The wanted run_config overrides that pyproject's [tool.flwr.app.config] declares
    (the SuperLink rejects any other key)."""
    cfg = tomllib.loads(PYPROJECT.read_text()).get("tool", {}).get("flwr", {}) \
        .get("app", {}).get("config", {})
    return {k: v for k, v in WANTED.items() if k in cfg}


def _group_members(pgids: set[int]) -> set[int]:
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[2]) in pgids and stat[0] != "Z":
                out.add(int(entry.name))
    return out


@pytest.mark.slow
def test_fleet_runs_two_rounds_and_stops_everything(tmp_path: Path) -> None:
    # Prepare
    state_dir = tmp_path / "fleet"
    state = fleet.up(2, state_dir)
    pids = [p.pid for p in state.procs]
    try:
        # Execute
        outcome = fleet.run_app(_overrides(), state_dir, timeout=400)
        log = fleet.run_log(outcome.run_id, state_dir)
        members = _group_members(set(pids))
    finally:
        stopped = fleet.down(state_dir)

    # Assert
    assert outcome.status == "finished:completed", (outcome, log[-3000:])
    assert outcome.ok
    assert "Round 2: 2 aggregated, 0 rejected, 0 failed." in log
    assert sorted(stopped) == sorted(pids)
    assert len(members) >= 3
    assert not _group_members(set(pids)), "processes of the fleet survived 'down'"
    assert not any(os.path.exists(f"/proc/{pid}/cmdline") and fleet._alive(pid)
                   for pid in pids)
    assert fleet.status(state_dir) == {"up": False, "procs": []}
