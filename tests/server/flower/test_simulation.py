"""Federated runs on Flower's simulation engine (Ray), end to end, plus the results files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from apt_core import federated as fed
from apt_core.config import PrecisionPolicy
from server.flower.records import RoundReport
from server.flower.server_app import ServerSettings
from server.flower.simulation import comparison, run_federated
from server.flower.simulation_report import plot_all, write_markdown
from tests.utils.run import make_round_record

POLICY = PrecisionPolicy(check_every=3)
NEW_POLICY = PrecisionPolicy(bits_min=10, bits_max=12, bits_init=10, check_every=3)
MCU = {"mcu": {"bits_max": 11}}
SETTINGS = ServerSettings(
    run=fed.RunSettings(task="digits", arch="mlp", batch_size=64),
    rounds=2,
    min_nodes=3,
    timeout=300.0,
)


@pytest.fixture(scope="module")
def failing_run() -> list[RoundReport]:
    """3 clients, 2 rounds of apt; partition 2 raises in round 2."""
    return run_federated(
        SETTINGS, clients=3, provider=lambda: (1, POLICY, {}), node_config={2: {"fail-at-round": 2}}
    )


@pytest.mark.slow
def test_simulation_apt_finishes_and_records_precision_history(
    failing_run: list[RoundReport],
) -> None:
    # Assert
    assert [r.round for r in failing_run] == [1, 2]
    first = failing_run[0]
    assert first.participants == 3 and first.failures == 0 and first.accuracy is not None
    for client in first.clients:
        assert [x.layer for x in client.layers] == ["fc1", "fc2", "fc3"]
        assert all(x.checks >= 1 and 4 <= x.bits <= 16 for x in client.layers)
        assert client.uplink_bytes > 0 and client.downlink_bytes > 0 and client.energy_j > 0
    assert set(first.global_bits) == {"fc1", "fc2", "fc3"} and first.packed_model


@pytest.mark.slow
def test_simulation_client_failure_recorded_round_completes(failing_run: list[RoundReport]) -> None:
    # Assert
    second = failing_run[1]
    assert second.participants == 2 and second.failures == 1
    (failed,) = [c for c in second.clients if c.failure is not None]
    assert "failed on purpose at round 2" in failed.failure
    assert failed.downlink_bytes > 0 and failed.uplink_bytes == 0
    assert second.accuracy is not None and second.global_bits


@pytest.mark.slow
def test_simulation_new_policy_version_reaches_every_client() -> None:
    # Prepare
    calls: list[int] = []

    def provider() -> tuple[int, PrecisionPolicy, dict]:
        calls.append(1)
        # the strategy asks once for the initial model, then once per round
        return (1, POLICY, {}) if len(calls) <= 2 else (2, NEW_POLICY, MCU)

    # Execute
    records = run_federated(
        SETTINGS, clients=3, provider=provider, node_config={0: {"device-class": "mcu"}}
    )

    # Assert
    first, second = records
    assert first.policy_version == 1 and second.policy_version == 2
    assert {c.policy_version for c in first.clients} == {1}
    assert second.participants == 3 and second.rejections == 0
    for client in second.clients:
        assert client.policy_version == 2
        top = 11 if client.device_class == "mcu" else 12
        assert all(10 <= x.bits <= top for x in client.layers)
    assert sorted(c.device_class for c in second.clients) == ["mcu", "standard", "standard"]
    assert all(10 <= b <= 12 for b in second.global_bits.values())


@pytest.mark.slow
def test_simulation_same_seed_same_devices_each_round_and_a_repeated_run_is_identical() -> None:
    # Prepare: 6 devices, half sampled per round; each run's engine hands out new node ids
    settings = dataclasses.replace(SETTINGS, rounds=3, fraction_train=0.5, min_nodes=6)

    def run(method: str, seed: int) -> list[RoundReport]:
        run = dataclasses.replace(settings.run, method=method, seed=seed)
        return run_federated(
            dataclasses.replace(settings, run=run), clients=6, provider=lambda: (1, POLICY, {})
        )

    def partitions(records: list[RoundReport]) -> list[list[int]]:
        return [sorted(c.partition_id for c in r.clients) for r in records]  # type: ignore[misc]

    # Execute
    apt, apt_again = run("apt", 0), run("apt", 0)
    fp32, other_seed = run("fp32", 0), run("fp32", 1)

    # Assert: the same devices; and a run repeated is the same run, bit for bit
    assert partitions(apt) == partitions(fp32) == partitions(apt_again)
    assert all(len(p) == 3 for p in partitions(apt))
    assert partitions(other_seed) != partitions(apt)
    assert [r.accuracy for r in apt] == [r.accuracy for r in apt_again]
    assert [r.packed_model for r in apt] == [r.packed_model for r in apt_again]


def test_results_files_and_comparison(tmp_path: Path) -> None:
    # Prepare
    from server.flower.simulation import _method_result

    records = [make_round_record(r) for r in (1, 2, 3)]
    apt = _method_result("apt", SETTINGS, 3, records)
    fp32 = _method_result("fp32", SETTINGS, 3, [make_round_record(r) for r in (1, 2, 3)])
    for x in fp32["rounds_log"]:
        x["global_bits"] = {}
    fp32["total_energy_j"] *= 4
    results = {"policy": "default", "runs": [apt, fp32], "comparison": comparison([apt, fp32])}

    # Execute
    (tmp_path / "results.json").write_text(json.dumps(results))
    write_markdown(results, tmp_path)
    paths = plot_all(results, tmp_path)

    # Assert
    assert results["comparison"]["apt"]["energy_saving"] == pytest.approx(0.75)
    assert {p.name for p in paths} == {"accuracy.png", "energy.png", "bytes.png", "bits_apt.png"}
    assert all(p.stat().st_size > 1000 for p in paths)
    md = (tmp_path / "results.md").read_text()
    assert "apt vs fp32" in md and "| 3 |" in md
    assert apt["final_accuracy"] == records[-1].accuracy


def test_simulate_cli_rejects_unknown_method(tmp_path: Path) -> None:
    # Prepare
    from typer.testing import CliRunner

    from server.cli.flower import fl_cli

    # Execute
    res = CliRunner().invoke(fl_cli, ["simulate", "--method", "apt,fixed8", "--out", str(tmp_path)])

    # Assert
    assert res.exit_code != 0 and "fixed8" in res.output


def test_server_settings_run_config_roundtrip() -> None:
    # Prepare
    settings = ServerSettings(
        run=fed.RunSettings(task="mnist1d", arch="mlp", method="fp32", alpha=None, seed=3, lr=0.1),
        rounds=7,
        fraction_train=0.5,
        min_nodes=4,
        timeout=30.0,
    )

    # Execute
    back = ServerSettings.from_run_config(settings.to_run_config())

    # Assert
    assert back == settings
    assert ServerSettings.from_run_config({}).run == fed.RunSettings()


def test_build_provider_and_recorder_writes_jsonl(tmp_path: Path) -> None:
    # Prepare
    from server.flower.server_app import build_provider_and_recorder

    provider, recorder = build_provider_and_recorder(
        {"policy": "aggressive", "out-dir": str(tmp_path)}
    )

    # Execute
    version, policy, overrides = provider()
    recorder(make_round_record(1))
    recorder(make_round_record(2))

    # Assert
    assert (version, policy.bits_max, overrides) == (1, 8, {})
    lines = (tmp_path / "rounds.jsonl").read_text().splitlines()
    assert [json.loads(x)["round"] for x in lines] == [1, 2]
    assert (tmp_path / "global-model.bin").read_bytes() == b"packed-model"
    with pytest.raises(ValueError, match="coordinator-run-id"):
        build_provider_and_recorder({"db-url": "sqlite://"})
