"""COCO JSON with RLE masks, encoded and decoded by pycocotools (the COCO API itself).

Two layouts of one schema: **semantic** (the COCO-Stuff layout: one annotation per label and photo) and
**instances** (one annotation per connected person region). ``person`` is category 1 (COCO's own id for people);
unknown pixels are an ``unknown`` annotation with ``iscrowd: 1``, COCO's mark for a region that training and
evaluation ignore. Each photo entry keeps the manifest id as ``manifest_id``. Reading decodes every annotation
with pycocotools (RLE or polygons, so files other tools wrote read too), paints ``unknown`` first and ``person``
over it, and ignores other categories.
"""

from __future__ import annotations

import contextlib
import io
import json
import os

import cv2
import numpy as np

from pipeline.formats.items import PERSON, UNKNOWN, ExportItem, FormatError, ImportedMask
from sinet_plus.files import write_text_atomic
from sinet_plus.imageio import IGNORE, STORED_UNKNOWN, read_mask

CATEGORIES = [{"id": 1, "name": PERSON, "supercategory": PERSON},
              {"id": 2, "name": UNKNOWN, "supercategory": UNKNOWN}]


def _annotation(region: np.ndarray, category: int, crowd: int) -> dict:
    from pycocotools import mask as coco_mask

    rle = coco_mask.encode(np.asfortranarray(region.astype(np.uint8)))
    return {"category_id": category, "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
            "area": float(coco_mask.area(rle)), "bbox": [float(v) for v in coco_mask.toBbox(rle)], "iscrowd": crowd}


def _person_regions(mask: np.ndarray, instances: bool) -> list[np.ndarray]:
    person = mask == 1
    if not instances:
        return [person] if person.any() else []
    count, labels = cv2.connectedComponents(person.astype(np.uint8), connectivity=8)
    return [labels == label for label in range(1, count)]


def coco_document(items: list[ExportItem], instances: bool = False) -> dict:
    """The COCO dictionary of ``items`` (see the module docstring for the layout)."""
    images, annotations = [], []
    for number, item in enumerate(items, start=1):
        mask = read_mask(item.mask, unknown_value=STORED_UNKNOWN)
        height, width = mask.shape
        images.append({"id": number, "file_name": item.name, "width": width, "height": height,
                       "manifest_id": item.id})
        regions = [(region, 1, 0) for region in _person_regions(mask, instances)]
        if (mask == IGNORE).any():
            regions.append((mask == IGNORE, 2, 1))
        for region, category, crowd in regions:
            annotations.append({"id": len(annotations) + 1, "image_id": number, **_annotation(region, category, crowd)})
    return {"info": {"description": "sinet-plus portrait masks", "version": "1.0"}, "licenses": [],
            "images": images, "annotations": annotations, "categories": CATEGORIES}


def write_coco(items: list[ExportItem], out: str | os.PathLike, instances: bool = False) -> None:
    """Write ``items`` as a COCO JSON file, atomically."""
    write_text_atomic(out, json.dumps(coco_document(items, instances)) + "\n")


def read_coco(path: str | os.PathLike) -> list[ImportedMask]:
    """Every photo of a COCO JSON file with its mask decoded by pycocotools."""
    from pycocotools.coco import COCO

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the COCO API prints its progress
            coco = COCO(str(path))
        names = {c["id"]: c["name"] for c in coco.dataset.get("categories", [])}
        found = []
        for image in coco.dataset["images"]:
            mask = np.zeros((image["height"], image["width"]), np.uint8)
            annotations = coco.imgToAnns.get(image["id"], [])
            for label, value in ((UNKNOWN, IGNORE), (PERSON, 1)):
                for annotation in annotations:
                    if names.get(annotation["category_id"]) == label:
                        mask[coco.annToMask(annotation) > 0] = value
            found.append(ImportedMask(image["file_name"], mask, image.get("manifest_id")))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise FormatError(f"{path}: not a readable COCO file ({type(error).__name__}: {error})") from None
    return found
