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

from apt_core.bench import runtime, runtime_report
from apt_core.bench.report import plot_all, target_checks, write_markdown
from apt_core.bench.runner import TASK_DEFAULTS, BenchConfig, profile_step, run_bench, write_json
from apt_core.config import resolve_policy
from apt_core.methods import METHODS
from apt_core.tasks.data import TASK_NAMES
from apt_core.tasks.networks import MODEL_NAMES

bench_cli = typer.Typer(add_completion=False, help="APT benchmarks.")
console = Console(stderr=True)


@bench_cli.command("bench")
def bench(
    task: Annotated[str, typer.Option(help="digits or mnist1d")] = "digits",
    model: Annotated[str, typer.Option(help="cnn or mlp")] = "cnn",
    methods: Annotated[str, typer.Option(help="comma-separated methods")] = ",".join(METHODS),
    policy: Annotated[
        list[str] | None,
        typer.Option(
            help="apt policy: a name (default, aggressive, accurate, nearest, stochastic) "
            "or key=value,... (repeat for several)"
        ),
    ] = None,
    seeds: Annotated[int, typer.Option(min=1)] = 3,
    epochs: Annotated[int | None, typer.Option(min=1, help="override the task default")] = None,
    out: Annotated[Path, typer.Option(help="output directory")] = Path("docs/results/bench"),
    notes: Annotated[Path | None, typer.Option(help="Markdown file appended as notes")] = None,
) -> None:
    """Train every method in the same loop and write results.json, results.md and plots."""
    method_list = [m.strip() for m in methods.split(",") if m.strip()]
    bad = [m for m in method_list if m not in METHODS]
    if bad:
        raise typer.BadParameter(
            f"method {bad[0]!r} is not one of {METHODS}", param_hint="--methods"
        )
    cfg = TASK_DEFAULTS.get(task, BenchConfig())
    if epochs is not None:
        cfg = BenchConfig(**{**cfg.__dict__, "epochs": epochs})
    policies = policy or ["default"]
    n_jobs = seeds * sum(len(policies) if m == "apt" else 1 for m in method_list)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as prog:
        overall = prog.add_task("runs", total=n_jobs * cfg.epochs)
        current = prog.add_task("", total=cfg.epochs)

        def on_epoch(label: str, seed: int, i: int, e) -> None:  # type: ignore[no-untyped-def]
            acc = "" if e.test_accuracy is None else f" acc {100 * e.test_accuracy:.1f}%"
            bits = "" if e.mean_bits is None else f" bits {e.mean_bits:.1f}"
            prog.update(
                current,
                completed=e.epoch,
                description=f"{label} seed {seed}: epoch {e.epoch}{acc}{bits}",
            )
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
    profile: Annotated[
        bool, typer.Option(help="measure the per-step CPU profile if the results lack it")
    ] = True,
) -> None:
    """Re-render results.md and the plots from an existing results.json."""
    results = json.loads((out / "results.json").read_text())
    if profile and not results.get("step_profile"):
        cfg = BenchConfig(**results["config"])
        results["step_profile"] = {
            m: profile_step(
                results["task"],
                results["model"],
                m,
                resolve_policy("default") if m == "apt" else None,
                cfg,
            )
            for m in ("fp32", "apt")
        }
        write_json(results, out)
    plot_all(results, out)
    command = results.get("command", "")
    write_markdown(results, out, command, notes.read_text() if notes else "")
    console.print(f"wrote {out}/results.md and plots")


def _csv(value: str | None, option: str) -> list[str]:
    """The items of a comma-separated option ([] when it was not given)."""
    if value is None:
        return []
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise typer.BadParameter(f"{value!r} names nothing", param_hint=option)
    return items


def _ints(value: str | None, option: str) -> list[int]:
    try:
        return [int(v) for v in _csv(value, option)]
    except ValueError as e:
        raise typer.BadParameter(
            f"{value!r} is not a comma-separated list of integers", param_hint=option
        ) from e


