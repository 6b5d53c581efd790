"""The fix loop: rejected masks out to an annotation tool, the corrected masks back in as accepted items.

``pipeline export --status rejected --format cvat`` (or ``label-studio``) writes the rejected items with the
teacher's mask as the starting point of a fix (:func:`~pipeline.review.export.review_manifest`). :func:`import_fixes`
reads the tool's corrected file and adds every fixed mask as a **new** item ``fixed/<key>``, accepted by the
person who fixed it, with ``fixed_from``, ``fixed_with`` and ``fixed_by`` in its row; the rejected item and
every other decision stay as they were, so the record shows both the teacher's miss and the fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.formats.convert import READERS, check_format
from pipeline.formats.items import ImportedMask
from pipeline.review.export import verdicts
from pipeline.review.store import NewItem, Store
from sinet_plus.imageio import STORED_UNKNOWN, read_mask, write_mask

FIXED = "fixed/"
"""Key prefix of the items a fix adds (``fixed/pseudo/baidu_crop/0007-f0``)."""

PREDICTION_COLUMNS = ("teacher", "teacher_mask", "soft_mask", "mean_confidence", "uncertain_share", "foreground_share",
                      "components", "boundary_sharpness", "flip_agreement", "face_in_mask", "expected_iou",
                      "member_agreement", "teacher_agreement", "priority", "auto_accept")
"""Columns that describe the teacher's mask; a fixed mask drops them (they no longer describe it)."""


@dataclass
class FixResult:
    """What :func:`import_fixes` did: keys added, keys fixed by an earlier import, and problems with reasons."""

    added: list[str] = field(default_factory=list)
    known: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _match(entry: ImportedMask, keys: dict[str, str]) -> str | None:
    """The store key of an imported mask: by the manifest id it carried, else by its photo's name.

    ``keys`` maps each key to its photo path (relative to the data root). A name matches a photo path that ends
    with it (CVAT names drop the suffix, so they are compared without one).
    """
    if entry.id is not None:
        return entry.id if entry.id in keys else None

    def comparable(image: str) -> str:
        return image if Path(entry.name).suffix else Path(image).with_suffix("").as_posix()

    found = [key for key, image in keys.items()
             if comparable(image) == entry.name or comparable(image).endswith("/" + entry.name)]
    return found[0] if len(found) == 1 else None


def output_name(key: str) -> str:
    """File name (no suffix) of a fixed mask: keys contain ``/``."""
    return key.replace("/", "__")


def import_fixes(store: Store, path: str | os.PathLike, format: str, annotator: str | None = None,
                 masks: str | os.PathLike | None = None) -> FixResult:
    """Add the corrected masks of a tool's file as accepted items (see the module docstring).

    Args:
        store: the review store the masks were exported from.
        path: the tool's export (COCO JSON, CVAT zip, Label Studio JSON).
        format: a key of :data:`~pipeline.formats.convert.READERS`.
        annotator: who fixed the masks; required when the file does not say (CVAT, COCO), and used for
            every mask when given.
        masks: folder for the fixed mask PNGs, under the data root (default: ``fixed/`` beside the database).
    """
    entries = READERS[check_format(format, READERS)](path)
    masks = Path(masks) if masks else store.path.parent / "fixed"
    relative_masks = os.path.relpath(masks.resolve(), store.data_root.resolve())
    store.resolve(relative_masks)  # refuses a folder outside the data root
    items = store.items_frame().set_index("key")
    table = verdicts(store).set_index("key")
    rejected = set(table.index[table["status"] == "rejected"])
    keys = {key: image for key, image, gold in zip(items.index, items["image"], items["gold"])
            if not isinstance(gold, str) and not key.startswith(FIXED)}
    result = FixResult()
    for entry in entries:
        key = _match(entry, keys)
        who = annotator or entry.annotator
        problem = _problem(entry, key, who, rejected)
        if problem:
            result.problems.append(f"{path}: {problem}")
            continue
        new_key = FIXED + key
        if new_key in items.index:
            result.known.append(new_key)
            continue
        original = read_mask(store.resolve(items.at[key, "mask"]), unknown_value=STORED_UNKNOWN)
        if original.shape != entry.mask.shape:
            result.problems.append(f"{path}: {entry.name}: the fixed mask is {entry.mask.shape[1]}x"
                                   f"{entry.mask.shape[0]}, the photo {original.shape[1]}x{original.shape[0]}")
            continue
        mask_file = f"{relative_masks}/{output_name(key)}.png"
        write_mask(store.resolve(mask_file), entry.mask)
        row = {k: v for k, v in items.at[key, "row"].items() if k not in PREDICTION_COLUMNS}
        row.update(id=new_key, mask=mask_file, status="pending", fixed_from=key, fixed_with=format, fixed_by=who)
        store.add_items([NewItem(new_key, items.at[key, "image"], mask_file, float(items.at[key, "rank"]), row,
                                 manifest=f"{format} fixes {Path(path).name}")])
        store.decide(who, new_key, "accept", reason=f"fixed in {format}")
        result.added.append(new_key)
    return result


def _problem(entry: ImportedMask, key: str | None, who: str | None, rejected: set[str]) -> str | None:
    if key is None:
        return f"{entry.id or entry.name}: no item of the review store matches it (or several do)"
    if key not in rejected:
        return f"{key}: not rejected in the review store; only rejected masks are taken back as fixes"
    if not who:
        return f"{key}: the file does not say who fixed it; pass --annotator"
    return None

