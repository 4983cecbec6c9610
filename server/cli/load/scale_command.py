"""``aptfleet scale-bench``: round time and peak memory of the simulation vs devices per round."""

from __future__ import annotations

import json
import logging
import shlex
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from server.cli.load.scale_bench import ScaleConfig, machine, measure
from server.cli.load.scale_report import markdown, plot
from server.cli.service import REPO_ROOT

scale_cli = typer.Typer(add_completion=False)

#: What the growth between the rows comes from (docs/results/scale.md explains the figures).
NOTES_FILE = "scale-notes.md"


@scale_cli.command("scale-bench")
def scale_bench(
    devices: Annotated[
        list[int] | None, typer.Option(help="devices per round, one run each (default 10 50 100)")
    ] = None,
    clients: Annotated[int, typer.Option(min=1, help="simulated devices of the fleet")] = 1000,
    rounds: Annotated[int, typer.Option(min=2, help="rounds per run")] = 5,
    task: Annotated[str, typer.Option(help="digits or mnist1d")] = "digits",
    model: Annotated[str, typer.Option(help="cnn or mlp")] = "cnn",
    out: Annotated[Path, typer.Option(help="directory of scale.json/.md/.png")] = (
        REPO_ROOT / "docs" / "results"
    ),
    report_only: Annotated[
        bool, typer.Option(help="measure nothing: rewrite the .md and .png from the .json")
    ] = False,
    append: Annotated[
        bool, typer.Option(help="keep the .json's rows of other devices-per-round counts")
    ] = False,
    ray_dir: Annotated[
        str | None,
        typer.Option(help="--temp-dir of a running 'ray start --head' to join (default: own Ray)"),
    ] = None,
) -> None:
    """Run the simulation engine at each devices-per-round count and measure it.

    Each run is its own process (Ray started fresh); writes scale.json, scale.md and
    scale.png to --out. The notes in --out/scale-notes.md, if present, close scale.md.
    """
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", force=True)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "scale.json"
    if report_only:
        report = json.loads(path.read_text())
    else:
        base = ScaleConfig(clients, 0, rounds, task=task, arch=model, ray_dir=ray_dir)
        report = _measure_all(devices or [10, 50, 100], base, path, append)
    notes = out / NOTES_FILE
    report["notes"] = notes.read_text().splitlines() if notes.exists() else []
    (out / "scale.md").write_text(markdown(report))
    plot(report, out / "scale.png")
    typer.echo(f"wrote {path}, scale.md and scale.png")


def _measure_all(counts: list[int], base: ScaleConfig, path: Path, append: bool) -> dict[str, Any]:
    """Measure each devices-per-round count; the json is rewritten after every row."""
    kept = json.loads(path.read_text())["rows"] if append and path.exists() else []
    report: dict[str, Any] = {"rows": [r for r in kept if r["devices"] not in counts]}
    command = "aptfleet " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="aptfleet-scale-") as work:
        for k in counts:
            config = replace(base, devices=k)
            typer.echo(f"measuring {config} ...")
            row = _measure_twice(config, Path(work))
            report["rows"].append({**row, "command": command, "machine": machine()})
            report["rows"].sort(key=lambda r: r["devices"])
            path.write_text(json.dumps(report, indent=2) + "\n")
    return report


def _measure_twice(config: ScaleConfig, work: Path) -> dict[str, Any]:
    """Measure ``config``; once more if the run failed (Ray's start-up times out under load)."""
    try:
        return measure(config, work)
    except RuntimeError as exc:
        typer.echo(f"{exc} Measuring it once more.")
        return {**measure(config, work), "attempts": 2}
