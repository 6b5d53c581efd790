"""Label Studio tasks with brush pre-annotations, encoded and decoded by Label Studio's own converter.

Each task shows one photo (``data.image``: a URL prefix and the photo's name; by default Label Studio's
local-files URL of the photo below its folder's parent, the document root that Label Studio's local storage of
the photos' folder needs) and carries the mask as a **prediction**, so an annotator starts from it and paints fixes;
``data`` also keeps the manifest id and the ``priority``. Masks are brush results in Label Studio's RLE, made by
``label_studio_converter.brush.mask2rle`` and read by its ``decode_rle``; unknown pixels are a second brush label.
:func:`label_config` is the labeling interface these tasks need. Reading takes, per task, the latest annotation
that was not cancelled (tasks nobody annotated are left out) and who made it.
"""

from __future__ import annotations

import json
import math
import os
import urllib.parse
from pathlib import Path

import numpy as np

from pipeline.formats.items import PERSON, UNKNOWN, ExportItem, FormatError, ImportedMask, common_folder
from sinet_plus.files import write_text_atomic
from sinet_plus.imageio import IGNORE, STORED_UNKNOWN, read_mask

LOCAL_FILES = "/data/local-files/?d="
"""Label Studio's URL of a file served by its local storage; ``d`` is the path below the document root."""

BRUSH, IMAGE = "label", "image"
"""Names of the brush and image tags in :func:`label_config` (results refer to them)."""


def label_config() -> str:
    """The labeling interface: the photo and a brush with ``person`` and ``unknown``."""
    return (f'<View>\n  <Image name="{IMAGE}" value="${IMAGE}" zoom="true"/>\n'
            f'  <BrushLabels name="{BRUSH}" toName="{IMAGE}">\n'
            f'    <Label value="{PERSON}" background="#c08080"/>\n'
            f'    <Label value="{UNKNOWN}" background="#808080"/>\n'
            '  </BrushLabels>\n</View>\n')


def _task(item: ExportItem, url_prefix: str) -> dict:
    from label_studio_converter.brush import mask2rle

    mask = read_mask(item.mask, unknown_value=STORED_UNKNOWN)
    height, width = mask.shape
    results = [{"id": label, "type": "brushlabels", "from_name": BRUSH, "to_name": IMAGE, "origin": "prediction",
                "original_width": width, "original_height": height, "image_rotation": 0,
                "value": {"format": "rle", "rle": mask2rle((mask == value).astype(np.uint8) * 255),
                          "brushlabels": [label]}}
               for label, value in ((PERSON, 1), (UNKNOWN, IGNORE)) if (mask == value).any()]
    priority = item.row.get("priority")
    data = {IMAGE: url_prefix + item.name, "manifest_id": item.id}
    if isinstance(priority, float) and not math.isnan(priority):
        data["priority"] = priority
    return {"data": data, "predictions": [{"model_version": str(item.row.get("teacher") or "sinet-plus"),
                                           "result": results}]}


def write_label_studio(items: list[ExportItem], out: str | os.PathLike, url_prefix: str | None = None) -> None:
    """Write ``items`` as a Label Studio tasks JSON file and its labeling interface beside it (``.xml``).

    Args:
        items: what to export.
        out: the tasks file.
        url_prefix: what precedes each photo's name in its image URL; ``None``: :data:`LOCAL_FILES` and the
            photos' folder name (``/data/local-files/?d=images/``), for the photos' parent as document root.
    """
    if url_prefix is None:
        url_prefix = f"{LOCAL_FILES}{common_folder([item.image for item in items]).name}/"
    write_text_atomic(out, json.dumps([_task(item, url_prefix) for item in items]) + "\n")
    write_text_atomic(Path(out).with_suffix(".xml"), label_config())


def _name(url: str) -> str:
    """The photo's name in a task's image URL: local-files' ``d`` parameter, else the URL's last part."""
    query = urllib.parse.parse_qs(urllib.parse.urlparse(url).query)
    if "d" in query:
        return query["d"][0]
    return urllib.parse.unquote(urllib.parse.urlparse(url).path.rsplit("/", 1)[-1])


def _annotator(annotation: dict) -> str | None:
    if annotation.get("created_username"):
        return str(annotation["created_username"]).split(",")[0].strip()
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        return who.get("email") or (f"label-studio user {who['id']}" if "id" in who else None)
    return None if who is None else f"label-studio user {who}"


def _mask(results: list[dict], path: str | os.PathLike) -> np.ndarray | None:
    from label_studio_converter.brush import decode_rle

    brushes = [r for r in results if r.get("type") == "brushlabels" and r.get("value", {}).get("format") == "rle"]
    if not brushes:
        return None
    height, width = brushes[0]["original_height"], brushes[0]["original_width"]
    mask = np.zeros((height, width), np.uint8)
    for label, value in ((UNKNOWN, IGNORE), (PERSON, 1)):
        for result in brushes:
            if label in result["value"].get("brushlabels", []):
                pixels = decode_rle(result["value"]["rle"])
                if pixels.size != height * width * 4:
                    raise FormatError(f"{path}: a {label} brush holds {pixels.size // 4} pixels, not {width}x{height}")
                mask[pixels.reshape(height, width, 4)[:, :, 3] > 0] = value
    return mask


def read_label_studio(path: str | os.PathLike) -> list[ImportedMask]:
    """The latest kept annotation of every annotated task in a Label Studio JSON export."""
    try:
        with open(path, encoding="utf-8") as handle:
            tasks = json.load(handle)
        found = []
        for task in tasks:
            kept = [a for a in task.get("annotations", []) if not a.get("was_cancelled")]
            if not kept:
                continue
            latest = max(kept, key=lambda a: (str(a.get("updated_at", "")), a.get("id", 0)))
            mask = _mask(latest.get("result", []), path)
            if mask is None:
                raise FormatError(f"{path}: task {task.get('id')} has an annotation without a brush mask")
            data = task["data"]
            found.append(ImportedMask(_name(data[IMAGE]), mask, data.get("manifest_id"), _annotator(latest)))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise FormatError(f"{path}: not a readable Label Studio export ({type(error).__name__}: {error})") from None
    return found
