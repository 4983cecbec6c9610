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
from server.cli.load.stress import (
    DATABASES,
    POSTGRES_URL,
    StressOptions,
    run_stress,
    write_reports,
)
from server.cli.load.traffic import BURST_REQUESTS
from server.cli.service import REPO_ROOT

load_cli = typer.Typer(add_completion=False)


@load_cli.command("load")
def load(
    rate: Annotated[float, typer.Option(min=0.1, help="requests per second")] = 100.0,
    duration: Annotated[
        float, typer.Option(help="minimum seconds of load; it goes on until the run ends")
    ] = 60.0,
    max_duration: Annotated[float, typer.Option(help="hard cap on the seconds of load")] = 240.0,
    idle_duration: Annotated[
        float, typer.Option(help="seconds of the same load with no run training (0: skip)")
    ] = 20.0,
    out: Annotated[Path, typer.Option(help="directory of load.json, load.md, load.png")] = (
        REPO_ROOT / "docs" / "results"
    ),
    keep: Annotated[bool, typer.Option(help="keep the temporary data dir")] = False,
    report_only: Annotated[
        bool, typer.Option(help="measure nothing: rewrite load.md from the load.json in --out")
    ] = False,
    rounds: Annotated[int, typer.Option(min=1, help="rounds of each run")] = DEFAULT_ROUNDS,
    clients: Annotated[int, typer.Option(min=1, help="clients of each run")] = DEFAULT_CLIENTS,
    burst: Annotated[
        int, typer.Option(min=1, help="simultaneous reads of the final burst")
    ] = BURST_REQUESTS,
    scenario: Annotated[
        str,
        typer.Option(
            click_type=click.Choice(["read", "stress"]),
            help=(
                "stress: stalled sockets, run-start burst, policy writes during steady reads; "
                "writes stress.json/.md/.png (see server/cli/load/stress.py)"
            ),
        ),
    ] = "read",
    database: Annotated[
        list[str] | None,
        typer.Option(
            click_type=click.Choice(list(DATABASES)),
            help="stress: database(s), in turn (default: both)",
        ),
    ] = None,
    postgres_url: Annotated[str, typer.Option(help="stress: PostgreSQL server")] = POSTGRES_URL,
    after_duration: Annotated[float, typer.Option(min=0, help="stress: reads after")] = 10.0,
    stalled: Annotated[int, typer.Option(min=0, help="stress: stalled sockets")] = 300,
    run_burst: Annotated[int, typer.Option(min=1, help="stress: POST /runs at once")] = 40,
    writers: Annotated[int, typer.Option(min=1, help="stress: policy writers")] = 4,
    writes: Annotated[int, typer.Option(min=1, help="stress: PUTs per writer")] = 25,
    max_active_runs: Annotated[
        int, typer.Option(min=0, help="stress: the coordinator's APTFLEET_MAX_ACTIVE_RUNS")
    ] = 1,
) -> None:
    """Read latency of the coordinator at a fixed request rate while a run trains.

    Starts a real coordinator on a temporary SQLite database on 127.0.0.1, trains
    simulated runs with and without an open-loop read load, and writes load.json, load.md
    and load.png to --out (``--scenario stress``: the stress scenarios, stress.*). Every
    wait is bounded and the command stops by itself.
    """
    if scenario == "stress":
        _stress(
            StressOptions(
                tuple(database or DATABASES),
                rate,
                idle_duration,
                duration,
                after_duration,
                stalled,
                run_burst,
                writers,
                writes,
                rounds,
                clients,
                max_active_runs,
                postgres_url,
                out,
                keep,
            ),
            report_only,
        )
        return
    if report_only:
        result = json.loads((out / "load.json").read_text())
        (out / "load.md").write_text(markdown(result, result["command"]))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("load").setLevel(logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # no log line per request
    run(
        Options(
            rate=rate,
            duration=duration,
            max_duration=max_duration,
            idle_duration=idle_duration,
            out=out,
            keep=keep,
            rounds=rounds,
            clients=clients,
            burst=burst,
        )
    )


def _stress(options: StressOptions, report_only: bool) -> None:
    """The stress scenario, or (``report_only``) stress.md/.png from stress.json."""
    if report_only:
        write_reports(json.loads((options.out / "stress.json").read_text()), options.out)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("load").setLevel(logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    run_stress(options)


def main(argv: list[str] | None = None) -> int:
    """``python -m server.cli.load [flags]``: the same command and flags as ``aptfleet load``."""
    command = typer.main.get_command(load_cli)
    try:
        command.main(args=argv, prog_name="python -m server.cli.load", standalone_mode=False)
    except click.ClickException as exc:  # a bad flag: print the usage error, not a traceback
        exc.show()
        return exc.exit_code
    return 0
