"""CVAT's "Segmentation mask 1.1": a zip CVAT uploads as annotations, written and read by datumaro.

CVAT implements this format with datumaro's ``voc_segmentation`` exporter (colour-mapped class PNGs,
``labelmap.txt``, ``ImageSets/Segmentation/default.txt``), so this module calls the same exporter and importer:
what it writes is what CVAT reads, and a zip CVAT exports reads back here. Items are named by the photo's name
without its suffix (CVAT's frame names); labels are ``background``, ``person`` (Pascal VOC's person colour) and
``unknown``. The photos travel in ``JPEGImages/`` so the zip is also a complete dataset.
"""

from __future__ import annotations

import os
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from pipeline.formats.items import PERSON, UNKNOWN, ExportItem, FormatError, ImportedMask
from sinet_plus.files import atomic_path
from sinet_plus.imageio import IGNORE, STORED_UNKNOWN, read_mask

LABEL_MAP = {"background": ((0, 0, 0), [], []), PERSON: ((192, 128, 128), [], []),
             UNKNOWN: ((128, 128, 128), [], [])}
"""Label name → (RGB colour, parts, actions), the ``labelmap.txt`` of the zip."""


def import_datumaro() -> None:
    """Import datumaro without losing the loaded pandas.

    datumaro's ``components.media`` puts a lazily loaded second copy of pandas into ``sys.modules`` even when
    pandas is loaded already; that copy's C parts are not set up (``DataFrame.to_json`` then fails), so the
    loaded module is put back. Call it before importing any ``datumaro`` module.
    """
    import pandas

    try:
        import datumaro.components.media  # noqa: F401
    finally:
        sys.modules["pandas"] = pandas


def _dataset(items: list[ExportItem]):
    import_datumaro()
    from datumaro.components.annotation import Mask
    from datumaro.components.dataset import Dataset
    from datumaro.components.dataset_base import DatasetItem
    from datumaro.components.media import Image

    labels = list(LABEL_MAP)
    entries = []
    for item in items:
        mask = read_mask(item.mask, unknown_value=STORED_UNKNOWN)
        annotations = [Mask(image=(mask == value).astype(np.uint8), label=labels.index(label))
                       for label, value in ((PERSON, 1), (UNKNOWN, IGNORE)) if (mask == value).any()]
        entries.append(DatasetItem(id=item.stem, media=Image.from_file(str(item.image)), annotations=annotations))
    return Dataset.from_iterable(entries, categories=labels)


def write_cvat(items: list[ExportItem], out: str | os.PathLike) -> None:
    """Write ``items`` as a "Segmentation mask 1.1" zip, atomically."""
    with tempfile.TemporaryDirectory() as folder:
        _dataset(items).export(folder, "voc_segmentation", save_media=True, apply_colormap=True,
                               label_map=LABEL_MAP)
        with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(Path(folder).rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(folder).as_posix())


def read_cvat(path: str | os.PathLike) -> list[ImportedMask]:
    """Every item of a "Segmentation mask 1.1" zip (or its unpacked folder), decoded by datumaro."""
    import_datumaro()
    from datumaro.components.annotation import AnnotationType
    from datumaro.components.dataset import Dataset
    from datumaro.components.errors import DatumaroError

    path = Path(path)
    if not path.exists():
        raise FormatError(f"{path}: file not found")
    with tempfile.TemporaryDirectory() as folder:
        try:
            if path.is_dir():
                folder = str(path)
            else:
                with zipfile.ZipFile(path) as archive:
                    archive.extractall(folder)
            dataset = Dataset.import_from(folder, "voc_segmentation")
            names = [c.name for c in dataset.categories()[AnnotationType.label].items]
            found = []
            for item in dataset:
                masks = [a for a in item.annotations if a.type == AnnotationType.mask]
                if item.media is not None and item.media.has_size:
                    shape = item.media.size
                elif masks:
                    shape = masks[0].image.shape
                else:
                    raise FormatError(f"{path}: item {item.id} has neither a photo nor a mask")
                mask = np.zeros(shape, np.uint8)
                for label, value in ((UNKNOWN, IGNORE), (PERSON, 1)):
                    for annotation in masks:
                        if names[annotation.label] == label:
                            mask[annotation.image > 0] = value
                found.append(ImportedMask(item.id, mask))
        except (zipfile.BadZipFile, DatumaroError, OSError) as error:
            raise FormatError(f"{path}: not a readable Segmentation mask 1.1 export "
                              f"({type(error).__name__}: {error})") from None
    return found
