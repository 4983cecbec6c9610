"""`aptfleet bench`: the centralized APT benchmark as a command."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from apt_core.bench.report import plot_all, target_checks, write_markdown
from apt_core.bench.runner import TASK_DEFAULTS, BenchConfig, profile_step, run_bench, write_json
from apt_core.config import resolve_policy
from apt_core.methods import METHODS

bench_cli = typer.Typer(add_completion=False, help="APT benchmarks.")
console = Console(stderr=True)


@bench_cli.command("bench")
def bench(
    task: Annotated[str, typer.Option(help="digits or mnist1d")] = "digits",
    model: Annotated[str, typer.Option(help="cnn or mlp")] = "cnn",
    methods: Annotated[str, typer.Option(help="comma-separated methods")] = ",".join(METHODS),
    policy: Annotated[list[str] | None, typer.Option(
        help="apt policy: a name (default, aggressive, accurate) or key=value,... "
             "(repeat for several)")] = None,
    seeds: Annotated[int, typer.Option(min=1)] = 3,
    epochs: Annotated[int | None, typer.Option(min=1, help="override the task default")] = None,
    out: Annotated[Path, typer.Option(help="output directory")] = Path("docs/results/bench"),
    notes: Annotated[Path | None, typer.Option(help="Markdown file appended as notes")] = None,
) -> None:
    """Train every method in the same loop and write results.json, results.md and plots."""
    method_list = [m.strip() for m in methods.split(",") if m.strip()]
    bad = [m for m in method_list if m not in METHODS]
    if bad:
        raise typer.BadParameter(f"method {bad[0]!r} is not one of {METHODS}",
                                 param_hint="--methods")
    cfg = TASK_DEFAULTS.get(task, BenchConfig())
    if epochs is not None:
        cfg = BenchConfig(**{**cfg.__dict__, "epochs": epochs})
    policies = policy or ["default"]
    n_jobs = seeds * sum(len(policies) if m == "apt" else 1 for m in method_list)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as prog:
        overall = prog.add_task("runs", total=n_jobs * cfg.epochs)
        current = prog.add_task("", total=cfg.epochs)

        def on_epoch(label: str, seed: int, i: int, e) -> None:  # type: ignore[no-untyped-def]
            acc = "" if e.test_accuracy is None else f" acc {100 * e.test_accuracy:.1f}%"
            bits = "" if e.mean_bits is None else f" bits {e.mean_bits:.1f}"
            prog.update(current, completed=e.epoch,
                        description=f"{label} seed {seed}: epoch {e.epoch}{acc}{bits}")
            prog.advance(overall)

        results = run_bench(task, model, method_list, policies, seeds, cfg, on_epoch)
    out.mkdir(parents=True, exist_ok=True)
    command = "aptfleet " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    results["command"] = command
    write_json(results, out)
    plot_all(results, out)
    write_markdown(results, out, command, notes.read_text() if notes else "")
    for name, ok, fig in target_checks(results):
        mark = "[green]met[/]" if ok else ("[yellow]n/a[/]" if ok is None else "[red]missed[/]")
        console.print(f"{mark}  {name}: {fig}")
    console.print(f"wrote {out}/results.json, results.md, frontier.png, bits.png, underflow.png")


@bench_cli.command("bench-report")
def bench_report(
    out: Annotated[Path, typer.Option(help="directory holding results.json")],
    notes: Annotated[Path | None, typer.Option(help="Markdown file appended as notes")] = None,
    profile: Annotated[bool, typer.Option(help="measure the per-step CPU profile if the "
                                               "results lack it")] = True,
) -> None:
    """Re-render results.md and the plots from an existing results.json."""
    results = json.loads((out / "results.json").read_text())
    if profile and not results.get("step_profile"):
        cfg = BenchConfig(**results["config"])
        results["step_profile"] = {
            m: profile_step(results["task"], results["model"], m,
                            resolve_policy("default") if m == "apt" else None, cfg)
            for m in ("fp32", "apt")}
        write_json(results, out)
    plot_all(results, out)
    command = results.get("command", "")
    write_markdown(results, out, command, notes.read_text() if notes else "")
    console.print(f"wrote {out}/results.md and plots")
