"""What every annotation format writes and reads: photos with their masks, named the way the tools name them.

An export takes :class:`ExportItem` s (a manifest id, the photo, its mask, the photo's name inside the export)
and an import gives back :class:`ImportedMask` s (the name the tool kept, the id when the format carries it, the
mask and who drew it). Masks are the project's ``0 / 1 / IGNORE`` arrays (:mod:`sinet_plus.imageio`) on both sides;
each format maps them to ``person`` and ``unknown`` (the stored 128) its own way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sinet_plus import manifest as mf
from sinet_plus.errors import UserError

PERSON = "person"
"""Label of the person pixels (mask value 1, stored 255) in every format."""

UNKNOWN = "unknown"
"""Label of the unknown pixels (mask value IGNORE, stored 128) in every format."""


class FormatError(UserError):
    """An annotation file that cannot be written or read; the message names the file and the reason."""


@dataclass(frozen=True)
class ExportItem:
    """One photo and its mask to export.

    Args:
        id: the manifest id (carried in the export where the format has room for it).
        image: the photo file.
        mask: the mask PNG (0 background, 255 person, 128 unknown).
        name: the photo's path inside the export, relative to its images folder (``images/0007-f0.jpg`` →
            ``0007-f0.jpg``); the tools key annotations by it.
        row: the manifest row, for formats that keep extra fields (priority, teacher...).
    """

    id: str
    image: Path
    mask: Path
    name: str
    row: dict = field(default_factory=dict)

    @property
    def stem(self) -> str:
        """The name without its suffix: how CVAT and datumaro name an item."""
        return str(Path(self.name).with_suffix(""))


@dataclass
class ImportedMask:
    """A mask read back from a tool's file.

    Args:
        name: the photo's name as the file gives it (relative to the images folder; CVAT gives it without suffix).
        mask: ``uint8`` (H, W): 0 background, 1 person, IGNORE unknown.
        id: the manifest id when the format carried it, else ``None``.
        annotator: who drew or last changed the mask, when the file says.
    """

    name: str
    mask: np.ndarray
    id: str | None = None
    annotator: str | None = None


def common_folder(paths: list[Path]) -> Path:
    """The deepest folder holding every path (the images folder an export's names are relative to)."""
    if not paths:
        raise FormatError("nothing to export")
    return Path(os.path.commonpath([str(p.parent) for p in paths]))


def export_items(manifest: mf.Manifest) -> list[ExportItem]:
    """The rows of ``manifest`` that have a mask, named by their photo's path below the photos' common folder.

    Raises :class:`FormatError` when two rows share a photo (a tool keys annotations by photo).
    """
    frame = manifest.frame[manifest.frame["mask"] != ""]
    images = [manifest.path(v) for v in frame["image"]]
    masks = [manifest.path(v) for v in frame["mask"]]
    root = common_folder(images)
    names = [image.relative_to(root).as_posix() for image in images]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise FormatError(f"several rows share the photos {repeated[:5]}: a tool keys masks by photo")
    rows = frame.to_dict("records")
    return [ExportItem(str(row["id"]), image, mask, name, row)
            for row, image, mask, name in zip(rows, images, masks, names)]

