"""Command-line shell of the review stage: ``queue``, ``review``, ``export`` and ``review-stats``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

import pipeline
from pipeline.review.store import Store
from sinet_plus import manifest as mf
from sinet_plus.errors import UserError

APP = Path(pipeline.__file__).resolve().parents[1] / "review_app" / "app.py"
"""The Streamlit app, started by file path so that ``pipeline`` never imports ``review_app``."""

PASSWORD_ENV = "REVIEW_PASSWORD"
"""Environment variable holding the app's password (how ``--password`` reaches the app, too)."""

console = Console()
Db = Annotated[Path, typer.Option("--db", help="The review database (SQLite).")]


def _print_table(frame, title: str) -> None:
    table = Table(title=title)
    for column in frame.columns:
        table.add_column(str(column))
    for row in frame.itertuples(index=False):
        table.add_row(*("" if value != value else str(value) for value in row))
    console.print(table)


def queue_command(
    manifests: Annotated[list[Path], typer.Argument(help="Manifests whose masks should be reviewed.")],
    db: Db,
    root: Annotated[Optional[Path], typer.Option(help="Data root: every file must lie under it; fixed by the first "
                                                      "queue (default: the deepest folder holding the manifest "
                                                      "and its files).")] = None,
    status: Annotated[list[str], typer.Option(help="Review states to queue (repeat for several).")] = ["pending"],
    order: Annotated[str, typer.Option(help="priority (likely failures first), random or file.")] = "priority",
    mix: Annotated[float, typer.Option(help="Share of items placed at random among the priority order.")] = 0.0,
    double: Annotated[float, typer.Option(help="Share of items reviewed by two annotators.")] = 0.0,
    gold_from: Annotated[Optional[Path], typer.Option(help="Manifest of known-good masks for gold items.")] = None,
    gold: Annotated[int, typer.Option(help="Photos from --gold-from to use as gold (each gives a good and a "
                                           "damaged item).")] = 0,
    gold_dir: Annotated[Optional[Path], typer.Option(help="Where damaged gold masks are written (under the "
                                                          "data root; default: beside the database).")] = None,
) -> None:
    """Add the masked rows of manifests to the review queue; rows already queued are left as they are."""
    from pipeline.review.queue import queue_manifests

    store = Store(db, create=True)
    added, known, problems = queue_manifests(store, manifests, root, tuple(status), order, mix, double,
                                             gold_from, gold, gold_dir)
    for problem in problems:
        Console(stderr=True).print(f"[yellow]skipped:[/] {problem}")
    if added + known == 0:
        raise UserError("nothing to queue")
    console.print(f"queued {added} new items ({known} were already queued) in {db}; data root {store.data_root}")


def review_command(
    db: Db,
    port: Annotated[int, typer.Option(help="Port of the app.")] = 8501,
    host: Annotated[str, typer.Option(help="Address to bind; 127.0.0.1 keeps the app on this machine.")] = "127.0.0.1",
    password: Annotated[Optional[str], typer.Option(envvar=PASSWORD_ENV, show_default=False,
                                                    help="Ask for this password before reviewing.")] = None,
) -> None:
    """Start the Streamlit accept/reject app on a review database."""
    Store(db).close()
    env = dict(os.environ)
    env.pop(PASSWORD_ENV, None)
    if password:
        env[PASSWORD_ENV] = password
    command = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", host,
               "--server.port", str(port), "--server.headless", "true", "--server.fileWatcherType", "none",
               "--server.runOnSave", "false", "--browser.gatherUsageStats", "false",
               "--client.toolbarMode", "minimal", "--", "--db", str(db.resolve())]
    console.print(f"review app on http://{host}:{port} (Ctrl+C stops it)")
    try:
        raise typer.Exit(subprocess.call(command, env=env))
    except KeyboardInterrupt:
        raise typer.Exit(0)


def export_command(
    db: Db,
    out: Annotated[Path, typer.Option(help="Manifest to write (.csv or .parquet).")],
    base: Annotated[list[Path], typer.Option(help="Manifests to include as they are (repeat for several).")] = [],
    with_rejected: Annotated[bool, typer.Option(help="Also write rejected items (status rejected).")] = False,
    split: Annotated[Optional[str], typer.Option(help="Give every reviewed row this split (e.g. train: pseudo-labels "
                                                      "come out of the teacher as unlabeled).")] = None,
) -> None:
    """Write the accepted items (plus any base manifests) as a manifest the SINet trainer reads."""
    from pipeline.review.export import export_manifest

    manifest, reviewed = export_manifest(Store(db), out, base, with_rejected, split)
    mf.write_manifest(manifest, out)
    console.print(f"wrote {len(manifest)} rows to {out} ({reviewed} reviewed, {len(manifest) - reviewed} from "
                  "base manifests)")


def review_stats_command(
    db: Db,
    png: Annotated[Optional[Path], typer.Option(help="PNG sheet to write (default: beside the database).")] = None,
) -> None:
    """Throughput per annotator, agreement on double-reviewed items, accuracy on gold items, reject reasons."""
    from pipeline.review.stats import plot, review_stats

    stats = review_stats(Store(db))
    _print_table(stats.throughput, "throughput per annotator")
    _print_table(stats.agreement, "agreement on double-reviewed items")
    _print_table(stats.gold, "accuracy on gold items")
    _print_table(stats.reasons, "reject reasons")
    png = png or db.with_name(f"{db.stem}-stats.png")
    plot(stats, png)
    console.print(f"wrote {png}")


def register(app: typer.Typer) -> None:
    """Add this stage's commands to ``app``."""
    app.command("queue")(queue_command)
    app.command("review")(review_command)
    app.command("export")(export_command)
    app.command("review-stats")(review_stats_command)
