"""The scale benchmark's report: scale.md and scale.png from the measured rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

_MB = 1024**2


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def markdown(report: dict[str, Any]) -> str:
    """scale.md: the measured table, the command and the machine (figures are measured)."""
    rows = report["rows"]
    commands = sorted({r["command"] for r in rows})
    lines = [
        "# Simulation at fleet scale (measured)",
        "",
        "Commands: " + ", ".join(f"`{c}`" for c in commands),
        "",
        f"Machine: {rows[0]['machine']['cpus'] if rows else '?'} CPUs, shared with other "
        "work (the table gives the 1-minute load average at the end of each run): absolute "
        "seconds move with the load. Every figure below is measured.",
        "",
        "| devices per round | fleet | rounds | all sampled trained | start-up + round 1 (s) | "
        "round, rounds 2.. (s) | per device (s) | CPU, driver / all (s) | "
        "peak memory, process tree (MB) | peak memory, driver (MB) | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        every = all(p == r["devices"] for p in r["participants"]) and not r["failures"]
        lines.append(
            f"| {r['devices']} | {r['clients']} | {r['rounds']} | {'yes' if every else 'no'} | "
            f"{_fmt(r['first_round_s'], '.1f')} | {_fmt(r['steady_round_s'], '.1f')} | "
            f"{_fmt(r['per_device_s'], '.2f')} | "
            f"{r['cpu_driver_s']:.0f} / {r['cpu_tree_s']:.0f} | "
            f"{r['peak_tree_rss_bytes'] / _MB:.0f} | "
            f"{r['peak_driver_rss_bytes'] / _MB:.0f} | {r['machine']['loadavg'][0]:.0f} |"
        )
    lines += ["", *report.get("notes", []), ""]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> Path:
    """scale.png: round time and peak memory against devices per round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    devices = [r["devices"] for r in rows]
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    ax_t.plot(devices, [r["steady_round_s"] for r in rows], "o-", label="round (rounds 2..)")
    ax_t.plot(devices, [r["first_round_s"] for r in rows], "s--", label="start-up + round 1")
    ax_t.set_xlabel("devices per round")
    ax_t.set_ylabel("seconds (measured)")
    ax_t.legend()
    ax_m.plot(devices, [r["peak_tree_rss_bytes"] / _MB for r in rows], "o-", label="process tree")
    ax_m.plot(devices, [r["peak_driver_rss_bytes"] / _MB for r in rows], "s--", label="driver")
    ax_m.set_xlabel("devices per round")
    ax_m.set_ylabel("peak resident memory (MB, measured)")
    ax_m.legend()
    fig.suptitle(f"aptfleet simulate, fleet of {rows[0]['clients']} devices" if rows else "")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
