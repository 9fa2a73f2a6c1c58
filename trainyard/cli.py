"""The `trainyard` command."""

from __future__ import annotations

import typer

from trainyard.scheduler.simulator.cli import simulate

app = typer.Typer(help="Trainyard: a Kubernetes-native job scheduler for ML work.", no_args_is_help=True)
app.command("simulate")(simulate)


def main() -> None:
    """Console-script entry point."""
    app()
