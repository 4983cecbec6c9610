"""store-scale.md and store-scale.png from the figures of store-scale.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COMMAND = "aptfleet store-bench --out docs/results"
_MB = 1e6


def _verdict(value: float, target: float) -> str:
    return "met" if value < target else "**missed**"


def _summary_rows(report: dict[str, Any]) -> list[str]:
    targets = report["targets"]
    devices = report["options"]["devices"]
    rows = [
        "| database | API read p99, worst (target < 100 ms) | dashboard run page p99 "
        "(< 300 ms) | coordinator RSS peak, 4 readers (< 500 MB) | write one round of "
        f"{devices:,} devices, p99 (< 0.5 s) |",
        "|---|---|---|---|---|",
    ]
    for name, result in report["results"].items():
        api = [r for r in result["reads"] if not r["dashboard"]]
        worst = max(api, key=lambda r: r["p99_ms"])
        cpu = max(api, key=lambda r: r["server_cpu_ms"] or 0.0)
        page = next(r for r in result["reads"] if r["dashboard"])
        rss = result["memory"]["rss_peak_bytes"]
        writes = result["writes"]
        rows.append(
            f"| {name} | {worst['p99_ms']:.1f} ms ({worst['label']}): "
            f"{_verdict(worst['p99_ms'], targets['api_p99_ms'])}; coordinator CPU per "
            f"request at most {cpu['server_cpu_ms']:.1f} ms ({cpu['label']}) "
            f"| {page['p99_ms']:.1f} ms: {_verdict(page['p99_ms'], targets['dashboard_ms'])}; "
            f"CPU {page['server_cpu_ms']:.1f} ms "
            f"| {rss / _MB:.0f} MB: {_verdict(rss, targets['rss_bytes'])} "
            f"| {writes['p99_s']:.3f} s (median {writes['p50_s']:.3f} s): "
            f"{_verdict(writes['p99_s'], targets['write_s'])}; CPU median "
            f"{writes['cpu_p50_s']:.3f} s, p99 {writes['cpu_p99_s']:.3f} s |"
        )
    return rows


def _reads_table(report: dict[str, Any]) -> list[str]:
    names = list(report["results"])
    header = (
        "| read | " + " | ".join(f"{n} p50 / p99 ms | {n} CPU ms | {n} bytes" for n in names) + " |"
    )
    rows = [header, "|---|" + "---|---|---|" * len(names)]
    labels = [r["label"] for r in report["results"][names[0]]["reads"]]
    for label in labels:
        cells = []
        for name in names:
            read = next(r for r in report["results"][name]["reads"] if r["label"] == label)
            cells.append(
                f"{read['p50_ms']:.1f} / {read['p99_ms']:.1f} | {read['server_cpu_ms']:.1f} "
                f"| {read['bytes']:,}"
            )
        rows.append(f"| `{label}` | " + " | ".join(cells) + " |")
    return rows


def markdown(report: dict[str, Any]) -> str:
    """The report: verdicts against the targets, every read, how it was measured."""
    first = next(iter(report["results"].values()))
    shape = first["shape"]
    options = report["options"]
    lines = [
        "# The store at fleet scale (measured)",
        "",
        f"Measured with `{COMMAND}` ({shape['devices']:,} devices x {shape['rounds']} "
        f"rounds, {options['repeats']} timed requests per read, "
        f"{options['rss_seconds']:.0f} s of 4 concurrent readers); each database's exact "
        "command and time are below. Figures: `store-scale.json`; plot: `store-scale.png`.",
        "",
        *_summary_rows(report),
        "",
        "## What was measured",
        "",
        f"- A synthetic run of {shape['devices']:,} devices x {shape['rounds']} rounds: "
        f"{shape['precision_rows']:,} per-layer precision rows (4 layers), "
        f"{shape['devices'] * shape['rounds']:,} per-device rows, one 24 kB checkpoint per "
        "round; 1% of devices fail and 1% are rejected each round.",
        "- Every round is written through `crud.record_round` and one commit in a write "
        "transaction, as a run's recorder stores it: the write time is that call plus the "
        "commit, per round. Its CPU time is the writing process's plus, on PostgreSQL, the "
        "server process's (read from /proc). After the last round the database's planner "
        "statistics are refreshed (`ANALYZE`), as autovacuum does on a table that grows.",
        "- Reads: a real `aptfleet serve` on the database, one HTTP client on loopback, one "
        "request at a time, one warm-up then the timed requests; the dashboard page is "
        "fetched signed in, as a browser does. CPU ms: the coordinator process's CPU time "
        "over the timed requests divided by their number (/proc, 10 ms ticks); it excludes "
        "the PostgreSQL server's work.",
        "- CPU times hardly depend on what else runs on the machine; latencies do: on a "
        "busy machine a request waits for a core, so compare the latency with the CPU time "
        "and the load average below.",
        "- Memory: resident set of the `aptfleet serve` process (/proc), sampled every 50 ms "
        "while 4 clients loop over the 1000-row pages and the dashboard page.",
        "",
        "## Every read",
        "",
        *_reads_table(report),
        "",
        "## Where",
        "",
    ]
    for name, result in report["results"].items():
        loads = ", ".join(f"{k} {v:.1f}" for k, v in result["load_average"].items())
        lines.append(
            f"- {name}: `{result.get('command', COMMAND)}` at {result.get('measured_at', '?')}; "
            f"{result['described']}; 1-minute load average ({loads}) on "
            f"{report['machine']['cpus']} CPUs."
        )
    lines += [
        f"- {report['machine']['platform']}, Python {report['machine']['python']}. The machine "
        "is shared with other jobs: latencies include their contention.",
        "",
    ]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    """p99 of every read per database, with the targets as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["results"])
    labels = [r["label"] for r in report["results"][names[0]]["reads"]]
    fig, ax = plt.subplots(figsize=(10, 0.32 * len(labels) + 1.5))
    height = 0.8 / len(names)
    for i, name in enumerate(names):
        reads = {r["label"]: r for r in report["results"][name]["reads"]}
        ys = [j + i * height for j in range(len(labels))]
        ax.barh(ys, [reads[label]["p99_ms"] for label in labels], height=height, label=name)
    ax.axvline(report["targets"]["api_p99_ms"], color="k", ls="--", lw=1, label="API target")
    ax.axvline(report["targets"]["dashboard_ms"], color="r", ls=":", lw=1, label="page target")
    ax.set_yticks([j + 0.4 - height / 2 for j in range(len(labels))], labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("p99 latency (ms), measured")
    ax.set_title("Reads of a 1,000-device x 250-round run")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
