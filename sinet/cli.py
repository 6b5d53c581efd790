"""The ``sinet`` command: parses options and calls the trainer, evaluator, predictor, exporter and bench."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console

from sinet import __version__

app = typer.Typer(help="SINet: train, evaluate, predict, export and benchmark.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)


def _version(value: bool) -> None:
    if value:
        Console().print(f"sinet-plus sinet {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                         help="Print the version and exit.")] = None) -> None:
    """SINet commands."""
