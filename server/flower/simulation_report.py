"""The report of an ``aptfleet simulate`` run: ``results.md`` and the plots."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _runs(results: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list(results["runs"]) if "runs" in results else [results]


def _fmt(x: Any, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def write_markdown(results: Mapping[str, Any], out: Path) -> None:
    """``results.md``: settings, one row per method, savings vs fp32, per-round table."""
    runs = _runs(results)
    r0 = runs[0]
    lines = [
        "# aptfleet simulate",
        "",
        f"task `{r0['task']}` ({r0['arch']}), {r0['clients']} clients, fraction "
        f"{r0['fraction']}, {r0['rounds']} rounds, alpha {r0['alpha']}, seed {r0['seed']}, "
        f"policy `{results.get('policy')}`.",
        "",
        *[f"**The {m} run failed**: {why}\n" for m, why in results.get("failures", {}).items()],
        "| method | final accuracy | client energy (J) | uplink (MB) | downlink (MB) |",
        "|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['method']} | {_fmt(r['final_accuracy'], '.3f')} | "
            f"{r['total_energy_j']:.4g} | {r['total_uplink_bytes'] / 1e6:.3f} | "
            f"{r['total_downlink_bytes'] / 1e6:.3f} |"
        )
    for m, c in (results.get("comparison") or {}).items():
        if m == "baseline":
            continue
        lines += [
            "",
            f"**{m} vs {results['comparison']['baseline']}**: energy "
            f"{_fmt(c['energy_saving'], '.1%')} less, uplink "
            f"{_fmt(c['uplink_saving'], '.1%')} less, downlink "
            f"{_fmt(c['downlink_saving'], '.1%')} less, accuracy "
            f"{_fmt(c['accuracy_delta'], '+.3f')}.",
        ]
    for r in runs:
        lines += [
            "",
            f"## {r['method']} per round",
            "",
            "| round | accuracy | energy (J) | uplink B | downlink B | participants | "
            "failures | rejections | mean bits |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for x in r["rounds_log"]:
            lines.append(
                f"| {x['round']} | {_fmt(x['accuracy'], '.3f')} | "
                f"{x['energy_j']:.4g} | {x['uplink_bytes']} | {x['downlink_bytes']} | "
                f"{x['participants']} | {x['failures']} | {x['rejections']} | "
                f"{_fmt(x['mean_bits'], '.2f')} |"
            )
    lines += ["", "Plots: accuracy.png, energy.png, bytes.png, bits_<method>.png.", ""]
    (out / "results.md").write_text("\n".join(lines))


def plot_all(results: Mapping[str, Any], out: Path) -> list[Path]:
    """Plot accuracy.png, energy.png, bytes.png and, for each apt run, a per-layer bits heatmap.

    Energy and bytes (up and down) are cumulative; the heatmap is layers x rounds.
    """
    import matplotlib

    matplotlib.use("Agg")
    runs = _runs(results)
    paths = [
        _plot_curve(runs, out / "accuracy.png", "accuracy", "test accuracy", False),
        _plot_curve(runs, out / "energy.png", "energy_j", "cumulative client energy (J)", True),
        _plot_bytes(runs, out / "bytes.png"),
    ]
    for r in runs:
        log_ = [x for x in r["rounds_log"] if x["global_bits"]]
        if log_:
            paths.append(_plot_bits(r["method"], log_, out / f"bits_{r['method']}.png"))
    return paths


def _series(r: Mapping[str, Any], key: str) -> tuple[list[int], list[float]]:
    """(rounds, values of ``key``) of a run's round log, NaN where a value is missing."""
    xs = [x["round"] for x in r["rounds_log"]]
    return xs, [float("nan") if x[key] is None else x[key] for x in r["rounds_log"]]


def _plot_curve(
    runs: list[Mapping[str, Any]], path: Path, key: str, ylabel: str, cumulative: bool
) -> Path:
    """One line per method of ``key`` over the rounds (summed up when ``cumulative``)."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in runs:
        xs, ys = _series(r, key)
        ax.plot(xs, np.cumsum(ys) if cumulative else ys, marker=".", label=r["method"])
    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_bytes(runs: list[Mapping[str, Any]], path: Path) -> Path:
    """Cumulative uplink and downlink MB per method, side by side."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in zip(
        axes, ("uplink_bytes", "downlink_bytes"), ("uplink", "downlink"), strict=True
    ):
        for r in runs:
            xs, ys = _series(r, key)
            ax.plot(xs, np.cumsum(ys) / 1e6, marker=".", label=r["method"])
        ax.set_title(f"cumulative {title}")
        ax.set_xlabel("round")
        ax.set_ylabel("MB")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_bits(method: str, log_: list[Mapping[str, Any]], path: Path) -> Path:
    """Heatmap of the global bits per layer (rows) and round (columns)."""
    import matplotlib.pyplot as plt
    import numpy as np

    layers = list(log_[0]["global_bits"])
    grid = np.array([[x["global_bits"].get(n, np.nan) for x in log_] for n in layers])
    fig, ax = plt.subplots(figsize=(max(4, 0.3 * len(log_) + 2), 0.5 * len(layers) + 1.5))
    im = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_yticks(range(len(layers)), layers)
    ax.set_xticks(range(len(log_)), [str(x["round"]) for x in log_])
    ax.set_xlabel("round")
    ax.set_title(f"{method}: global bits per layer")
    if grid.size <= 400:  # small enough to print every cell's bits
        for (i, j), b in np.ndenumerate(grid):
            if not np.isnan(b):
                ax.text(j, i, f"{int(b)}", ha="center", va="center", fontsize=7, color="white")
    fig.colorbar(im, ax=ax, label="bits")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
