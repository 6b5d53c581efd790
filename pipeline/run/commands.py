"""Command-line shell of the orchestrator: ``pipeline run CONFIG.toml``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeline.report import write_report
from pipeline.run.config import load_config
from pipeline.run.plan import plan, report_inputs
from pipeline.run.runner import Runner, subprocess_env
from pipeline.run.step import WaitingForReview
from sinet_plus.cli import stderr
from sinet_plus.errors import UserError

WAITING_EXIT = 2
"""Exit code when the run stopped to wait for human review (nothing failed)."""

STATUS_STYLE = {"ran": "green", "resumed": "green", "skipped": "dim", "failed": "bold red", "waiting": "yellow"}


def summary_table(results) -> Table:
    """One row per step: what it did, whether it ran, how long, and its main figure."""
    table = Table(title="pipeline run")
    for column, justify in (("step", "left"), ("what", "left"), ("status", "left"), ("seconds", "right"),
                            ("result", "left")):
        table.add_column(column, justify=justify)
    for result in results:
        style = STATUS_STYLE.get(result.status, "")
        table.add_row(result.name, result.title, f"[{style}]{result.status}[/]", f"{result.seconds:.0f}",
                      result.note)
    return table


def print_outputs(console: Console, config) -> None:
    """Where the outputs are and how to open the review app."""
    lines = [f"outputs:            {config.out}",
             f"review database:    {config.review_db}",
             f"curated manifest:   {config.curated}"]
    for model in config.models():
        lines.append(f"{model + ':':<20}{config.out / model / 'best.pt'} (eval: {config.out / model / 'eval.json'})")
    lines.append(f"step logs:          {config.out / 'logs'}")
    lines.append(f"open the review app: pipeline review --db {config.review_db}   → http://127.0.0.1:8501")
    if config.report.is_file():
        lines.append(f"run report:         {config.report}   (open it in a browser)")
    console.print("\n".join(lines))


def run_command(
    config_path: Annotated[Path, typer.Argument(metavar="CONFIG",
                                                help="Run config (TOML), e.g. configs/quickstart.toml.")],
    auto_accept: Annotated[Optional[str], typer.Option(
        help="Unattended run: 'teacher' accepts what the teacher's calibrated rule accepts (the auto_accept "
             "column); a number accepts items whose priority is at most it. Reviewer 'auto', the reason states "
             "the rule; the rest stay queued for people. Overrides auto_accept in the config (review table).")
    ] = None,
    teacher: Annotated[Optional[Path], typer.Option(help="Use this teacher checkpoint instead of the config's "
                                                         "(no teacher training).")] = None,
    stop_after: Annotated[Optional[str], typer.Option(help="Stop after this step (e.g. fullbody-crop).")] = None,
    force: Annotated[bool, typer.Option(help="Rerun every step, even the current ones.")] = False,
) -> None:
    """Photos → crop-baidu → teacher → pseudo-label → review → export → sinet train → sinet eval.

    Each step is skipped when its outputs are current; one summary and the run report (HTML) at the end, also
    when the run stops for review or fails (the report shows what is there)."""
    console = Console() if Console().is_terminal else Console(width=150)  # logs: no wrapping at 80 columns
    config = load_config(config_path, auto_accept, teacher)
    steps = plan(config, stop_after)
    runner = Runner(config.out, subprocess_env(config.threads), console, force=force)
    waiting = None
    try:
        runner.run(steps)
    except WaitingForReview as stop:
        waiting = stop
    finally:  # a failed step (RunError) is reported by the toolkit after the summary: one line, exit code 1
        console.print(summary_table(runner.results))
        report_failed = False
        try:
            write_report(report_inputs(config), config.report)
        except (UserError, OSError) as error:
            report_failed = True
            stderr.print(f"[bold red]error:[/] {escape(f'{config.report}: run report not written ({error})')}",
                         soft_wrap=True)
        print_outputs(console, config)
    if report_failed:
        raise typer.Exit(1)
    if waiting is not None:
        stderr.print(f"[yellow]waiting for review:[/] {escape(str(waiting))}", soft_wrap=True)
        raise typer.Exit(WAITING_EXIT)


def register(app: typer.Typer) -> None:
    """Add the ``run`` command to ``app``."""
    app.command("run")(run_command)