def _given_command(ctx: typer.Context) -> str:
    """The command line that reproduces this run: the options the user set, as given."""
    words = ["aptfleet", ctx.info_name or "bench-runtime"]
    for param in ctx.command.params:
        name = param.name or ""
        source = ctx.get_parameter_source(name)
        if source is not None and source.name != "DEFAULT" and param.opts:
            words += [param.opts[0], str(ctx.params[name])]
    return " ".join(shlex.quote(w) for w in words)


@bench_cli.command("bench-runtime")
def bench_runtime(
    ctx: typer.Context,
    task: Annotated[
        str | None, typer.Option(help="comma-separated tasks (digits, mnist1d)")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="comma-separated models (mlp-wide, cnn, mlp)")
    ] = None,
    batch: Annotated[str | None, typer.Option(help="comma-separated batch sizes")] = None,
    bits: Annotated[str, typer.Option(help="comma-separated APT bit-widths")] = "8,12,16",
    steps: Annotated[int, typer.Option(min=1, help="timed steps per model (median)")] = 25,
    warmup: Annotated[int, typer.Option(min=0, help="untimed rounds first")] = 5,
    threads: Annotated[int, typer.Option(min=1, help="torch intra-op threads")] = 1,
    backend: Annotated[
        str | None,
        typer.Option(
            help="comma-separated APT backends (default: every one apt_core.kernels offers)"
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="output directory")] = Path("docs/results/runtime"),
) -> None:
    """Measure APT's step time and peak training memory against fp32, side by side.

    Without --task/--model/--batch it runs the issue-9 grid (digits mlp-wide at batch 64
    and 256, digits cnn and mnist1d cnn at batch 64); with any of them, every combination
    of the given (or default) tasks, models and batches. Writes results.json, results.md
    and runtime.png.
    """
    if task is None and model is None and batch is None:
        cases = list(runtime.DEFAULT_CASES)
    else:
        cases = [
            (t, m, b)
            for t in _csv(task, "--task") or ["digits", "mnist1d"]
            for m in _csv(model, "--model") or ["mlp-wide", "cnn"]
            for b in _ints(batch, "--batch") or [64]
        ]
    for t, m, b in cases:
        if t not in TASK_NAMES:
            raise typer.BadParameter(f"task {t!r} is not one of {TASK_NAMES}", param_hint="--task")
        if m not in MODEL_NAMES:
            raise typer.BadParameter(
                f"model {m!r} is not one of {MODEL_NAMES}", param_hint="--model"
            )
        if b < 1:
            raise typer.BadParameter(f"batch {b} must be >= 1", param_hint="--batch")
    available = runtime.available_backends()
    chosen: list[str | None] = list(available) or [None]
    if backend is not None:
        bad = [b for b in _csv(backend, "--backend") if b not in available]
        if bad:
            raise typer.BadParameter(
                f"backend {bad[0]!r} is not one of {list(available)}", param_hint="--backend"
            )
        chosen = list(_csv(backend, "--backend"))
    cfg = runtime.RuntimeConfig(steps=steps, warmup=warmup, threads=threads)
    bit_list = _ints(bits, "--bits")
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as prog:
        bar = prog.add_task("runtime", total=runtime.work_units(cases, bit_list, cfg, chosen))

        def on_progress(desc: str) -> None:
            prog.update(bar, advance=1, description=desc)

        results = runtime.run_runtime(cases, bit_list, cfg, chosen, on_progress)
    results["command"] = _given_command(ctx)
    results["targets"] = runtime_report.target_checks(results)
    runtime.write_json(results, out)
    runtime_report.write_markdown(results, out)
    runtime_report.plot_ratios(results, out)
    for r in results["rows"]:
        console.print(
            f"{r['task']} {r['model']} b{r['batch']} {r['label']}: "
            f"step {r['step_ratio_vs_fp32']:.2f}x, peak {r['peak_ratio_vs_fp32']:.2f}x"
        )
    for c in results["targets"]:
        mark = {True: "[green]met[/]", False: "[red]missed[/]", None: "[yellow]n/a[/]"}[c["met"]]
        console.print(f"{mark}  {c['target']}")
    console.print(f"wrote {out}/results.json, results.md, runtime.png")
