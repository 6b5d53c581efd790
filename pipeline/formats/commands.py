"""Command-line shell of the annotation formats: ``manifest convert`` and ``manifest import-annotations`` (the
review store's ``export --format`` and ``import-fixes`` use them from :mod:`pipeline.review.commands`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from pipeline.formats.convert import EXPORT_FORMATS, READERS
from pipeline.formats.items import common_folder
from sinet_plus import manifest as mf

console = Console()

UrlPrefix = Annotated[Optional[str], typer.Option(
    help="Label Studio: what precedes each photo's name in its image URL (default: /data/local-files/?d=FOLDER/, "
         "FOLDER the photos' folder: Label Studio's document root is its parent, a local storage the folder).")]


def print_export(items, format: str, out: Path) -> None:
    """One line on what was written and where the photos it names are."""
    console.print(f"wrote {len(items)} masks as {format} to {out} (photos named relative to "
                  f"{common_folder([item.image for item in items])})")


def convert_command(
    manifest: Annotated[Path, typer.Argument(help="Manifest whose masked rows to export.")],
    to: Annotated[str, typer.Option(help=f"Format: {', '.join(EXPORT_FORMATS)}.")],
    out: Annotated[Path, typer.Option(help="File to write (a folder for fiftyone).")],
    image_url_prefix: UrlPrefix = None,
) -> None:
    """Write a manifest's masks in an annotation tool's format (COCO RLE, CVAT, Label Studio, FiftyOne)."""
    from pipeline.formats.convert import write_format

    print_export(write_format(mf.load(manifest), to, out, image_url_prefix), to, out)


def import_annotations_command(
    file: Annotated[Path, typer.Argument(help="The tool's export: COCO JSON, CVAT zip or Label Studio JSON.")],
    format: Annotated[str, typer.Option(help=f"Format: {', '.join(READERS)}.")],
    images: Annotated[Path, typer.Option(help="Folder the file's photo names are relative to.")],
    out: Annotated[Path, typer.Option(help="Manifest to write (.csv or .parquet).")],
    masks: Annotated[Optional[Path], typer.Option(help="Folder for the mask PNGs (default: <out stem>-masks "
                                                       "beside the manifest).")] = None,
) -> None:
    """Read an annotation tool's masks back as a manifest with one mask PNG per photo."""
    from pipeline.formats.convert import import_annotations

    manifest = import_annotations(file, format, images, out, masks)
    console.print(f"wrote {len(manifest)} rows to {out}")


def register(app: typer.Typer, manifest_app: typer.Typer) -> None:
    """Add these commands to ``app`` and its ``manifest`` group."""
    manifest_app.command("convert")(convert_command)
    manifest_app.command("import-annotations")(import_annotations_command)
