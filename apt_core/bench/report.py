"""Benchmark report: Markdown with target checks, and PNG plots of the trade-off."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FIXED = ("fixed8", "fixed12", "fixed16")

#: (target, met? (None: not applicable), measured figures)
_Check = tuple[str, bool | None, str]


def _label(row: dict[str, Any]) -> str:
    return row["method"] if row["policy"] is None else f"apt[{row['policy']}]"


def _row(
    summary: list[dict[str, Any]], method: str, policy: str | None = None
) -> dict[str, Any] | None:
    for r in summary:
        if r["method"] == method and (policy is None or r["policy"] == policy):
            return r
    return None


def _pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def target_checks(results: dict[str, Any]) -> list[tuple[str, bool | None, str]]:
    """(target, met?, measured figures) for every benchmark target of the apt_core issue."""
    s = results["summary"]
    fp32, qat8 = _row(s, "fp32"), _row(s, "qat8")
    apt = _row(s, "apt", "default") or _row(s, "apt")
    if not (fp32 and apt):
        return [("fp32 and apt rows present", False, "missing")]
    checks = _default_policy_checks(fp32, qat8, apt)
    checks.append(_adaptivity_check(s, fp32, apt))
    checks += _below_default_checks(s, apt)
    checks += _stored_bytes_checks(results["runs"])
    checks.append(_wall_time_check(fp32, apt))
    return checks


def _default_policy_checks(
    fp32: dict[str, Any], qat8: dict[str, Any] | None, apt: dict[str, Any]
) -> list[_Check]:
    """Accuracy, energy and state memory of the default apt policy against fp32 (and qat8)."""
    checks: list[_Check] = []
    gap = 100 * (fp32["accuracy_mean"] - apt["accuracy_mean"])
    checks.append(
        (
            "apt default: accuracy within 1.0 point of fp32",
            gap <= 1.0,
            f"fp32 {100 * fp32['accuracy_mean']:.2f}%, apt {100 * apt['accuracy_mean']:.2f}%"
            f" (gap {gap:+.2f} pt)",
        )
    )
    checks.append(
        (
            "apt default: total energy >= 75% below fp32",
            apt["energy_saving_vs_fp32"] >= 0.75,
            f"total {_pct(apt['energy_saving_vs_fp32'])}, GEMM "
            f"{_pct(apt['energy_gemm_saving_vs_fp32'])}, movement "
            f"{_pct(apt['energy_move_saving_vs_fp32'])}",
        )
    )
    ok = apt["state_memory_saving_vs_fp32"] >= 0.60 and (
        qat8 is None or apt["state_memory_saving_vs_qat8"] >= 0.65
    )
    checks.append(
        (
            "apt default: state memory >= 60% below fp32 and >= 65% below qat8",
            ok,
            f"vs fp32 {_pct(apt['state_memory_saving_vs_fp32'])}, vs qat8 "
            f"{_pct(apt['state_memory_saving_vs_qat8'])}",
        )
    )
    return checks


def _adaptivity_check(s: list[dict[str, Any]], fp32: dict[str, Any], apt: dict[str, Any]) -> _Check:
    """Default apt against the smallest fixed width within 1 pt of fp32 (n/a when none is)."""
    good = [
        r
        for r in (_row(s, f) for f in FIXED)
        if r is not None and 100 * (fp32["accuracy_mean"] - r["accuracy_mean"]) <= 1.0
    ]
    if good:
        ref = min(good, key=lambda r: int(r["method"][5:]))
        width = int(ref["method"][5:])
        dacc = 100 * (ref["accuracy_mean"] - apt["accuracy_mean"])
        return (
            f"adaptivity: apt avg bits below {ref['method']} (smallest fixed width "
            "within 1 pt of fp32), accuracy within 0.5 pt of it",
            apt["avg_bits_mean"] < width and dacc <= 0.5,
            f"apt {apt['avg_bits_mean']:.2f} bits vs {width}; accuracy "
            f"{ref['method']} {100 * ref['accuracy_mean']:.2f}% vs apt "
            f"{100 * apt['accuracy_mean']:.2f}% ({dacc:+.2f} pt)",
        )
    return (
        "adaptivity: a fixed width within 1 pt of fp32 exists",
        None,
        "no fixed width reached fp32 - 1 pt",
    )


def _below_default_checks(s: list[dict[str, Any]], apt: dict[str, Any]) -> list[_Check]:
    """The aggressive policy and fixed8 against the default apt policy, when they ran."""
    checks: list[_Check] = []
    aggr = _row(s, "apt", "aggressive")
    if aggr:
        fewer = 1 - aggr["avg_bits_mean"] / apt["avg_bits_mean"]
        loss = 100 * (apt["accuracy_mean"] - aggr["accuracy_mean"])
        checks.append(
            (
                "aggressive policy: >= 20% fewer avg bits than default for <= 1 pt further loss",
                fewer >= 0.20 and loss <= 1.0,
                f"{aggr['avg_bits_mean']:.2f} vs {apt['avg_bits_mean']:.2f} bits "
                f"({_pct(fewer)} fewer), further accuracy loss {loss:+.2f} pt "
                "(negative: more accurate than default)",
            )
        )
    f8 = _row(s, "fixed8")
    if f8:
        below = 100 * (apt["accuracy_mean"] - f8["accuracy_mean"])
        checks.append(
            (
                "fixed8 shows the underflow stall (clearly below apt)",
                below >= 2.0,
                f"fixed8 {100 * f8['accuracy_mean']:.2f}% vs apt "
                f"{100 * apt['accuracy_mean']:.2f}% ({below:+.2f} pt)",
            )
        )
    return checks


def _stored_bytes_checks(runs: list[dict[str, Any]]) -> list[_Check]:
    """Measured and packed bytes of the apt runs against the analytic bit count."""
    checks: list[_Check] = []
    apt_runs = [r for r in runs if r["method"] == "apt"]
    if apt_runs:
        # in memory the codes are GEMM-ready (1 byte each up to 8 bits, 2 above), packed
        # to exactly b bits only on the wire and in checkpoints (the next check)
        ratio = max(
            r["param_bytes_measured"] / (r.get("param_bits_in_memory", r["param_bits"]) / 8)
            for r in apt_runs
        )
        checks.append(
            (
                "measured in-memory bytes <= 1.15x the GEMM-ready format's "
                "(1 byte per code up to 8 bits, 2 above; apt, worst run)",
                ratio <= 1.15,
                f"{ratio:.4f}x",
            )
        )
        over = max(r["packed_bytes"] / (r["param_bits"] / 8) - 1 for r in apt_runs)
        checks.append(
            (
                "packed bytes <= exact-bit limit + header (<= 1%)",
                over <= 0.01,
                f"worst overhead {100 * over:.3f}%",
            )
        )
    return checks


def _wall_time_check(fp32: dict[str, Any], apt: dict[str, Any]) -> _Check:
    """The wall time per epoch of apt against fp32, with process CPU time beside it."""
    return (
        "apt wall time per epoch <= 1.5x fp32",
        apt["wall_ratio_vs_fp32"] <= 1.5,
        f"wall {apt['wall_ratio_vs_fp32']:.2f}x ({apt['wall_s_per_epoch_mean']:.3f} s "
        f"vs {fp32['wall_s_per_epoch_mean']:.3f} s per epoch); process CPU time "
        f"{apt['cpu_ratio_vs_fp32']:.2f}x ({apt['cpu_s_per_epoch_mean']:.3f} s vs "
        f"{fp32['cpu_s_per_epoch_mean']:.3f} s), one torch thread",
    )


def write_markdown(results: dict[str, Any], out: Path, command: str, notes: str = "") -> Path:
    """Write ``results.md``: command, summary table, target checks, notes."""
    s = results["summary"]
    lines = [
        f"# APT benchmark: {results['task']} / {results['model']}",
        "",
        "Produced by:",
        "",
        "```",
        command,
        "```",
        "",
        f"Seeds: {results['seeds']}. Settings: `{results['config']}`.",
        "",
        "## Summary (mean over seeds)",
        "",
        *_summary_table(s),
    ]
    lines += ["", "## Targets", "", "| target | met | measured |", "|---|---|---|"]
    for name, ok, fig in target_checks(results):
        mark = "n/a" if ok is None else ("yes" if ok else "**no**")
        lines.append(f"| {name} | {mark} | {fig} |")
    lines += _step_profile_section(results.get("step_profile") or {})
    lines += [
        "",
        "## Plots",
        "",
        "![frontier](frontier.png)",
        "",
        "![bits](bits.png)",
        "",
        "![underflow](underflow.png)",
        "",
    ]
    if notes:
        lines += ["## Notes", "", notes, ""]
    path = out / "results.md"
    path.write_text("\n".join(lines))
    return path


def _summary_table(s: list[dict[str, Any]]) -> list[str]:
    """The Markdown table of the summary rows (mean over seeds)."""
    lines = [
        "| method | accuracy | avg bits | final bits | energy J (GEMM + move) | "
        "energy saving | state bytes | state saving vs fp32 / qat8 | packed bytes | "
        "wall / CPU ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in s:
        lines.append(
            f"| {_label(r)} | {100 * r['accuracy_mean']:.2f} ± {100 * r['accuracy_std']:.2f} | "
            f"{r['avg_bits_mean']:.2f} | {r['final_mean_bits_mean']:.2f} | "
            f"{r['energy_j_mean']:.4f} ({r['energy_gemm_j_mean']:.4f} + "
            f"{r['energy_move_j_mean']:.4f}) | {_pct(r['energy_saving_vs_fp32'])} | "
            f"{r['state_bytes_measured_mean']:.0f} | "
            f"{_pct(r['state_memory_saving_vs_fp32'])} / "
            f"{_pct(r['state_memory_saving_vs_qat8'])} | {r['packed_bytes_mean']:.0f} | "
            f"{r['wall_ratio_vs_fp32']:.2f} / {r['cpu_ratio_vs_fp32']:.2f} |"
        )
    return lines


def _step_profile_section(prof: dict[str, dict[str, float]]) -> list[str]:
    """Where the time of one training step goes, per method (nothing without a profile)."""
    if not prof:
        return []
    lines = [
        "",
        "## Where the time goes (process CPU ms per training step, one thread)",
        "",
        "| method | forward | backward | optimizer | total |",
        "|---|---|---|---|---|",
    ]
    for m, p in prof.items():
        lines.append(
            f"| {m} | {p['forward_ms']:.2f} | {p['backward_ms']:.2f} | "
            f"{p['optimizer_ms']:.2f} | {p['total_ms']:.2f} |"
        )
    return lines


def plot_all(results: dict[str, Any], out: Path) -> list[Path]:
    """frontier.png, bits.png and underflow.png."""
    return [_frontier(results, out), _bits(results, out), _underflow(results, out)]


def _frontier(results: dict[str, Any], out: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in results["summary"]:
        for ax, key in zip(axes, ("energy_j_mean", "state_bytes_measured_mean"), strict=True):
            ax.errorbar(
                r[key],
                100 * r["accuracy_mean"],
                yerr=100 * r["accuracy_std"],
                fmt="o",
                capsize=3,
                label=_label(r),
            )
            ax.annotate(
                _label(r),
                (r[key], 100 * r["accuracy_mean"]),
                fontsize=7,
                xytext=(4, 4),
                textcoords="offset points",
            )
    axes[0].set_xlabel("modelled training energy (J, Horowitz 45 nm)")
    axes[1].set_xlabel("training-state memory, measured bytes (weights + optimizer)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{results['task']} / {results['model']}: accuracy vs cost (mean ± std)")
    fig.tight_layout()
    path = out / "frontier.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _bits(results: dict[str, Any], out: Path) -> Path:
    runs = [r for r in results["runs"] if r["method"] == "apt" and r["seed"] == 0]
    fig, axes = plt.subplots(
        1, max(len(runs), 1), figsize=(6 * max(len(runs), 1), 4), squeeze=False
    )
    for ax, r in zip(axes[0], runs, strict=False):
        layers: dict[str, tuple[list[int], list[int]]] = {}
        for h in r["history"]:
            xs, ys = layers.setdefault(h["layer"], ([], []))
            xs.append(h["step"])
            ys.append(h["bits"])
        for name, (xs, ys) in layers.items():
            ax.step(xs, ys, where="post", label=f"layer {name}")
        ax.set_xlabel("training step")
        ax.set_ylabel("weight bits")
        ax.set_title(f"apt[{r['policy']}] seed 0")
        ax2 = ax.twinx()
        steps_per_epoch = r["steps"] / max(len(r["epoch_log"]), 1)
        ax2.plot(
            [e["epoch"] * steps_per_epoch for e in r["epoch_log"]],
            [e["lr"] for e in r["epoch_log"]],
            "k--",
            alpha=0.5,
            label="learning rate",
        )
        ax2.set_ylabel("learning rate (dashed)")
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path = out / "bits.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _underflow(results: dict[str, Any], out: Path) -> Path:
    fig, ax = plt.subplots(1, 2, figsize=(12, 4))
    for r in results["runs"]:
        if r["seed"] != 0:
            continue
        label = r["method"] if r["policy"] is None else f"apt[{r['policy']}]"
        ep = [e["epoch"] for e in r["epoch_log"]]
        acc = [100 * (e["test_accuracy"] or 0) for e in r["epoch_log"]]
        ax[1].plot(ep, acc, label=label)
        if r["method"] in ("fp32", "qat8"):
            continue
        ax[0].plot(ep, [e["underflow"] for e in r["epoch_log"]], label=label)
    ax[0].set_ylabel("share of moving weights whose code did not change")
    ax[0].set_title("underflow (seed 0)")
    ax[1].set_ylabel("test accuracy (%)")
    ax[1].set_title("accuracy per epoch (seed 0)")
    for a in ax:
        a.set_xlabel("epoch")
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    fig.tight_layout()
    path = out / "underflow.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
