"""Turn dataset folders into manifests: the EG1800 layout and generic ``images/`` + ``masks/`` pairs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from PIL import Image, UnidentifiedImageError

from sinet_plus.errors import PathError
from sinet_plus.imageio import list_photos
from sinet_plus.manifest import Manifest, hold_out, new_rows


@dataclass
class ImportResult:
    """The imported manifest and the files that could not be imported, with reasons."""

    manifest: Manifest
    problems: list[str] = field(default_factory=list)


def _header_size(path: Path) -> tuple[int, int] | None:
    """Width and height from the file header (cheap: no pixel decoding), or None if unreadable."""
    try:
        with Image.open(path) as image:
            return image.size
    except (UnidentifiedImageError, OSError):
        return None


def _pair_rows(photos: list[Path], masks_dir: Path | None, root: Path, source: str,
               splits: dict[str, str], default_split: str, require_mask: bool) -> ImportResult:
    rows, problems = [], []
    masks_by_stem = {p.stem: p for p in list_photos(masks_dir)} if masks_dir is not None else {}
    for photo in photos:
        stem = photo.stem
        size = _header_size(photo)
        if size is None:
            problems.append(f"{photo}: not a readable image")
            continue
        mask = masks_by_stem.get(stem)
        if mask is None and require_mask:
            problems.append(f"{photo}: no mask with stem {stem!r} in {masks_dir}")
            continue
        if mask is not None:
            mask_size = _header_size(mask)
            if mask_size is None:
                problems.append(f"{mask}: not a readable image")
                continue
            if mask_size != size:
                problems.append(f"{mask}: mask is {mask_size[0]}x{mask_size[1]} but the photo is {size[0]}x{size[1]}")
                continue
        split = splits.get(stem, default_split if mask is not None else "unlabeled")
        rows.append({
            "id": f"{source}/{stem}",
            "image": os.path.relpath(photo, root),
            "mask": os.path.relpath(mask, root) if mask is not None else "",
            "source": source,
            "split": split,
            "origin_stem": stem,
            "width": size[0],
            "height": size[1],
            "status": "accepted" if mask is not None else "pending",
            "reviewer": "dataset" if mask is not None else "",
        })
    return ImportResult(Manifest(new_rows(rows), root), problems)


def read_split_file(path: str | os.PathLike) -> dict[str, str]:
    """A ``stem,split`` CSV as a dict (stems keep their leading zeros)."""
    try:
        table = pd.read_csv(path, dtype=str)
    except (OSError, ValueError) as error:  # missing file, or not a CSV pandas can parse
        raise PathError(path, f"cannot read the split file ({error})") from None
    if not {"stem", "split"} <= set(table.columns):
        raise PathError(path, f"a split file needs the columns stem,split (found {', '.join(table.columns)})")
    return dict(zip(table["stem"], table["split"]))


def import_eg1800(folder: str | os.PathLike, out: str | os.PathLike, holdout: int = 0,
                  holdout_seed: int = 0) -> ImportResult:
    """EG1800 as laid out in ``folder``: ``images/*.jpg``, ``masks/*.png`` and ``split.csv``; with ``holdout``,
    that many train rows move to split ``holdout`` (:func:`~sinet_plus.manifest.hold_out`)."""
    folder = Path(folder)
    for part in ("images", "masks", "split.csv"):
        if not (folder / part).exists():
            raise PathError(folder, f"not an EG1800 folder (no {part})")
    splits = read_split_file(folder / "split.csv")
    photos = [p for p in list_photos(folder / "images") if p.stem in splits]
    root = Path(out).parent.resolve()
    result = _pair_rows(photos, folder / "masks", root, "eg1800", splits, "train", require_mask=True)
    result.manifest = hold_out(result.manifest, holdout, holdout_seed)
    return result


def import_folder(images: str | os.PathLike, masks: str | os.PathLike | None, out: str | os.PathLike,
                  source: str = "folder", split_file: str | os.PathLike | None = None,
                  default_split: str = "train") -> ImportResult:
    """Photos in ``images`` with masks of the same stem in ``masks`` (photos without one become unlabeled)."""
    splits = read_split_file(split_file) if split_file else {}
    root = Path(out).parent.resolve()
    return _pair_rows(list_photos(images), Path(masks) if masks else None, root, source, splits,
                      default_split, require_mask=False)
