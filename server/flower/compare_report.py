"""The report of ``aptfleet federated-compare``: ``compare.md`` and two trade-off plots."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: What apt must reach against fp32 (issue 11): accuracy gap, energy and uplink savings.
TARGET_GAP, TARGET_ENERGY, TARGET_UPLINK = 0.01, 0.70, 0.60


def _is_apt(method: str) -> bool:
    return method == "apt" or method.startswith("apt-")


def _pct(x: float | None, spec: str = ".2f") -> str:
    return "n/a" if x is None else format(100 * x, spec)


def _acc_cell(st: Mapping[str, Any] | None) -> str:
    """``mean ± std [min, max]`` in percent."""
    if st is None:
        return "n/a"
    std = "" if st["std"] is None else f" ± {_pct(st['std'])}"
    return f"{_pct(st['mean'])}{std} [{_pct(st['min'])}, {_pct(st['max'])}]"


def _gap_cell(st: Mapping[str, Any]) -> str:
    """A paired gap in points: ``+mean ± std [min, max]``."""
    std = "" if st["std"] is None else f" ± {_pct(st['std'])}"
    return f"{_pct(st['mean'], '+.2f')}{std} [{_pct(st['min'], '+.2f')}, {_pct(st['max'], '+.2f')}]"


def _mean(summary: Mapping[str, Any], method: str, key: str) -> float | None:
    st = summary[method]["over_seeds"].get(key)
    return None if st is None else st["mean"]


def _main_table(summary: Mapping[str, Any]) -> list[str]:
    lines = [
        "| method | accuracy, % (mean ± std [min, max]) | vs fp32, pt (paired) | "
        "client energy (J) | energy saving | uplink (MB) | uplink saving | "
        "downlink (MB) | downlink saving |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m, s in summary.items():
        st = s["over_seeds"]
        gap = st.get("accuracy_delta")
        gap_cell = "—" if m == "fp32" or gap is None else _gap_cell(gap)

        def sav(key: str, st: Mapping[str, Any] = st, m: str = m) -> str:
            v = st.get(f"{key}_saving")
            return "—" if m == "fp32" or v is None else f"{_pct(v['mean'], '.1f')}%"

        lines.append(
            f"| {m} | {_acc_cell(st['accuracy'])} | {gap_cell} | "
            f"{st['energy_j']['mean']:.4g} | {sav('energy')} | "
            f"{st['uplink_bytes']['mean'] / 1e6:.2f} | {sav('uplink')} | "
            f"{st['downlink_bytes']['mean'] / 1e6:.2f} | {sav('downlink')} |"
        )
    return lines


def _seed_table(summary: Mapping[str, Any]) -> list[str]:
    lines = [
        "| method | seed | accuracy, last 5 rounds (%) | final round (%) | vs fp32 (pt) |",
        "|---|---|---|---|---|",
    ]
    for m, s in summary.items():
        for seed, row in s["seeds"].items():
            gap = row.get("accuracy_delta")
            lines.append(
                f"| {m} | {seed} | {_pct(row['accuracy'])} | {_pct(row['final_accuracy'])} | "
                f"{'—' if m == 'fp32' or gap is None else f'{100 * gap:+.2f}'} |"
            )
    return lines


def verdicts(summary: Mapping[str, Any]) -> list[str]:
    """Plain sentences: the targets for apt, and every figure where an apt method is behind."""
    out = []
    if "apt" in summary:
        gap = _mean(summary, "apt", "accuracy_delta")
        energy, up = _mean(summary, "apt", "energy_saving"), _mean(summary, "apt", "uplink_saving")
        ok = [
            gap is not None and gap >= -TARGET_GAP,
            energy is not None and energy >= TARGET_ENERGY,
            up is not None and up >= TARGET_UPLINK,
        ]
        out.append(
            f"Targets for apt (default) vs fp32: accuracy within 1 pt: "
            f"{'met' if ok[0] else 'NOT met'} ({_pct(gap, '+.2f')} pt); energy >= 70% lower: "
            f"{'met' if ok[1] else 'NOT met'} ({_pct(energy, '.1f')}%); uplink >= 60% lower: "
            f"{'met' if ok[2] else 'NOT met'} ({_pct(up, '.1f')}%)."
        )
    for a in (m for m in summary if _is_apt(m)):
        for other in (m for m in summary if not _is_apt(m)):
            out += _behind(summary, a, other)
    if not any(_is_apt(m) for m in summary):
        return ["No apt method was compared."]
    return out or ["No apt method is behind another method on any figure."]


def _behind(summary: Mapping[str, Any], a: str, other: str) -> list[str]:
    """Where method ``a`` is not ahead of ``other`` (accuracy higher; cost lower)."""
    out = []
    acc_a, acc_o = _mean(summary, a, "accuracy"), _mean(summary, other, "accuracy")
    if acc_a is not None and acc_o is not None and acc_a < acc_o:
        out.append(
            f"**{a} is not ahead of {other} on accuracy**: {_pct(acc_a)}% vs {_pct(acc_o)}% "
            f"({100 * (acc_a - acc_o):+.2f} pt, mean of the seeds)."
        )
    for key, unit, scale in (
        ("energy_j", "J", 1.0),
        ("uplink_bytes", "MB", 1e-6),
        ("downlink_bytes", "MB", 1e-6),
    ):
        va, vo = _mean(summary, a, key), _mean(summary, other, key)
        if va is not None and vo is not None and va >= vo:
            out.append(
                f"**{a} is not ahead of {other} on {key.split('_')[0]}**: "
                f"{va * scale:.4g} {unit} vs {vo * scale:.4g} {unit}."
            )
    return out


def write_markdown(result: Mapping[str, Any], out: Path, command: str = "") -> Path:
    """``compare.md``: settings, the summary table, where apt is behind, per-seed table."""
    s = result["settings"]
    summary = result["summary"]
    lines = [
        f"# aptfleet federated-compare: {s.get('task')}",
        "",
        f"{s.get('clients')} clients, fraction {s.get('fraction')}, {s.get('rounds')} rounds, "
        f"alpha {s.get('alpha')}, seeds {', '.join(map(str, result['seeds']))}. Accuracy of "
        f"a run = mean test accuracy of its last {result['last_rounds']} rounds; over seeds: "
        "mean ± sample standard deviation [min, max]; 'vs fp32' is the paired difference "
        "with the same seed's fp32 run. Energy is modelled (`apt_core/cost.py`), bytes "
        "are measured (the arrays that crossed the wire); both are totals per run, "
        "mean over seeds; savings are per seed against fp32, then averaged.",
        "",
        *_main_table(summary),
        "",
        "## Where apt is not ahead",
        "",
        *[f"- {v}" for v in verdicts(summary)],
        "",
        "## Per seed",
        "",
        *_seed_table(summary),
        "",
        "Plots: `accuracy_energy.png` (test accuracy against cumulative client energy), "
        "`accuracy_bytes.png` (against cumulative uplink + downlink bytes); one line per "
        "method, the mean over seeds at each round. Per-run results, tables and plots: "
        "`seed-<S>/<method>/`.",
        "",
    ]
    if command:
        lines += ["Command:", "", "```", command, "```", ""]
    path = out / "compare.md"
    path.write_text("\n".join(lines))
    return path


def plot_tradeoffs(result: Mapping[str, Any], out: Path) -> list[Path]:
    """``accuracy_energy.png`` and ``accuracy_bytes.png`` (log x), one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for key, xlabel, name, scale in (
        ("energy_j", "cumulative client energy (J, modelled)", "accuracy_energy.png", 1.0),
        ("total_bytes", "cumulative uplink + downlink (MB, measured)", "accuracy_bytes.png", 1e-6),
    ):
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for method, c in result["curves"].items():
            pts = [(x * scale, y) for x, y in zip(c[key], c["accuracy"], strict=True) if y]
            if not pts:
                continue
            xs, ys = zip(*pts, strict=True)
            (line,) = ax.plot(xs, ys, marker=".", label=method)
            ax.plot(xs[-1], ys[-1], marker="o", ms=8, color=line.get_color())
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (mean over seeds)")
        what = "client energy" if key == "energy_j" else "bytes"
        ax.set_title(f"{result['settings'].get('task')}: accuracy vs {what}")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        paths.append(out / name)
    return paths
