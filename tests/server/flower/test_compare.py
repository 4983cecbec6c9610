"""federated-compare: method names, accuracy over the last rounds, summaries over seeds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from apt_core.config import NAMED_POLICIES
from server.flower.compare import MethodSpec, compare, parse_method, run_accuracy, summarise
from server.flower.compare_report import plot_tradeoffs, verdicts, write_markdown
from server.flower.sampling import SAMPLING

SETTINGS = {"task": "digits", "clients": 4, "fraction": 0.5, "rounds": 6, "alpha": 0.5}


def _run(method: str, seed: int, accs: list[float], energy: float, up: int, **kw: Any) -> dict:
    """A run's results as ``simulate`` writes them (one method)."""
    log = [
        {
            "round": i + 1,
            "accuracy": a,
            "energy_j": energy / len(accs),
            "uplink_bytes": up // len(accs),
            "downlink_bytes": up // len(accs),
        }
        for i, a in enumerate(accs)
    ]
    return {
        **SETTINGS,
        "method": method,
        "seed": seed,
        "policy": kw.get("policy", "default"),
        "sampling": kw.get("sampling", SAMPLING),
        "policy_spec": NAMED_POLICIES[kw.get("policy", "default")].to_dict(),
        "rounds_log": log,
        "final_accuracy": accs[-1],
        "total_energy_j": energy,
        "total_uplink_bytes": up,
        "total_downlink_bytes": up,
    }


def test_parse_method_maps_apt_policies_and_rejects_unknown() -> None:
    # Execute / Assert
    assert parse_method("fp32-q8") == MethodSpec("fp32-q8", "fp32-q8")
    assert parse_method("apt-aggressive") == MethodSpec("apt-aggressive", "apt", "aggressive")
    with pytest.raises(ValueError, match="'apt-fast' is not one of"):
        parse_method("apt-fast")


def test_run_accuracy_is_the_mean_of_the_last_five_rounds() -> None:
    # Prepare
    run = _run("fp32", 0, [0.1, 0.9, 0.5, 0.6, 0.7, 0.8], 1.0, 100)
    run["rounds_log"][-1]["accuracy"] = None  # a round without accuracy is skipped

    # Execute / Assert
    assert run_accuracy(run) == pytest.approx((0.9 + 0.5 + 0.6 + 0.7) / 4)


def test_summarise_paired_gap_savings_and_spread_over_seeds() -> None:
    # Prepare
    runs = {
        "fp32": {
            0: _run("fp32", 0, [0.8] * 6, 10.0, 1000),
            1: _run("fp32", 1, [0.9] * 6, 10.0, 1000),
        },
        "apt": {0: _run("apt", 0, [0.82] * 6, 2.0, 300), 1: _run("apt", 1, [0.86] * 6, 3.0, 400)},
    }

    # Execute
    s = summarise(runs)

    # Assert
    apt = s["apt"]["over_seeds"]
    assert apt["accuracy"]["mean"] == pytest.approx(0.84)
    assert apt["accuracy"]["std"] == pytest.approx(0.02828427, rel=1e-5)
    assert (apt["accuracy"]["min"], apt["accuracy"]["max"]) == pytest.approx((0.82, 0.86))
    assert apt["accuracy_delta"]["mean"] == pytest.approx((0.02 - 0.04) / 2)
    assert apt["energy_saving"]["mean"] == pytest.approx(0.75)
    assert apt["uplink_saving"]["mean"] == pytest.approx(0.65)
    assert any("apt is not ahead of fp32 on accuracy" in v for v in verdicts(s))


def test_compare_reuses_finished_runs_and_writes_report(tmp_path: Path) -> None:
    # Prepare: on disk are fp32 of seed 0; fp32 of seed 1 sampled the old way (Flower's
    # unseeded sampling, no "sampling" entry); apt default of seed 0 run while the default
    # rounded to nearest; apt default of seed 1 as the default is now. The runner writes
    # what it runs
    ran: list[tuple[str, int, str]] = []

    def runner(method: list[str], seed: int, policy: str, out: Path, **settings: Any) -> dict:
        ran.append((method[0], seed, policy))
        res = _run(method[0], seed, [0.5 + 0.01 * seed] * 6, 1.0 + seed, 100, policy=policy)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(res))
        return res

    saved = tmp_path / "seed-0" / "fp32"
    saved.mkdir(parents=True)
    (saved / "results.json").write_text(json.dumps(_run("fp32", 0, [0.4] * 6, 5.0, 400)))
    old = _run("fp32", 1, [0.3] * 6, 5.0, 400)
    del old["sampling"]
    (tmp_path / "seed-1" / "fp32").mkdir(parents=True)
    (tmp_path / "seed-1" / "fp32" / "results.json").write_text(json.dumps(old))
    for seed, rounding in ((0, "nearest"), (1, NAMED_POLICIES["default"].rounding)):
        apt = _run("apt", seed, [0.6] * 6, 1.0, 100)
        apt["policy_spec"] = {**apt["policy_spec"], "rounding": rounding}
        (tmp_path / f"seed-{seed}" / "apt").mkdir(parents=True)
        (tmp_path / f"seed-{seed}" / "apt" / "results.json").write_text(json.dumps(apt))

    # Execute
    result = compare(["fp32", "apt", "apt-aggressive"], [0, 1], tmp_path, SETTINGS, run=runner)
    write_markdown(result, tmp_path, "aptfleet federated-compare ...")
    plots = plot_tradeoffs(result, tmp_path)

    # Assert
    assert ran == [
        ("apt", 0, "default"),
        ("apt", 0, "aggressive"),
        ("fp32", 1, "default"),
        ("apt", 1, "aggressive"),
    ]
    assert result["summary"]["fp32"]["seeds"][0]["accuracy"] == pytest.approx(0.4)
    assert json.loads((tmp_path / "compare.json").read_text())["seeds"] == [0, 1]
    text = (tmp_path / "compare.md").read_text()
    assert "| apt-aggressive |" in text and "Where apt is not ahead" in text
    assert all(p.stat().st_size > 0 for p in plots)


def test_compare_requires_the_fp32_baseline(tmp_path: Path) -> None:
    # Execute / Assert
    with pytest.raises(ValueError, match="must include the baseline 'fp32'"):
        compare(["apt"], [0], tmp_path, SETTINGS, run=lambda **kw: {})
