"""Deployment engine end to end: a real SuperLink and two SuperNodes on loopback."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from apt_core import federated as fed
from server.flower import fleet, processes
from server.flower.server_app import ServerSettings

PYPROJECT = Path(__file__).resolve().parents[3] / "pyproject.toml"
SETTINGS = ServerSettings(
    run=fed.RunSettings(task="digits", arch="mlp", batch_size=64),
    rounds=2,
    min_nodes=2,
    timeout=300.0,
)


def _declared_keys() -> set[str]:
    """Keys of pyproject's [tool.flwr.app.config] (the SuperLink rejects any other)."""
    return set(
        tomllib.loads(PYPROJECT.read_text())
        .get("tool", {})
        .get("flwr", {})
        .get("app", {})
        .get("config", {})
    )


def _submit(state: fleet.FleetState, state_dir: Path) -> fleet.RunOutcome:
    """The coordinator's path when pyproject declares every key, else ``run_app``.

    ``run_app`` gets the declared subset; the app's defaults fill in the rest.
    """
    wanted = SETTINGS.to_run_config()
    if set(wanted) <= _declared_keys():
        return fleet.submit_to_superlink(
            state.address,
            SETTINGS,
            timeout=400,
            ca_file=None if state.certs is None else state.certs.ca_cert,
        )
    return fleet.run_app(
        {k: v for k, v in wanted.items() if k in _declared_keys()}, state_dir, timeout=400
    )


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_fleet_runs_two_rounds_and_stops_everything(tmp_path: Path) -> None:
    # Prepare: the default fleet (TLS, SuperNode authentication)
    state_dir = tmp_path / "fleet"
    state = fleet.up(2, state_dir)
    pids = [p.pid for p in state.procs]
    try:
        # Execute
        outcome = _submit(state, state_dir)
        log = fleet.run_log(outcome.run_id, state_dir)
        members = processes.process_group_members(set(pids))
    finally:
        stopped = fleet.down(state_dir)

    # Assert
    assert state.certs is not None and not state.insecure
    assert all(p.node_id for p in state.procs if p.role.startswith("supernode"))
    assert outcome.status == "finished:completed", (outcome, log[-3000:])
    assert outcome.ok
    assert "Round 2: 2 aggregated, 0 rejected, 0 failed." in log
    assert sorted(stopped) == sorted(pids)
    assert len(members) >= 3
    assert not processes.process_group_members(set(pids)), "processes of the fleet survived 'down'"
    assert not any(os.path.exists(f"/proc/{pid}/cmdline") and processes.alive(pid) for pid in pids)
    assert fleet.status(state_dir) == {"up": False, "procs": []}


@pytest.mark.timeout(60)
def test_fleet_cli_status_and_down_without_fleet(tmp_path: Path) -> None:
    # Prepare
    from typer.testing import CliRunner

    from server.cli.flower import fl_cli

    # Execute
    status = CliRunner().invoke(fl_cli, ["fleet", "status", "--state-dir", str(tmp_path)])
    down = CliRunner().invoke(fl_cli, ["fleet", "down", "--state-dir", str(tmp_path)])
    run = CliRunner().invoke(fl_cli, ["fleet", "run", "--state-dir", str(tmp_path)])

    # Assert
    assert status.exit_code == 0 and '"up": false' in status.output
    assert down.exit_code == 0 and "no fleet" in down.output
    assert run.exit_code == 1 and "No fleet is up" in run.output
