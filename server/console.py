"""The `aptfleet` command: every sub-command of the project under one entry point."""

from __future__ import annotations

import logging

import typer

from apt_core.cli import bench_cli

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="aptfleet: federated edge learning with Adaptive Precision Training.")
app.add_typer(bench_cli, name=None)


def main() -> None:
    """Console-script entry point."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()
