"""Manifests out to the annotation tools' formats, and the tools' files back in as manifests.

:data:`EXPORT_FORMATS` and :data:`READERS` name every format; :func:`write_format` exports a manifest's masked rows,
:func:`import_annotations` turns a tool's file and its photos folder into a manifest with one mask PNG per
photo. Both are what ``pipeline manifest convert`` / ``import-annotations`` and ``pipeline export --format`` call.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from pathlib import Path

from PIL import Image

from pipeline.formats.coco import read_coco, write_coco
from pipeline.formats.cvat import read_cvat, write_cvat
from pipeline.formats.fiftyone import write_fiftyone
from pipeline.formats.items import ExportItem, FormatError, ImportedMask, export_items
from pipeline.formats.label_studio import read_label_studio, write_label_studio
from sinet_plus import manifest as mf
from sinet_plus.imageio import PHOTO_SUFFIXES, write_mask

EXPORT_FORMATS = ("coco", "coco-instances", "cvat", "label-studio", "fiftyone")
"""Export formats: COCO JSON (semantic or instances layout), CVAT's Segmentation mask 1.1 zip, Label Studio
tasks JSON, and a FiftyOne segmentation folder."""


READERS: dict[str, Callable[[str | os.PathLike], list[ImportedMask]]] = {
    "coco": read_coco, "cvat": read_cvat, "label-studio": read_label_studio}
"""Import formats (``coco`` reads both COCO layouts)."""


def check_format(name: str, known: dict) -> str:
    """``name`` when it is a key of ``known``; else :class:`FormatError` listing the formats."""
    if name not in known:
        raise FormatError(f"unknown format {name!r} (use one of: {', '.join(known)})")
    return name


def write_format(manifest: mf.Manifest, format: str, out: str | os.PathLike,
                 url_prefix: str | None = None) -> list[ExportItem]:
    """Export the rows of ``manifest`` that have a mask to ``out`` in ``format``; returns what was written.

    Args:
        manifest: the rows to export.
        format: one of :data:`EXPORT_FORMATS`.
        out: the file (a folder for ``fiftyone``).
        url_prefix: Label Studio only: what precedes each photo's name in its task's image URL (``None``: its
            local-files URL below the photos' parent folder).
    """
    writers = {"coco": write_coco, "coco-instances": partial(write_coco, instances=True), "cvat": write_cvat,
               "label-studio": partial(write_label_studio, url_prefix=url_prefix), "fiftyone": write_fiftyone}
    writer = writers[check_format(format, dict.fromkeys(EXPORT_FORMATS))]
    items = export_items(manifest)
    writer(items, out)
    return items


def find_photo(images: Path, name: str) -> Path:
    """The photo called ``name`` under ``images``; a name without suffix (CVAT's) matches any photo suffix."""
    path = images / name
    if path.is_file():
        return path
    if not path.suffix:
        for suffix in PHOTO_SUFFIXES:
            if path.with_suffix(suffix).is_file():
                return path.with_suffix(suffix)
    raise FormatError(f"{path}: no such photo (the annotation file names {name!r})")


def import_annotations(path: str | os.PathLike, format: str, images: str | os.PathLike, out: str | os.PathLike,
                       masks: str | os.PathLike | None = None) -> mf.Manifest:
    """A manifest of the masks in a tool's file, their photos found under ``images``, written to ``out``.

    Each mask is written as a PNG (0 / 255 / 128) to ``masks`` (default: ``<out stem>-masks`` beside ``out``),
    at the photo's name; rows keep the manifest id the file carried (else ``<format>/<name>``), are ``accepted``
    and name who drew the mask when the file says.

    Raises:
        FormatError: an unreadable file, a photo that is missing or whose size differs from its mask.
    """
    imported = READERS[check_format(format, READERS)](path)
    images, out = Path(images), Path(out)
    masks = Path(masks) if masks else out.with_name(f"{out.stem}-masks")
    root = out.parent.absolute()
    rows = []
    for entry in imported:
        name = Path(entry.name)
        if name.is_absolute() or ".." in name.parts:
            raise FormatError(f"{path}: the photo name {entry.name!r} leaves the images folder")
        photo = find_photo(images, entry.name)
        with Image.open(photo) as opened:
            size = opened.size
        if size != (entry.mask.shape[1], entry.mask.shape[0]):
            raise FormatError(f"{path}: the mask of {entry.name} is {entry.mask.shape[1]}x{entry.mask.shape[0]} "
                              f"but {photo} is {size[0]}x{size[1]}")
        mask_file = masks / Path(entry.name).with_suffix(".png")
        write_mask(mask_file, entry.mask)
        rows.append({"id": entry.id or f"{format}/{Path(entry.name).with_suffix('').as_posix()}",
                     "image": os.path.relpath(photo.absolute(), root), "mask": os.path.relpath(mask_file, root),
                     "source": format, "split": "train", "status": "accepted",
                     "reviewer": entry.annotator or format, "width": size[0], "height": size[1]})
    if not rows:
        raise FormatError(f"{path}: no annotated photo in it")
    manifest = mf.Manifest(mf.new_rows(rows), root)
    mf.write_manifest(manifest, out)
    return manifest
