"""load.png: latency over time, the latency histogram, and the round wall times."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from server.cli.load.report import P99_TARGET_MS
from server.cli.load.runs import RunTiming
from server.cli.load.stats import answered, percentile
from server.cli.load.traffic import Sample


def plot(
    samples: list[Sample], baselines: list[RunTiming], loaded: RunTiming, path: Path, rate: float
) -> None:
    """Write the three panels of the benchmark to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [s for s in samples if answered(s)]
    fig, (ax_t, ax_h, ax_r) = plt.subplots(1, 3, figsize=(16, 4.6))
    _latency_over_time(ax_t, samples, ok, rate)
    _histogram(ax_h, [s.latency_ms for s in ok])
    _round_times(ax_r, baselines, loaded)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _latency_over_time(ax: Any, samples: list[Sample], ok: list[Sample], rate: float) -> None:
    """Every answered request, and p50 / p99 per second of the load."""
    seconds = int(max((s.due_s for s in samples), default=0)) + 1
    per_second: list[list[float]] = [[] for _ in range(seconds)]
    for s in ok:
        per_second[int(s.due_s)].append(s.latency_ms)
    xs = [i for i, v in enumerate(per_second) if v]
    ax.scatter(
        [s.due_s for s in ok],
        [s.latency_ms for s in ok],
        s=2,
        alpha=0.25,
        color="tab:gray",
        label="request",
    )
    ax.plot(xs, [percentile(per_second[i], 0.5) for i in xs], label="p50 per second")
    ax.plot(xs, [percentile(per_second[i], 0.99) for i in xs], label="p99 per second")
    ax.axhline(P99_TARGET_MS, color="tab:red", ls="--", lw=1, label="p99 target")
    ax.set(
        yscale="log",
        xlabel="time since load start (s)",
        ylabel="latency (ms)",
        title=f"Read latency at {rate:.0f} req/s during training",
    )
    ax.legend(fontsize=8)


def _histogram(ax: Any, values: list[float]) -> None:
    """Latencies on log-spaced bins, with the percentiles and the target marked."""
    if values:
        lo, hi = max(min(values), 0.1), max(values) * 1.05
        bins = [lo * (hi / lo) ** (i / 60) for i in range(61)]
        ax.hist(values, bins=bins, color="tab:blue")
        ax.set_xscale("log")
    for q, style in ((0.5, ":"), (0.95, "-."), (0.99, "--")):
        v = percentile(values, q)
        ax.axvline(v, color="black", ls=style, lw=1, label=f"p{int(q * 100)} {v:.1f} ms")
    ax.axvline(P99_TARGET_MS, color="tab:red", ls="--", lw=1, label="p99 target")
    ax.set(xlabel="latency (ms, log scale)", ylabel="requests", title="Latency histogram")
    ax.legend(fontsize=8)


def _round_times(ax: Any, baselines: list[RunTiming], loaded: RunTiming) -> None:
    """Bars of each run's round wall times, side by side per round."""
    width = 0.8 / (len(baselines) + 1)
    for k, timing in enumerate([*baselines, loaded]):
        rounds = range(1, len(timing.round_s) + 1)
        ax.bar(
            [r + (k - len(baselines) / 2) * width for r in rounds],
            timing.round_s,
            width=width,
            label=timing.label,
        )
    ax.set(xlabel="round", ylabel="wall time (s)", title="Round wall times")
    ax.legend(fontsize=8)
