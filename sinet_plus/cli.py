"""The command-line toolkit both programs (``pipeline`` and ``sinet``) are built with.

One place decides how a command ends: a :class:`~sinet_plus.errors.UserError` (or an ``OSError``, which names
its file) becomes one line ``error: <message>`` on stderr and exit code 1; any other exception is a bug and
keeps its traceback. Commands therefore raise, they never catch-and-exit; :func:`new_app` and
:func:`version_option` give every program the same error handling and ``--version``.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from sinet_plus import __version__
from sinet_plus.errors import UserError

stderr = Console(stderr=True)


def report(error: BaseException) -> None:
    """Print ``error: <message>`` on stderr (the message verbatim: brackets in paths are not markup)."""
    stderr.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)


class Commands(TyperGroup):
    """A Typer command group that ends a command on a user error with its message and exit code 1."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (UserError, OSError) as error:
            report(error)
            raise typer.Exit(1) from None


def version_option(program: str) -> Any:
    """The ``--version`` option of ``program``'s callback: prints ``sinet-plus <program> <version>`` and exits.

    Args:
        program: the command's name (``pipeline``, ``sinet``).
    """
    def show(value: bool) -> None:
        if value:
            typer.echo(f"sinet-plus {program} {__version__}")
            raise typer.Exit()

    return Annotated[Optional[bool], typer.Option("--version", callback=show, is_eager=True,
                                                  help="Print the version and exit.")]


def new_app(help: str) -> typer.Typer:
    """A Typer app whose commands end through :class:`Commands`.

    Args:
        help: what the program (or command group) does, in one line.
    """
    return typer.Typer(cls=Commands, help=help, no_args_is_help=True, pretty_exceptions_show_locals=False)
