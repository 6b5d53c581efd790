"""The manifest: the one table that every stage reads and writes.

A manifest is a CSV or Parquet file (chosen by extension) with one row per sample. ``image`` and ``mask``
paths are relative to the manifest's own folder, so a manifest and its files move together; ``..`` is
allowed so a manifest can point at a dataset that lives elsewhere, and :func:`validate` can require every
path to stay under a chosen root. ``COLUMNS`` documents every column a stage may write; ``manifests/README.md``
repeats it for people. Ids are namespaced by source (``eg1800/00001``, ``baidu_crop/0007-f0``), so manifests
from different stages concatenate without clashes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sinet_plus.errors import UserError
from sinet_plus.files import atomic_path

REQUIRED = ("id", "image", "mask", "source", "split", "status")
"""Columns every manifest has."""

STATUSES = ("pending", "accepted", "rejected")
"""Review states: generated masks start ``pending``; human-made masks are ``accepted``."""

COLUMNS: dict[str, str] = {
    # identity and files
    "id": "stable unique sample id, namespaced by source (e.g. `eg1800/00001`)",
    "image": "photo path, relative to the manifest's folder",
    "mask": "mask PNG path relative to the manifest's folder (0 background, 255 person, 128 unknown); "
            "empty when the photo has no mask yet",
    "source": "where the sample comes from: `eg1800`, `folder`, `baidu_crop`, `pseudo`, ...",
    "split": "`train`, `val`, `test`, `holdout` (kept out of training to select models on) or `unlabeled`",
    # provenance
    "origin": "path of the photo the sample was made from, relative to the manifest's folder",
    "origin_stem": "file stem of the origin photo",
    "crop_x0": "crop box left in origin-photo pixels (crop boxes are end-exclusive, before any resize)",
    "crop_y0": "crop box top in origin-photo pixels",
    "crop_x1": "crop box right (exclusive) in origin-photo pixels",
    "crop_y1": "crop box bottom (exclusive) in origin-photo pixels",
    "face_x0": "detected face box left in origin-photo pixels",
    "face_y0": "detected face box top in origin-photo pixels",
    "face_x1": "detected face box right in origin-photo pixels",
    "face_y1": "detected face box bottom in origin-photo pixels",
    "face_prob": "face detector probability of that face",
    "crop_shift_x": "pixels the framed box was shifted horizontally to stay inside the photo",
    "crop_shift_y": "pixels the framed box was shifted vertically to stay inside the photo",
    "crop_clipped": "true when the framed box did not fit the photo and was shrunk",
    "person_coverage": "share of the crop's pixels that are person in the mask",
    "width": "width of the written photo in pixels",
    "height": "height of the written photo in pixels",
    "teacher": "short hash of the teacher file (checkpoint or ensemble) that predicted or checked the mask",
    "teacher_mask": "path of the teacher's mask for a human-made mask it checked",
    "soft_mask": "path of the soft-probability PNG (0..255 = P(person)), when written",
    # quality signals of a predicted mask
    "mean_confidence": "mean over pixels of max(p, 1 - p) of the teacher's probability",
    "uncertain_share": "share of pixels with p between 0.2 and 0.8",
    "foreground_share": "share of pixels predicted person",
    "components": "number of connected person regions in the mask",
    "boundary_sharpness": "mean confidence on the mask's boundary band (low = blurry edges)",
    "flip_agreement": "IoU between the predictions for the photo and its mirror image",
    "face_in_mask": "share of the largest detected face box covered by the mask (empty if no face)",
    "expected_iou": "soft IoU of the mask with the teacher's probabilities (its self-estimated IoU)",
    "member_agreement": "mean pairwise IoU of the masks of the teacher ensemble's members (empty for one model)",
    "teacher_agreement": "IoU between a human-made mask and the teacher's mask of the same photo",
    "priority": "predicted-failure score in [0, 1]: higher = more likely wrong, reviewed first "
                "(for a checked human mask: 1 - `teacher_agreement`)",
    "auto_accept": "`true` when the teacher's calibrated rule accepts the mask without review (its own mask: "
                   "`priority` at most the rule's threshold; a human mask: `teacher_agreement` high enough)",
    # review
    "status": "`pending`, `accepted` or `rejected`",
    "reviewer": "who decided (`auto` for unattended --auto-accept runs, `dataset` for human-made masks)",
    "decided_at": "ISO-8601 UTC time of the decision",
    "reason": "reject reason code, or why a row was auto-accepted",
    "fixed_from": "id of the rejected sample whose mask a person fixed in an annotation tool to make this one",
    "fixed_with": "the tool the mask was fixed in (`cvat`, `label-studio`, `coco`)",
    "fixed_by": "who fixed the mask (the tool's user, or `--annotator`)",
}


PATH_COLUMNS = ("image", "mask", "origin", "soft_mask", "teacher_mask")
"""Columns holding paths relative to the manifest's folder (rebased when a manifest is written elsewhere)."""


