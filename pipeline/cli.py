"""The ``pipeline`` command: parses options, wires files and calls the stages' pure cores.

Each stage keeps its command-line shell beside its core (``pipeline/*/commands.py``); this module builds the app
from them and holds the ``manifest`` commands. How a command ends on an error is decided once, in
:mod:`sinet_plus.cli`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from pipeline.crop import commands as crop_commands
from pipeline.formats import commands as format_commands
from pipeline.importers import ImportResult, import_eg1800, import_folder
from pipeline.review import commands as review_commands
from pipeline.run import commands as run_commands
from pipeline.teacher import commands as teacher_commands
from sinet_plus import manifest as mf
from sinet_plus.cli import new_app, version_option
from sinet_plus.errors import UserError

console = Console()
app = new_app("sinet-plus data engine: crop, pseudo-label, review and export portrait data.")
manifest_app = new_app("Validate, inspect, combine and import manifests.")
app.add_typer(manifest_app, name="manifest")
Version = version_option("pipeline")


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False,
    version: Version = None,
) -> None:
    """Set up rich logging for every command."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(console=Console(stderr=True), show_path=False)], force=True)


def _finish_import(result: ImportResult, out: Path, strict: bool) -> None:
    for problem in result.problems:
        Console(stderr=True).print(f"[yellow]skipped:[/] {problem}")
    if len(result.manifest) == 0:
        raise UserError("nothing could be imported")
    mf.write_manifest(result.manifest, out)
    console.print(f"wrote {len(result.manifest)} rows to {out} ({len(result.problems)} files skipped)")
    if strict and result.problems:
        raise typer.Exit(1)


@manifest_app.command("import-eg1800")
def import_eg1800_command(
    folder: Annotated[Path, typer.Argument(help="EG1800 folder with images/, masks/ and split.csv.")],
    out: Annotated[Path, typer.Option(help="Manifest to write (.csv or .parquet).")],
    strict: Annotated[bool, typer.Option(help="Exit non-zero if any file was skipped.")] = False,
    holdout: Annotated[int, typer.Option(help="Move this many random train rows to split 'holdout' (to select "
                                              "models on without touching val).")] = 0,
    holdout_seed: Annotated[int, typer.Option(help="Seed of the holdout draw.")] = 0,
) -> None:
    """Import EG1800 (images/, masks/, split.csv) as a manifest of accepted human-made masks."""
    _finish_import(import_eg1800(folder, out, holdout, holdout_seed), out, strict)


@manifest_app.command("import-folder")
def import_folder_command(
    images: Annotated[Path, typer.Argument(help="Folder of photos.")],
    out: Annotated[Path, typer.Option(help="Manifest to write (.csv or .parquet).")],
    masks: Annotated[Optional[Path], typer.Option(help="Folder of masks with the photos' stems.")] = None,
    source: Annotated[str, typer.Option(help="Source name; also the id prefix.")] = "folder",
    split_file: Annotated[Optional[Path], typer.Option(help="CSV with stem,split columns.")] = None,
    split: Annotated[str, typer.Option(help="Split of masked photos not in the split file.")] = "train",
    strict: Annotated[bool, typer.Option(help="Exit non-zero if any file was skipped.")] = False,
) -> None:
    """Import a folder of photos (and optionally masks with matching stems) as a manifest."""
    result = import_folder(images, masks, out, source=source, split_file=split_file, default_split=split)
    _finish_import(result, out, strict)


@manifest_app.command("validate")
def validate_command(
    manifests: Annotated[list[Path], typer.Argument(help="Manifests to check.")],
    check_files: Annotated[bool, typer.Option("--check-files/--no-check-files",
                                              help="Also check that every image and mask exists.")] = True,
    root: Annotated[Optional[Path], typer.Option(help="Require every path to stay under this folder.")] = None,
) -> None:
    """Check manifests; exit 0 when all are valid, 1 with the reasons when not."""
    invalid = 0
    for path in manifests:
        try:
            problems = mf.validate(mf.read_manifest(path), check_files=check_files, root=root)
        except mf.ManifestError as error:
            problems = [str(error)]
        if problems:
            invalid += 1
            Console(stderr=True).print(f"[bold red]invalid[/] {path}:")
            for problem in problems:
                Console(stderr=True).print(f"  - {problem}")
        else:
            console.print(f"[green]valid[/] {path}")
    if invalid:
        raise typer.Exit(1)


@manifest_app.command("stats")
def stats_command(
    manifests: Annotated[list[Path], typer.Argument(help="Manifests to summarise.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Counts by source, split, review status and mask presence."""
    for path in manifests:
        counts = mf.stats(mf.read_manifest(path))
        if as_json:
            console.print_json(json.dumps({str(path): counts}))
            continue
        table = Table(title=f"{path} ({sum(counts.get('status', {}).values())} rows)")
        for column in ("column", "value", "rows"):
            table.add_column(column)
        for column, values in counts.items():
            for value, count in values.items():
                table.add_row(column, value, str(count))
        console.print(table)


@manifest_app.command("concat")
def concat_command(
    manifests: Annotated[list[Path], typer.Argument(help="Manifests to stack.")],
    out: Annotated[Path, typer.Option(help="Manifest to write; paths are rebased to its folder.")],
    prefix_ids: Annotated[bool, typer.Option(help="Prefix ids with each manifest's file stem.")] = False,
) -> None:
    """Stack manifests from several stages into one, refusing id clashes."""
    tables = [mf.load(path) for path in manifests]
    combined = mf.concat(tables, out.parent.absolute(), prefix_ids=prefix_ids, names=[p.stem for p in manifests])
    mf.write_manifest(combined, out)
    console.print(f"wrote {len(combined)} rows to {out}")


for stage in (crop_commands, teacher_commands, review_commands, run_commands):
    stage.register(app)
format_commands.register(app, manifest_app)

if __name__ == "__main__":
    app()
