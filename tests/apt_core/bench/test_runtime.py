"""Tests for the runtime benchmark runner and its report."""

import sys
import types
from pathlib import Path

import pytest
import torch

from apt_core.bench import runtime
from apt_core.bench.runtime import RuntimeConfig, run_case
from apt_core.bench.runtime_report import TARGETS, target_checks


@pytest.fixture(scope="module")
def rows() -> list[dict]:  # type: ignore[type-arg]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_case(
            "digits",
            "mlp",
            16,
            [8],
            RuntimeConfig(steps=3, warmup=1),
            backends=runtime.available_backends() or (None,),
        )
    finally:
        torch.set_num_threads(threads)


def test_run_case_fp32_row_first_and_ratios_relative_to_it(rows: list[dict]) -> None:  # type: ignore[type-arg]
    # Assert
    fp32, apt = rows[0], rows[1]
    assert fp32["method"] == "fp32" and apt["method"] == "apt" and apt["bits"] == 8
    assert apt["step_ratio_vs_fp32"] == pytest.approx(apt["step_ms"] / fp32["step_ms"])
    assert apt["peak_ratio_vs_fp32"] == pytest.approx(
        apt["peak_train_bytes"] / fp32["peak_train_bytes"]
    )


def test_run_case_fp32_peak_covers_params_grads_momentum(rows: list[dict]) -> None:  # type: ignore[type-arg]
    # Prepare: digits mlp 64-128-64-10, float32
    params = 64 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10
    batch_bytes = 16 * 64 * 4 + 16 * 8

    # Assert: parameters and momentum are state, the gradients come during the step
    fp32 = rows[0]
    assert fp32["baseline_bytes"] == 2 * 4 * params + batch_bytes
    assert fp32["peak_train_bytes"] >= 3 * 4 * params + batch_bytes
    assert fp32["retained_bytes"] == 4 * params  # the gradients
    assert fp32["unmatched_frees"] == 0


def test_run_case_fallbacks_none_without_counter(rows: list[dict]) -> None:  # type: ignore[type-arg]
    # Assert: fp32 never has a count; apt has one only if the kernels expose a counter
    assert rows[0]["fallbacks"] is None
    if rows[1]["fallback_source"] is None:
        assert rows[1]["fallbacks"] is None
    else:
        assert rows[1]["fallbacks"] >= 0


def test_run_case_measures_each_backend_and_counts_fallbacks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prepare: a stand-in for apt_core.kernels with a backend switch and a counter that
    # grows by one each time it is read on the "int" backend (two reads per step)
    fake = types.ModuleType("apt_core.kernels")
    state = {"backend": "int", "count": 0}
    fake.BACKENDS = ("int", "reference")  # type: ignore[attr-defined]
    fake.set_backend = lambda name: state.update(backend=name)  # type: ignore[attr-defined]
    fake.get_backend = lambda: state["backend"]  # type: ignore[attr-defined]

    def fallback_count() -> int:
        state["count"] += state["backend"] == "int"
        return state["count"]

    fake.fallback_count = fallback_count  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "apt_core.kernels", fake)
    cfg = RuntimeConfig(steps=2, warmup=1)

    # Execute
    got = run_case("digits", "mlp", 8, [8], cfg, backends=runtime.available_backends())

    # Assert
    assert [(r["method"], r["backend"]) for r in got] == [
        ("fp32", None),
        ("apt", "int"),
        ("apt", "reference"),
    ]
    assert got[1]["fallbacks"] == cfg.warmup + cfg.steps  # one per step: after - before
    assert got[2]["fallbacks"] == 0
    assert got[1]["fallback_source"] == "apt_core.kernels.fallback_count"
    assert state["backend"] == "int"  # restored


def test_runtime_config_rejects_zero_steps() -> None:
    # Execute / Assert
    with pytest.raises(ValueError, match="'steps' = 0"):
        RuntimeConfig(steps=0)


def test_target_checks_met_missed_and_not_measured() -> None:
    # Prepare: one row meeting its step target and missing its peak target
    row = {
        "task": "digits",
        "model": "mlp-wide",
        "batch": 256,
        "method": "apt",
        "bits": 8,
        "backend": None,
        "step_ratio_vs_fp32": 0.4,
        "peak_ratio_vs_fp32": 0.9,
    }

    # Execute
    checks = {c["target"]: c for c in target_checks({"rows": [row]})}

    # Assert
    step = checks["digits mlp-wide batch 256, 8-bit: step time <= 0.5x fp32"]
    peak = checks["digits mlp-wide batch 256, 8-bit: peak training memory <= 0.5x fp32"]
    assert (step["met"], peak["met"]) == (True, False)
    assert sum(c["met"] is None for c in checks.values()) == len(TARGETS) - 2


def test_machine_info_reads_cpu_model() -> None:
    # Execute
    info = runtime.machine_info()

    # Assert
    if Path("/proc/cpuinfo").exists():
        assert info["cpu"] != "unknown"
    assert info["torch"] == torch.__version__