class ManifestError(UserError):
    """A manifest that cannot be read or is not valid; the message lists every problem."""


@dataclass
class Manifest:
    """A manifest table together with the folder its relative paths start from."""

    frame: pd.DataFrame
    root: Path

    def path(self, value: str) -> Path:
        """Resolve one relative path stored in the table."""
        return (self.root / value).resolve() if value else Path()

    def paths(self, column: str) -> list[Path | None]:
        """Resolve a path column (``None`` where the cell is empty)."""
        return [self.path(v) if isinstance(v, str) and v else None for v in self.frame[column]]

    def __len__(self) -> int:
        return len(self.frame)


TEXT_COLUMNS = ("id", "origin_stem", *PATH_COLUMNS)
"""Columns that are always text: an id or a stem like ``NA``, ``null`` or ``00012`` is kept as written."""


def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """Give empty text cells one spelling ('') and text columns the string type."""
    frame = frame.copy()
    for column in TEXT_COLUMNS:
        if column in frame.columns:
            frame[column] = frame[column].fillna("").astype(str)
    return frame


MISSING_SPELLINGS = ("", "NA", "N/A", "n/a", "NaN", "nan", "-nan", "null", "NULL", "None", "<NA>", "#N/A")
"""Cells read as missing in the other columns (pandas' usual spellings)."""


def _read_csv(path: Path) -> pd.DataFrame:
    """A CSV manifest where only an empty text cell is missing: pandas would read an id ``NA`` or ``null`` as
    missing, and a stem ``00012`` as the number 12."""
    columns = pd.read_csv(path, nrows=0).columns
    return pd.read_csv(path, dtype={c: str for c in TEXT_COLUMNS if c in columns}, keep_default_na=False,
                       na_values={c: [""] if c in TEXT_COLUMNS else list(MISSING_SPELLINGS) for c in columns})


def read_manifest(path: str | os.PathLike) -> Manifest:
    """Read a CSV or Parquet manifest; its paths resolve from the file's folder."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            frame = _read_csv(path)
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            raise ManifestError(f"{path}: unknown manifest format {suffix!r} (use .csv or .parquet)")
    except ManifestError:
        raise
    except Exception as error:  # pandas raises many types for broken files
        raise ManifestError(f"{path}: cannot read manifest ({error})") from None
    return Manifest(_normalise(frame), path.parent.resolve())


def _rebase(frame: pd.DataFrame, old_root: Path, new_root: Path) -> pd.DataFrame:
    """Rewrite relative path columns so they resolve from ``new_root`` to the same files."""
    if old_root.resolve() == new_root.resolve():
        return frame
    frame = frame.copy()
    for column in PATH_COLUMNS:
        if column in frame.columns:
            frame[column] = [os.path.relpath(old_root / v, new_root) if isinstance(v, str) and v else ""
                             for v in frame[column]]
    return frame


def write_manifest(manifest: Manifest | pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write atomically as CSV or Parquet by extension, rebasing paths to the new folder.

    A bare DataFrame is taken to hold paths relative to ``path``'s folder already.
    """
    path = Path(path)
    root = path.parent.resolve() if path.parent.exists() else path.parent.absolute()
    frame = manifest.frame if isinstance(manifest, Manifest) else manifest
    if isinstance(manifest, Manifest):
        frame = _rebase(frame, manifest.root, root)
    frame = order_columns(_normalise(frame))
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise ManifestError(f"{path}: unknown manifest format {suffix!r} (use .csv or .parquet)")
    with atomic_path(path) as tmp:
        if suffix == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
    return path


