"""The `aptfleet` command: every sub-command of the project under one entry point."""

from __future__ import annotations

import logging

import typer

from apt_core.bench.cli import bench_cli
from server.cli.coordinator import server_cli
from server.cli.demo import demo_cli
from server.cli.flower import fl_cli
from server.cli.load.command import load_cli
from server.cli.load.scale_command import scale_cli
from server.cli.load.store_command import store_cli

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="aptfleet: federated edge learning with Adaptive Precision Training.",
)
for sub in (bench_cli, fl_cli, server_cli, demo_cli, load_cli, store_cli, scale_cli):
    app.add_typer(sub, name=None)


def main() -> None:
    """Console-script entry point."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
