"""Command-line shell of this stage: `pipeline crop-baidu`.

Every setting's default is read from :class:`~pipeline.crop.stage.CropSettings`, and every flag is named after its
field (with the group's name in front where the field's alone would be ambiguous: ``--detector-max-side``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from pipeline.crop.framing import FramingRule
from pipeline.crop.preview import write_contact_sheet
from pipeline.crop.rules import SelectionRules
from pipeline.crop.stage import ENGINES, CropSettings, run
from pipeline.faces import DetectorSettings
from sinet_plus import manifest as mf
from sinet_plus.errors import UserError

defaults = CropSettings()
NATIVE = "native"


def _size(text: str) -> tuple[int, int] | None:
    if text.lower() == NATIVE:
        return None
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not WIDTHxHEIGHT (e.g. 600x800) or {NATIVE}") from None
    if width < 1 or height < 1:
        raise typer.BadParameter(f"{text!r}: width and height must be positive")
    return width, height


def _size_text(size: tuple[int, int] | None) -> str:
    return NATIVE if size is None else f"{size[0]}x{size[1]}"


def _thresholds(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(0 < v < 1 for v in values):
        raise typer.BadParameter(f"{text!r} is not three probabilities like 0.6,0.7,0.7")
    return values


def crop_baidu(
    out: Annotated[Path, typer.Option(help="Output folder: images/, masks/, manifest.csv, skipped.csv.")],
    images_dir: Annotated[Optional[Path], typer.Argument(help="Folder of photos.")] = None,
    masks_dir: Annotated[Optional[Path], typer.Argument(help="Folder of person masks with the photos' stems.")] = None,
    manifest: Annotated[Optional[Path], typer.Option(help="Take photos and masks from this manifest instead "
                                                          "of IMAGES_DIR and MASKS_DIR.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Processes (local) or Ray actors, each with its own MTCNN.")
                       ] = 1,
    engine: Annotated[str, typer.Option(help="'local' (process pool) or 'ray' (Ray Data actor pool).")] = ENGINES[0],
    threads: Annotated[int, typer.Option(min=1, help="Torch threads per worker.")] = 1,
    output_size: Annotated[str, typer.Option(help="Size of the written crops, WIDTHxHEIGHT (EG1800-like), or "
                                                  f"{NATIVE} (the photo's own resolution).")
                           ] = _size_text(defaults.output_size),
    preview: Annotated[Optional[Path], typer.Option(help="Write a contact sheet PNG of random crops.")] = None,
    preview_count: Annotated[int, typer.Option(min=1, help="Crops on the contact sheet.")] = 24,
    face_width_share: Annotated[float, typer.Option(help="Face width / crop width off portraits.")]
        = defaults.framing.face_width_share,
    widest_face_share: Annotated[float, typer.Option(help="Smallest face width / crop width in portraits.")]
        = defaults.framing.widest_face_share,
    portrait_face_share: Annotated[float, typer.Option(help="Face / largest 3:4 window width that makes a "
                                                           "photo a portrait already.")]
        = defaults.framing.portrait_face_share,
    face_center_height: Annotated[float, typer.Option(help="Face centre height / crop height.")]
        = defaults.framing.face_center_height,
    min_face_width: Annotated[float, typer.Option(help="Smallest face width in photo pixels.")]
        = defaults.rules.min_face_width,
    min_face_in_mask: Annotated[float, typer.Option(help="Smallest share of the face box the mask covers.")]
        = defaults.rules.min_face_in_mask,
    max_person_above_face: Annotated[float, typer.Option(help="Most face heights of person above the face.")]
        = defaults.rules.max_person_above_face,
    max_face_overlap: Annotated[float, typer.Option(help="Largest share of a face inside a larger face "
                                                         "(above: a duplicate detection).")]
        = defaults.rules.max_face_overlap,
    min_coverage: Annotated[float, typer.Option(help="Smallest person share of a crop.")]
        = defaults.rules.min_coverage,
    max_coverage: Annotated[float, typer.Option(help="Largest person share of a crop.")]
        = defaults.rules.max_coverage,
    detector_max_side: Annotated[int, typer.Option(help="Long side of the copy faces are searched on (0 = full).")]
        = defaults.detector.max_side,
    thresholds: Annotated[str, typer.Option(help="MTCNN stage thresholds P,R,O.")]
        = ",".join(map(str, defaults.detector.thresholds)),
    detector_min_face_size: Annotated[int, typer.Option(help="Smallest face MTCNN searches, in searched pixels.")]
        = defaults.detector.min_face_size,
    unknown_value: Annotated[Optional[int], typer.Option(help="Mask value meaning unknown.")]
        = defaults.unknown_value,
) -> None:
    """Crop EG1800-like 3:4 portraits around detected faces from full-body photos and their masks."""
    if (manifest is None) == (images_dir is None or masks_dir is None):
        raise UserError("give either IMAGES_DIR and MASKS_DIR or --manifest")
    settings = CropSettings(
        framing=FramingRule(face_width_share=face_width_share, widest_face_share=widest_face_share,
                            portrait_face_share=portrait_face_share, face_center_height=face_center_height),
        rules=SelectionRules(min_face_width=min_face_width, min_face_in_mask=min_face_in_mask,
                             max_person_above_face=max_person_above_face,
                             max_face_overlap=max_face_overlap, min_coverage=min_coverage,
                             max_coverage=max_coverage),
        detector=DetectorSettings(max_side=detector_max_side, thresholds=_thresholds(thresholds),
                                  min_face_size=detector_min_face_size),
        output_size=_size(output_size), unknown_value=unknown_value)
    source = mf.load(manifest) if manifest is not None else None
    summary = run(images_dir, masks_dir, out, settings, workers=workers, threads=threads, manifest=source,
                  engine=engine)
    crops = mf.read_manifest(summary.manifest)
    photos = crops.frame["origin_stem"].nunique() if len(crops) else 0
    Console(stderr=True).print(f"crop-baidu: {summary.rows} crops from {photos} of {summary.planned} photos")
    if preview is not None and len(crops):
        shown = write_contact_sheet(crops, preview, count=preview_count)
        Console(stderr=True).print(f"contact sheet of {shown} crops: {preview}")


def register(app: typer.Typer) -> None:
    """Add this stage's commands to ``app``."""
    app.command("crop-baidu")(crop_baidu)
