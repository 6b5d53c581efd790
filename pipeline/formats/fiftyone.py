"""A folder FiftyOne loads as a segmentation dataset (its ``ImageSegmentationDirectory`` type).

The layout is FiftyOne's: ``data/`` holds the photos and ``labels/`` one mask PNG per photo with the same name
(0 background, 255 person, 128 unknown: the project's own PNGs, so FiftyOne's mask targets name the values).
Writing needs no FiftyOne (it is large and fetches MongoDB when installed); ``README.md`` in the folder shows
the three lines that load it.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.formats.items import PERSON, UNKNOWN, ExportItem
from sinet_plus.files import write_bytes_atomic, write_text_atomic
from sinet_plus.imageio import STORED_UNKNOWN, read_mask, write_mask

MASK_TARGETS = {255: PERSON, STORED_UNKNOWN: UNKNOWN}
"""Mask value → label, FiftyOne's ``mask_targets`` for the ``labels/`` PNGs."""

LOADING = """# Load this folder in FiftyOne

    import fiftyone as fo
    dataset = fo.Dataset.from_dir("{folder}", fo.types.ImageSegmentationDirectory, label_field="ground_truth")
    dataset.default_mask_targets = {targets}
"""


def write_fiftyone(items: list[ExportItem], out: str | os.PathLike) -> None:
    """Copy the photos to ``out/data/`` and write their masks to ``out/labels/``, each file atomically."""
    out = Path(out)
    for item in items:
        write_bytes_atomic(out / "data" / item.name, item.image.read_bytes())
        write_mask(out / "labels" / f"{item.stem}.png", read_mask(item.mask, unknown_value=STORED_UNKNOWN))
    write_text_atomic(out / "README.md", LOADING.format(folder=out.resolve(), targets=MASK_TARGETS))
