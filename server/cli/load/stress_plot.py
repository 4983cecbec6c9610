"""stress.png: read latency per second for each database, the phases shaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

_SHADES = {"idle": "#e8f4e8", "stress": "#fbe3e3", "after": "#e6eef8"}


def plot_stress(report: dict[str, Any], path: Path) -> None:
    """Write one panel per database to ``path`` (PNG).

    Each panel: p50 and p99 of the reads per second (log scale), the open stalled sockets
    on a second axis, the burst of run starts marked.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dbs = report["databases"]
    fig, axes = plt.subplots(len(dbs), 1, figsize=(12, 3.8 * len(dbs)), squeeze=False)
    for ax, (name, result) in zip(axes[:, 0], dbs.items(), strict=True):
        _panel(ax, name, result)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _panel(ax: Any, name: str, r: dict[str, Any]) -> None:
    """Latency per second with phases shaded, stalled sockets and the burst."""
    for phase, (lo, hi) in r["phases"].items():
        ax.axvspan(lo, hi, color=_SHADES.get(phase, "#eeeeee"), zorder=0)
        ax.text(
            (lo + hi) / 2,
            1.0,
            phase,
            transform=ax.get_xaxis_transform(),
            ha="center",
            va="bottom",
            fontsize=9,
        )
    points = [p for p in r["reads"]["timeline"] if p["ok"]]
    xs = [p["s"] + 0.5 for p in points]
    ax.plot(xs, [p["p50_ms"] for p in points], label="read p50 per second")
    ax.plot(xs, [p["p99_ms"] for p in points], label="read p99 per second")
    failed = [p["s"] + 0.5 for p in r["reads"]["timeline"] if p["errors"]]
    if failed:
        ax.scatter(
            failed, [1.0] * len(failed), marker="x", color="red", label="second with read errors"
        )
    ax.axvline(
        r["burst_at_s"],
        color="black",
        ls="--",
        lw=1,
        label=f"{r['run_burst']['requests']} POST /runs + policy writers start",
    )
    ax.set(yscale="log", xlabel="seconds since the reads started", ylabel="latency (ms)")
    ax.set_title(f"{name}: reads at {r['reads']['rate']:g} req/s", loc="left", pad=16)
    twin = ax.twinx()
    start = r["stalled"]["started_at_s"]
    counts = r["stalled"]["open_per_s"]
    twin.step(
        [start + i for i in range(len(counts))],
        counts,
        where="post",
        color="gray",
        lw=1,
        label="stalled sockets open",
    )
    twin.set_ylabel("stalled sockets open")
    twin.set_ylim(0, max(counts, default=1) * 1.3 + 1)
    handles, labels = ax.get_legend_handles_labels()
    h2, l2 = twin.get_legend_handles_labels()
    ax.legend(handles + h2, labels + l2, fontsize=8, loc="upper left")
