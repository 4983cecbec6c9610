"""Runs on the simulation engine fail loudly: no device trained, or most of them failed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from apt_core import federated as fed
from apt_core.config import PrecisionPolicy
from server.flower.records import RoundReport
from server.flower.run_health import RunFailed
from server.flower.server_app import ServerSettings
from server.flower.simulation import run_federated

POLICY = PrecisionPolicy(check_every=3)
SETTINGS = ServerSettings(
    run=fed.RunSettings(task="digits", arch="mlp", batch_size=64),
    rounds=2,
    min_nodes=3,
    timeout=300.0,
)


@pytest.mark.slow
def test_run_federated_round_without_trained_device_fails_run() -> None:
    # Prepare: every device raises in round 1
    records: list[RoundReport] = []
    every_device = {pid: {"fail-at-round": 1} for pid in range(3)}

    # Execute
    with pytest.raises(RunFailed) as info:
        run_federated(
            SETTINGS,
            clients=3,
            provider=lambda: (1, POLICY, {}),
            recorder=records.append,
            node_config=every_device,
        )

    # Assert: the failed round is on record, the run stopped there, with the devices' reason
    assert [(r.round, r.participants, r.failures) for r in records] == [(1, 0, 3)]
    assert "Round 1: no reply was aggregated (3 sampled: 3 failed, 0 rejected)" in str(info.value)
    assert "failed on purpose at round 1" in str(info.value)


@pytest.mark.slow
def test_run_federated_mostly_failed_devices_fail_run_at_end() -> None:
    # Prepare: one round, two of three devices fail (the round still aggregates one)
    records: list[RoundReport] = []
    one_round = ServerSettings(run=SETTINGS.run, rounds=1, min_nodes=3, timeout=300.0)

    # Execute
    with pytest.raises(RunFailed, match=r"2 of the run's 3 sampled replies \(67%\)"):
        run_federated(
            one_round,
            clients=3,
            provider=lambda: (1, POLICY, {}),
            recorder=records.append,
            node_config={0: {"fail-at-round": 1}, 1: {"fail-at-round": 1}},
        )

    # Assert
    assert [(r.round, r.participants, r.failures) for r in records] == [(1, 1, 2)]


@pytest.mark.slow
def test_simulate_cli_diverging_run_exits_non_zero_and_results_say_failed(tmp_path: Path) -> None:
    # Prepare: a learning rate that makes every device's weights blow up (replies rejected)
    from typer.testing import CliRunner

    from server.cli.flower import fl_cli

    args = ["simulate", "--task", "digits", "--model", "mlp", "--method", "fp32"]
    args += ["--clients", "3", "--fraction", "1.0", "--rounds", "2", "--lr", "1e30"]

    # Execute
    res = CliRunner().invoke(fl_cli, [*args, "--out", str(tmp_path)])

    # Assert
    results = json.loads((tmp_path / "results.json").read_text())
    assert res.exit_code == 1
    assert results["status"] == "failed"
    assert (
        "Round 1: no reply was aggregated (3 sampled: 0 failed, 3 rejected)"
        in (results["failures"]["fp32"])
    )
    assert results["failure_reasons"][0].startswith("rejected: ")
    assert "the fp32 run failed" in res.output
    assert "The fp32 run failed" in (tmp_path / "results.md").read_text()


def test_results_status_failed_when_any_method_failed(tmp_path: Path) -> None:
    # Prepare
    from server.flower.simulation import _method_result, _results, run_status
    from server.flower.simulation_report import write_markdown
    from tests.utils.run import make_round_record

    failure = RunFailed("Round 2: no reply was aggregated (3 sampled: 3 failed, 0 rejected).", [])
    apt = {
        **_method_result("apt", SETTINGS, 3, [make_round_record(1)]),
        **run_status(failure),
    }
    fp32 = {**_method_result("fp32", SETTINGS, 3, [make_round_record(1)]), **run_status(None)}

    # Execute
    both = _results([apt, fp32], ["apt", "fp32"], "default", POLICY)
    alone = _results([fp32], ["fp32"], "default", POLICY)
    write_markdown(both, tmp_path)

    # Assert
    assert both["status"] == "failed" and list(both["failures"]) == ["apt"]
    assert both["runs"][0]["failure_reasons"] == []
    assert (alone["status"], alone["failures"]) == ("completed", {})
    assert "**The apt run failed**: Round 2" in (tmp_path / "results.md").read_text()
