"""``aptfleet load``: the command line of the load benchmark."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import click
import typer

from server.cli.load.benchmark import Options, run
from server.cli.load.report import markdown
from server.cli.load.runs import DEFAULT_CLIENTS, DEFAULT_ROUNDS
from server.cli.load.traffic import BURST_REQUESTS
from server.cli.service import REPO_ROOT

load_cli = typer.Typer(add_completion=False)


@load_cli.command("load")
def load(
    rate: Annotated[float, typer.Option(min=0.1, help="requests per second")] = 100.0,
    duration: Annotated[float, typer.Option(
        help="minimum seconds of load; it goes on until the run ends")] = 60.0,
    max_duration: Annotated[float, typer.Option(
        help="hard cap on the seconds of load")] = 240.0,
    idle_duration: Annotated[float, typer.Option(
        help="seconds of the same load with no run training (0: skip)")] = 20.0,
    out: Annotated[Path, typer.Option(help="directory of load.json, load.md, load.png")] = (
        REPO_ROOT / "docs" / "results"),
    keep: Annotated[bool, typer.Option(help="keep the temporary data dir")] = False,
    report_only: Annotated[bool, typer.Option(
        help="measure nothing: rewrite load.md from the load.json in --out")] = False,
    rounds: Annotated[int, typer.Option(min=1, help="rounds of each run")] = DEFAULT_ROUNDS,
    clients: Annotated[int, typer.Option(min=1, help="clients of each run")] = DEFAULT_CLIENTS,
    burst: Annotated[int, typer.Option(
        min=1, help="simultaneous reads of the final burst")] = BURST_REQUESTS,
) -> None:
    """Read latency of the coordinator at a fixed request rate while a run trains.

    Starts a real coordinator on a temporary SQLite database on 127.0.0.1, trains
    simulated runs with and without an open-loop read load, and writes load.json, load.md
    and load.png to --out. Every wait is bounded and the command stops by itself.
    """
    if report_only:
        result = json.loads((out / "load.json").read_text())
        (out / "load.md").write_text(markdown(result, result["command"]))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("load").setLevel(logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # no log line per request
    run(Options(rate=rate, duration=duration, max_duration=max_duration,
                idle_duration=idle_duration, out=out, keep=keep, rounds=rounds,
                clients=clients, burst=burst))


def main(argv: list[str] | None = None) -> int:
    """``python -m server.cli.load [flags]``: the same command and flags as ``aptfleet load``."""
    command = typer.main.get_command(load_cli)
    try:
        command.main(args=argv, prog_name="python -m server.cli.load", standalone_mode=False)
    except click.ClickException as exc:  # a bad flag: print the usage error, not a traceback
        exc.show()
        return exc.exit_code
    return 0
