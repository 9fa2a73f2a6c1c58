"""The `trainyard` command."""

from __future__ import annotations

import typer

app = typer.Typer(help="Trainyard: a Kubernetes-native job scheduler for ML work.", no_args_is_help=True)


def main() -> None:
    """Console-script entry point."""
    app()
