"""Command-line shell of the review stage: ``queue``, ``review``, ``export``, ``review-stats`` and ``import-fixes``."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

import pipeline
from pipeline.formats.commands import UrlPrefix, print_export
from pipeline.formats.convert import READERS
from pipeline.formats.items import FormatError
from pipeline.review.store import Store
from sinet_plus import manifest as mf
from sinet_plus.errors import UserError
from sinet_plus.processes import start_child

APP = Path(pipeline.__file__).resolve().parents[1] / "review_app" / "app.py"
"""The Streamlit app, started by file path so that ``pipeline`` never imports ``review_app``."""

PASSWORD_ENV = "REVIEW_PASSWORD"
"""Environment variable holding the app's password (how a password typed at ``--password``'s prompt reaches the
app, too: a child's environment, unlike its command line, is private to its user)."""

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

    added, known, problems, data_root = queue_manifests(db, manifests, root, tuple(status), order, mix, double,
                                                        gold_from, gold, gold_dir)
    for problem in problems:
        Console(stderr=True).print(f"[yellow]skipped:[/] {problem}")
    if added + known == 0:
        raise UserError("nothing to queue" + ("" if db.exists() else f" ({db} was not created)"))
    console.print(f"queued {added} new items ({known} were already queued) in {db}; data root {data_root}")


def review_command(
    db: Db,
    port: Annotated[int, typer.Option(help="Port of the app.")] = 8501,
    host: Annotated[str, typer.Option(help="Address to bind; 127.0.0.1 keeps the app on this machine.")] = "127.0.0.1",
    password: Annotated[bool, typer.Option("--password", help=f"Ask annotators for a password, typed here at a "
                                                             f"prompt (or taken from ${PASSWORD_ENV}, which turns "
                                                             "it on by itself); never on the command line, where "
                                                             "`ps` shows it to every user.")] = False,
) -> None:
    """Start the Streamlit accept/reject app on a review database; it stops when this command stops."""
    Store(db).close()
    env = dict(os.environ)
    if password and not env.get(PASSWORD_ENV):
        env[PASSWORD_ENV] = typer.prompt("Password for the review app", hide_input=True, confirmation_prompt=True)
    command = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", host,
               "--server.port", str(port), "--server.headless", "true", "--server.fileWatcherType", "none",
               "--server.runOnSave", "false", "--browser.gatherUsageStats", "false",
               "--client.toolbarMode", "minimal", "--", "--db", str(db.resolve())]
    console.print(f"review app on http://{host}:{port} (Ctrl+C stops it)")
    server = start_child(command, env=env)
    signal.signal(signal.SIGTERM, lambda *_: server.terminate())  # a SIGKILL is covered by start_child
    try:
        raise typer.Exit(server.wait())
    except KeyboardInterrupt:  # the server got the Ctrl+C too
        server.wait()
        raise typer.Exit(0)


def export_command(
    db: Db,
    out: Annotated[Path, typer.Option(help="File to write: a manifest (.csv or .parquet), or the --format's file "
                                           "(a folder for fiftyone).")],
    format: Annotated[str, typer.Option(help="manifest, or an annotation tool's format: coco, coco-instances, "
                                             "cvat, label-studio, fiftyone.")] = "manifest",
    status: Annotated[list[str], typer.Option(help="Verdicts to export: accepted, rejected (the fix loop's "
                                                   "start), pending (repeat for several).")] = ["accepted"],
    base: Annotated[list[Path], typer.Option(help="Manifests to include as they are (repeat for several; "
                                                  "manifest format).")] = [],
    split: Annotated[Optional[str], typer.Option(help="Give every reviewed row this split (e.g. train: pseudo-labels "
                                                      "come out of the teacher as unlabeled).")] = None,
    image_url_prefix: UrlPrefix = None,
) -> None:
    """Write the reviewed items as a manifest the SINet trainer reads, or in an annotation tool's format."""
    from pipeline.formats.convert import write_format
    from pipeline.review.export import export_manifest, review_manifest

    if base and format != "manifest":
        raise UserError("--base goes with --format manifest only")
    store = Store(db)
    if format != "manifest":
        items = write_format(review_manifest(store, tuple(status), split), format, out, image_url_prefix)
        print_export(items, format, out)
        return
    manifest, reviewed = export_manifest(store, out, base, tuple(status), split)
    mf.write_manifest(manifest, out)
    console.print(f"wrote {len(manifest)} rows to {out} ({reviewed} reviewed, {len(manifest) - reviewed} from "
                  "base manifests)")


def import_fixes_command(
    file: Annotated[Path, typer.Argument(help="The tool's export of the fixed masks.")],
    format: Annotated[str, typer.Option(help=f"Format: {', '.join(READERS)}.")],
    db: Annotated[Path, typer.Option("--db", help="The review database the rejected masks came from.")],
    annotator: Annotated[Optional[str], typer.Option(help="Who fixed the masks (needed when the file does not "
                                                          "say: CVAT, COCO).")] = None,
    masks: Annotated[Optional[Path], typer.Option(help="Folder for the fixed mask PNGs, under the data root "
                                                       "(default: fixed/ beside the database).")] = None,
) -> None:
    """Add masks fixed in CVAT or Label Studio as accepted items; every other decision stays as it is."""
    from pipeline.review.fixes import import_fixes

    with Store(db) as store:
        result = import_fixes(store, file, format, annotator, masks)
    for problem in result.problems:
        Console(stderr=True).print(f"[yellow]skipped:[/] {problem}")
    console.print(f"added {len(result.added)} fixed masks as accepted items ({len(result.known)} were added "
                  f"before, {len(result.problems)} skipped)")
    if not result.added and not result.known:
        raise FormatError(f"{file}: no fixed mask could be taken back")


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
    app.command("import-fixes")(import_fixes_command)
