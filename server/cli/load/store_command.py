"""``aptfleet store-bench``: the command line of the store-at-scale benchmark."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import click
import typer

from server.cli.load.store_bench import StoreBenchOptions, run_store_bench
from server.cli.load.store_report import markdown, plot
from server.cli.load.stress import DATABASES, POSTGRES_URL
from server.cli.service import REPO_ROOT

# no locals in tracebacks: they would show the bearer token
store_cli = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)


@store_cli.command("store-bench")
def store_bench(
    database: Annotated[
        list[str] | None,
        typer.Option(
            click_type=click.Choice(list(DATABASES)), help="database(s), in turn (default: both)"
        ),
    ] = None,
    devices: Annotated[int, typer.Option(min=1, help="devices of the synthetic run")] = 1000,
    rounds: Annotated[int, typer.Option(min=1, help="rounds of the synthetic run")] = 250,
    repeats: Annotated[int, typer.Option(min=1, help="timed requests per read")] = 50,
    rss_seconds: Annotated[float, typer.Option(min=1, help="seconds of 4 readers")] = 20.0,
    postgres_url: Annotated[
        str, typer.Option(help="PostgreSQL server (a new database is created, then dropped)")
    ] = POSTGRES_URL,
    out: Annotated[Path, typer.Option(help="directory of store-scale.json/.md/.png")] = (
        REPO_ROOT / "docs" / "results"
    ),
    report_only: Annotated[
        bool, typer.Option(help="measure nothing: rewrite the .md and .png from the .json")
    ] = False,
) -> None:
    """Generate a synthetic store (1,000 devices x 250 rounds) and measure it.

    On each database: the time to write one round, every API read's p99, the run's
    dashboard page and the coordinator's memory under 4 concurrent readers. Writes
    store-scale.json, .md and .png to --out; a database not measured keeps its earlier
    result from store-scale.json.
    """
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", force=True)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "store-scale.json"
    if report_only:
        report = json.loads(path.read_text())
    else:
        options = StoreBenchOptions(
            databases=tuple(database or DATABASES),
            devices=devices,
            rounds=rounds,
            postgres_url=postgres_url,
            repeats=repeats,
            rss_seconds=rss_seconds,
        )
        report = run_store_bench(options)
        if path.exists():  # keep the other databases' earlier results
            earlier = json.loads(path.read_text())
            report["results"] = {**earlier.get("results", {}), **report["results"]}
        path.write_text(json.dumps(report, indent=2) + "\n")
    (out / "store-scale.md").write_text(markdown(report))
    plot(report, out / "store-scale.png")
    typer.echo(f"wrote {path}, store-scale.md and store-scale.png")
