"""Tests for `aptfleet bench-runtime`."""

import json
import math
from pathlib import Path

from typer.testing import CliRunner

from apt_core.bench.cli import bench_cli


def test_bench_runtime_writes_results_tiny_grid(tmp_path: Path) -> None:
    # Prepare
    args = [
        "bench-runtime",
        "--task",
        "digits",
        "--model",
        "mlp",
        "--batch",
        "8",
        "--bits",
        "8,12",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--out",
        str(tmp_path),
    ]

    # Execute
    res = CliRunner().invoke(bench_cli, args)

    # Assert
    assert res.exit_code == 0, res.output
    results = json.loads((tmp_path / "results.json").read_text())
    rows = results["rows"]
    assert [(r["method"], r["bits"]) for r in rows if r["backend"] in (None, "int")][:3] == [
        ("fp32", 32),
        ("apt", 8),
        ("apt", 12),
    ]
    for r in rows:
        for key in (
            "step_ms",
            "step_ratio_vs_fp32",
            "peak_train_bytes",
            "peak_ratio_vs_fp32",
            "forward_ms",
            "backward_ms",
            "optimizer_ms",
        ):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r)
        assert r["threads"] == 1
        assert "fallbacks" in r
        assert (r["task"], r["model"], r["batch"], r["steps"]) == ("digits", "mlp", 8, 2)
    assert rows[0]["step_ratio_vs_fp32"] == 1.0
    assert results["machine"]["cpu"] and results["machine"]["torch"]
    assert results["command"].startswith("aptfleet bench-runtime --task digits")
    assert "--steps 2" in results["command"]
    md = (tmp_path / "results.md").read_text()
    assert "MEASURED" in md and "Issue 9 targets" in md and "Where the time goes" in md
    assert (tmp_path / "runtime.png").stat().st_size > 0


def test_bench_runtime_rejects_unknown_backend(tmp_path: Path) -> None:
    # Execute
    res = CliRunner().invoke(
        bench_cli, ["bench-runtime", "--backend", "gpu", "--out", str(tmp_path)]
    )

    # Assert
    assert res.exit_code != 0
    assert "gpu" in res.output
    assert not (tmp_path / "results.json").exists()


def test_bench_runtime_rejects_unknown_model_before_measuring(tmp_path: Path) -> None:
    # Execute
    res = CliRunner().invoke(
        bench_cli, ["bench-runtime", "--model", "resnet", "--out", str(tmp_path)]
    )

    # Assert
    assert res.exit_code != 0
    assert "resnet" in res.output
    assert not (tmp_path / "results.json").exists()