def order_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Documented columns first, in ``COLUMNS`` order, then any extra columns as they came."""
    known = [c for c in COLUMNS if c in frame.columns]
    extra = [c for c in frame.columns if c not in COLUMNS]
    return frame[known + extra]


def new_rows(rows: Sequence[dict]) -> pd.DataFrame:
    """Build a manifest table from row dicts, filling review columns a stage did not set."""
    frame = pd.DataFrame(list(rows))
    for column in REQUIRED:
        if column not in frame.columns:
            frame[column] = "pending" if column == "status" else ""
    return order_columns(_normalise(frame))


def validate(manifest: Manifest, check_files: bool = False, root: str | os.PathLike | None = None) -> list[str]:
    """Every problem with the manifest, one message each; an empty list means it is valid.

    Checks required columns, empty and duplicate ids, status values, absolute paths, paths that escape
    ``root`` (when given) and, with ``check_files``, files that do not exist.
    """
    frame = manifest.frame
    problems: list[str] = []
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        problems.append(f"missing columns: {', '.join(missing)}")
    if "id" in frame.columns:
        empty = frame["id"] == ""
        if empty.any():
            problems.append(f"{int(empty.sum())} rows have no id (rows {_rows(frame.index[empty])})")
        duplicated = frame["id"][frame["id"].duplicated(keep=False) & ~empty]
        if len(duplicated):
            problems.append(f"duplicate ids: {few(sorted(set(duplicated)))}")
    if "status" in frame.columns:
        bad = frame[~frame["status"].isin(STATUSES)]
        if len(bad):
            problems.append(f"status must be one of {', '.join(STATUSES)}; "
                            f"found {few(sorted(set(map(str, bad['status']))))}")
    if "image" in frame.columns:
        no_image = frame["image"] == ""
        if no_image.any():
            problems.append(f"{int(no_image.sum())} rows have no image (rows {_rows(frame.index[no_image])})")
    root_path = Path(root).resolve() if root is not None else None
    for column in ("image", "mask"):
        if column not in frame.columns:
            continue
        absolute, escaping, absent, unusable = [], [], [], []
        for sample_id, value in zip(frame.get("id", frame.index), frame[column]):
            if not value:
                continue
            problem = path_problem(value)
            if problem:
                unusable.append(f"{sample_id} ({problem})")
                continue
            if os.path.isabs(value):
                absolute.append(f"{sample_id} ({value})")
                continue
            resolved = manifest.path(value)
            if root_path is not None and not resolved.is_relative_to(root_path):
                escaping.append(f"{sample_id} ({value})")
            elif check_files and not _is_file(resolved):
                absent.append(f"{sample_id} ({value})")
        if unusable:
            problems.append(f"{column}: paths no file system accepts: {few(unusable)}")
        if absolute:
            problems.append(f"{column}: absolute paths (must be relative to the manifest's folder): "
                            f"{few(absolute)}")
        if escaping:
            problems.append(f"{column}: paths escape the root {root_path}: {few(escaping)}")
        if absent:
            problems.append(f"{column}: {len(absent)} files not found: {few(absent)}")
    return problems


NAME_MAX = 255
"""Longest file or folder name most file systems accept, in bytes (ext4, APFS, NTFS in characters)."""

PATH_MAX = 4096
"""Longest path Linux accepts, in bytes."""


def _is_file(path: Path) -> bool:
    """``path.is_file()``, False also where the system refuses to look (no permission, a loop of links)."""
    try:
        return path.is_file()
    except OSError:
        return False


def path_problem(value: str) -> str | None:
    """Why a path cell cannot name a file (a NUL byte, a name or path too long), or None."""
    if "\x00" in value:
        return f"a NUL byte at position {value.index(chr(0))}"
    encoded = os.fsencode(value)
    if len(encoded) > PATH_MAX:
        return f"{len(encoded)} bytes long, over the {PATH_MAX}-byte limit"
    longest = max(value.split("/"), key=lambda part: len(os.fsencode(part)))
    if len(os.fsencode(longest)) > NAME_MAX:
        return f"a {len(os.fsencode(longest))}-byte name {longest[:24]!r}..., over the {NAME_MAX}-byte limit"
    return None


def few(items: Sequence, limit: int = 5) -> str:
    """The first ``limit`` of ``items`` for a message, and how many more there are."""
    shown = ", ".join(map(str, items[:limit]))
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _rows(index: Iterable) -> str:
    return few([str(i + 2) for i in index])  # +2: header line and 1-based numbering in the CSV


def require_valid(manifest: Manifest, source: str | os.PathLike, check_files: bool = False) -> Manifest:
    """Raise :class:`ManifestError` listing every problem, or return the manifest unchanged."""
    problems = validate(manifest, check_files=check_files)
    if problems:
        raise ManifestError(f"{source}: invalid manifest:\n  - " + "\n  - ".join(problems))
    return manifest


def load(path: str | os.PathLike, check_files: bool = False) -> Manifest:
    """Read a manifest and insist that it is valid: what every stage uses to take its input."""
    return require_valid(read_manifest(path), path, check_files=check_files)


def concat(manifests: Sequence[Manifest], root: str | os.PathLike, prefix_ids: bool = False,
           names: Sequence[str] | None = None) -> Manifest:
    """Stack manifests into one whose paths resolve from ``root``.

    Ids must stay unique: a clash raises :class:`ManifestError` naming the ids, unless ``prefix_ids``, which
    prefixes every id with its manifest's name (``names``, e.g. the file stems).
    """
    root = Path(root).resolve()
    frames = []
    for position, manifest in enumerate(manifests):
        frame = _rebase(manifest.frame, manifest.root, root)
        if prefix_ids:
            name = names[position] if names else f"m{position}"
            frame = frame.assign(id=[f"{name}:{i}" for i in frame["id"]])
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True) if frames else new_rows([])
    clashes = sorted(set(frame["id"][frame["id"].duplicated()]))
    if clashes:
        raise ManifestError(f"id clash between manifests: {few(clashes)} "
                            "(use --prefix-ids to namespace ids by manifest)")
    return Manifest(order_columns(frame), root)


def stats(manifest: Manifest) -> dict[str, dict[str, int]]:
    """Counts of rows by source, split and status, and of rows with and without a mask."""
    frame = manifest.frame
    result = {c: {str(k): int(v) for k, v in frame[c].value_counts().sort_index().items()}
              for c in ("source", "split", "status") if c in frame.columns}
    if "mask" in frame.columns:
        result["mask"] = {"present": int((frame["mask"] != "").sum()), "absent": int((frame["mask"] == "").sum())}
    return result


def hold_out(manifest: Manifest, count: int, seed: int = 0, source_split: str = "train",
             split: str = "holdout") -> Manifest:
    """Move ``count`` rows of ``source_split``, drawn at random, to ``split``: photos kept out of training to
    select models and calibrate rules on, so that the reported ``val`` split is never tuned on.

    The draw depends only on the ids (sorted) and ``seed``, so the same dataset always gives the same holdout.

    Args:
        manifest: the rows.
        count: rows to move (at most all rows of ``source_split``).
        seed: seed of the draw.
        source_split: split the rows are drawn from.
        split: split they move to.
    """
    frame = manifest.frame.copy()
    ids = np.sort(frame.loc[frame["split"] == source_split, "id"].to_numpy(dtype=str))
    if count > len(ids):
        raise ManifestError(f"cannot hold out {count} rows: split {source_split!r} has {len(ids)}")
    chosen = set(np.random.default_rng(seed).choice(ids, count, replace=False)) if count else set()
    frame.loc[frame["id"].isin(chosen), "split"] = split
    return Manifest(frame, manifest.root)


def select(manifest: Manifest, split: str | None = None, status: Iterable[str] | None = None,
           with_mask: bool = False) -> Manifest:
    """Rows of one split and/or review status (and only those that have a mask, when asked)."""
    keep = pd.Series(True, index=manifest.frame.index)
    if split is not None:
        keep &= manifest.frame["split"] == split
    if status is not None:
        keep &= manifest.frame["status"].isin(list(status))
    if with_mask:
        keep &= manifest.frame["mask"] != ""
    return Manifest(manifest.frame[keep].reset_index(drop=True), manifest.root)
