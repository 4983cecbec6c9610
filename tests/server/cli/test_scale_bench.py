"""The scale benchmark's measurement helpers and report (the runs themselves are measured)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from server.cli.load.scale_bench import ScaleConfig, TreeSampler, summarize, tree_pids
from server.cli.load.scale_report import markdown, plot


def test_tree_sampler_sees_a_child_process_memory_and_cpu() -> None:
    # Prepare: a child that holds 64 MB and burns CPU for a moment
    code = (
        "import time\nb = bytearray(64 * 2**20)\nt = time.time()\nwhile time.time() - t < 1.5: pass"
    )
    child = subprocess.Popen([sys.executable, "-c", code])
    sampler = TreeSampler(os.getpid())

    # Execute
    try:
        time.sleep(1.0)
        sampler.sample()
        pids = tree_pids(os.getpid())
    finally:
        child.wait(10)

    # Assert
    assert child.pid in pids
    assert sampler.peak_bytes >= sampler.driver_peak_bytes + 64 * 2**20
    assert sampler.cpu_s[child.pid] > 0.0


def test_summarize_round_times_and_report(tmp_path: Path) -> None:
    # Prepare: rounds ending at 30 s (start-up included), 40 s and 52 s
    config = ScaleConfig(clients=1000, devices=10, rounds=3)
    stamps = [
        {"round": i + 1, "end_s": end, "participants": 10, "failures": 0, "rejections": 0}
        | {"accuracy": 0.5}
        for i, end in enumerate([30.0, 40.0, 52.0])
    ]
    sampler = TreeSampler(1)
    sampler.peak_bytes, sampler.driver_peak_bytes, sampler.cpu_s = 2 * 2**30, 2**29, {1: 8.0}

    # Execute
    row = summarize(config, {"rounds": stamps, "total_s": 53.0}, sampler)
    machine = {"cpus": 2, "loadavg": [3.0, 1.0, 1.0]}
    report = {"rows": [{**row, "command": "aptfleet scale-bench", "machine": machine}]}
    md = markdown(report)
    png = plot(report, tmp_path / "scale.png")

    # Assert
    assert row["round_s"] == [30.0, 10.0, 12.0]
    assert row["steady_round_s"] == 11.0 and row["per_device_s"] == 1.1
    assert row["fraction"] == 0.01
    assert "| 10 | 1000 | 3 | yes | 30.0 | 11.0 | 1.10 | 8 / 8 | 2048 | 512 | 3 |" in md
    assert "Commands: `aptfleet scale-bench`" in md
    assert png.stat().st_size > 1000
