"""``aptfleet federated-compare``: several methods over several seeds, summarised."""

from __future__ import annotations

import functools
import logging
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True)


def _ints(text: str, name: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"{name}={text!r} must be comma-separated integers.") from None
    if not values:
        raise typer.BadParameter(f"{name}={text!r} names no value.")
    return values


def compare_cmd(
    task: Annotated[str, typer.Option(help="digits or mnist1d")] = "digits",
    methods: Annotated[
        str,
        typer.Option(help="comma-separated: fp32 (required), fp32-q8, qat8, apt, apt-<policy>"),
    ] = "fp32,fp32-q8,apt,apt-aggressive,apt-nearest",
    seeds: Annotated[str, typer.Option(help="comma-separated seeds")] = "0,1,2",
    clients: Annotated[int, typer.Option(min=1)] = 20,
    fraction: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.5,
    rounds: Annotated[int, typer.Option(min=1)] = 30,
    alpha: Annotated[float, typer.Option(help="Dirichlet label skew; 0 = IID")] = 0.5,
    out: Annotated[Path, typer.Option(help="output directory")] = Path("results/compare"),
    ray_address: Annotated[
        str | None,
        typer.Option(
            envvar="APTFLEET_RAY_ADDRESS",
            help="host:port of an existing Ray cluster every run joins (default: each run "
            "starts its own on 127.0.0.1)",
        ),
    ] = None,
) -> None:
    """Run every method on every seed (simulation engine) and compare them over seeds.

    Runs seed by seed into OUT/seed-<S>/<method>/ (a run already there with the same
    settings is reused, so an interrupted comparison resumes), then writes
    OUT/compare.json, compare.md, accuracy_energy.png and accuracy_bytes.png. A run's
    accuracy is the mean of its last 5 rounds; over seeds: mean, sample std, min-max.
    """
    from server.flower.compare import compare, parse_method
    from server.flower.compare_report import plot_tradeoffs, write_markdown
    from server.flower.simulation import simulate

    names = [m.strip() for m in methods.split(",") if m.strip()]
    try:
        for m in names:
            parse_method(m)
    except ValueError as exc:
        raise typer.BadParameter(f"--methods: {exc}") from None
    settings = {
        "task": task,
        "clients": clients,
        "fraction": fraction,
        "rounds": rounds,
        "alpha": alpha if alpha > 0 else None,
    }
    logging.getLogger("flwr").setLevel(logging.ERROR)
    try:
        result = compare(
            names,
            _ints(seeds, "--seeds"),
            out,
            settings,
            run=functools.partial(simulate, ray_address=ray_address),
            on_run=lambda m, s: console.print(f"{task}: seed {s}, {m}"),
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    command = "aptfleet " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    write_markdown(result, out, command)
    plot_tradeoffs(result, out)
    console.print(f"wrote {out}/compare.json, compare.md, accuracy_energy.png, accuracy_bytes.png")
