"""``pipeline pseudo-label``: a mask, quality signals and a review priority for every photo.

The work splits in two per-item halves that every engine shares:

* :func:`load_photo` (loader side: DataLoader workers or Ray loading actors): read the photo, find the
  largest face with MTCNN, resize for the model. A photo that cannot be read becomes a recorded skip.
* :class:`Labeler` (model side: the main process or a Ray model actor): one call per batch predicts, computes
  the signals, writes the mask PNGs atomically and returns one :class:`~pipeline.stage.Outcome` per photo.

:func:`pseudo_label` plans the items and hands an engine to :func:`pipeline.stage.run_stage`, which journals
outcomes, resumes, and writes ``manifest.csv`` and ``skipped.csv``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pipeline import manifest as mf
from pipeline.imageio import ImageReadError, list_photos, read_image, write_mask, write_png
from pipeline.processes import DiesWithParent
from pipeline.stage import ERROR_REASON, Outcome, StageSummary, claim_folder, run_stage
from pipeline.teacher.checkpoint import load_teacher
from pipeline.teacher.inference import Prediction, Predictor, resize_for_model
from pipeline.teacher.signals import merged, quality_signals
from pipeline.torch_utils import pick_device

CARRIED = ("origin", "origin_stem", "crop_x0", "crop_y0", "crop_x1", "crop_y1", "face_x0", "face_y0", "face_x1",
           "face_y1", "face_prob", "crop_shift_x", "crop_shift_y", "crop_clipped", "person_coverage")
"""Provenance columns copied from an input manifest's rows (paths rebased)."""

MIN_SIDE = 8
"""Photos with a side below this many pixels are skipped as ``too_small``."""

FACE_SEARCH_SIDE = 320
"""MTCNN searches a copy with this long side: ``face_in_mask`` only needs the largest face, which it finds as at
640 px (264 of 264 EG1800 val and raw photos) in 0.46x the time (docs/teacher.md)."""


@dataclass
class LabelOptions:
    """How to pseudo-label.

    Args:
        long_side: photos are resized so their long side is this (sides rounded to multiples of 32).
        mirror: also predict the mirror image: averaged in (flip test-time augmentation) and compared
            (``flip_agreement``); costs a second forward pass.
        faces: run MTCNN for ``face_in_mask``.
        soft: also write the probability map as a PNG (0..255).
        batch_size: photos per model call.
        workers: loader processes (local) or loading actors (ray).
        device: ``auto``, ``cpu``, ``cuda``...
    """

    long_side: int = 512
    mirror: bool = True
    faces: bool = True
    soft: bool = False
    batch_size: int = 8
    workers: int = 2
    device: str = "auto"


@dataclass
class PhotoItem:
    """One photo to label: where it is, its output id and provenance cells (paths absolute)."""

    path: Path
    id: str
    carried: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadedPhoto:
    """A photo ready for the model, or the reason it is not."""

    key: str
    item: PhotoItem
    resized: np.ndarray | None = None
    size: tuple[int, int] = (0, 0)
    face: tuple[float, float, float, float] | None = None
    skip: tuple[str, str] | None = None


def plan_items(source: str | os.PathLike) -> list[tuple[str, PhotoItem]]:
    """``(key, item)`` pairs for a folder of photos (key = file stem) or a manifest (key = row id).

    Raises:
        FileNotFoundError: ``source`` does not exist.
        ManifestError: an invalid manifest.
    """
    source = Path(source)
    if source.is_dir():
        return [(photo.stem, PhotoItem(photo.absolute(), f"pseudo/{photo.stem}",
                                       {"origin": photo.absolute(), "origin_stem": photo.stem}))
                for photo in list_photos(source)]
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such folder or manifest")
    manifest = mf.load(source)
    items = []
    for _, row in manifest.frame.iterrows():
        carried = {c: row[c] for c in CARRIED if c in row.index and not _empty(row[c])}
        if "origin" in carried:
            carried["origin"] = manifest.path(carried["origin"])
        image = manifest.path(row["image"])
        carried.setdefault("origin_stem", image.stem)
        items.append((str(row["id"]), PhotoItem(image, f"pseudo/{row['id']}", carried)))
    return items


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


_detector = None


def _face_detector():
    """MTCNN, loaded once per process (its weights ship with facenet-pytorch)."""
    global _detector
    if _detector is None:
        from pipeline.crop.faces import DetectorSettings, FaceDetector

        _detector = FaceDetector(DetectorSettings(max_side=FACE_SEARCH_SIDE))
    return _detector


def load_photo(key: str, item: PhotoItem, long_side: int, faces: bool) -> LoadedPhoto:
    """Read one photo, find its largest face and resize it for the model; failures become a skip reason."""
    try:
        photo = read_image(item.path)
        height, width = photo.shape[:2]
        if min(height, width) < MIN_SIDE:
            return LoadedPhoto(key, item, skip=("too_small", f"{item.path}: {width}x{height} pixels, "
                                                             f"below {MIN_SIDE} px on a side"))
        found = _face_detector().detect(photo) if faces else []
        face = (found[0].x0, found[0].y0, found[0].x1, found[0].y1) if found else None
        return LoadedPhoto(key, item, resize_for_model(photo, long_side), (height, width), face)
    except ImageReadError as error:
        return LoadedPhoto(key, item, skip=("unreadable", str(error)))
    except Exception as error:  # one bad photo must not end the run; retried by the next run
        return LoadedPhoto(key, item, skip=(ERROR_REASON, f"{item.path}: {type(error).__name__}: {error}"))


def output_name(key: str) -> str:
    """File name (no suffix) for an item's outputs: ids may contain ``/``."""
    return key.replace("/", "__")


class Labeler:
    """The model side, one call per batch: predict, score, write masks, return outcomes.

    Args:
        teacher: checkpoint path (loaded once here: in the main process or in each Ray actor).
        out_dir: the stage's output folder; masks go to ``masks/``, soft maps to ``soft/``.
        options: see :class:`LabelOptions`.
    """

    def __init__(self, teacher: str | os.PathLike, out_dir: str | os.PathLike, options: LabelOptions):
        device = pick_device(options.device)
        loaded = load_teacher(teacher, device)
        self.teacher_hash = loaded.hash
        self.predictor = Predictor(loaded.model, loaded.config, device)
        self.out_dir = Path(out_dir).resolve()
        self.options = options

    def __call__(self, batch: Sequence[LoadedPhoto]) -> list[Outcome]:
        skipped, predicted = self.predict(batch)
        return skipped + self.finish_all(predicted)

    def predict(self, batch: Sequence[LoadedPhoto]) -> tuple[list[Outcome], list[tuple[LoadedPhoto, Prediction]]]:
        """The model half: skips for photos the loader refused, predictions for the others."""
        ready = [photo for photo in batch if photo.skip is None]
        skipped = [Outcome.skipped(p.key, *p.skip) for p in batch if p.skip is not None]
        if not ready:
            return skipped, []
        predictions = self.predictor.predict([p.resized for p in ready], [p.size for p in ready], self.options.mirror)
        return skipped, list(zip(ready, predictions))

    def finish_all(self, predicted: Sequence[tuple[LoadedPhoto, Prediction]]) -> list[Outcome]:
        """The CPU half: :meth:`finish` each prediction, an error becoming that photo's recorded skip."""
        outcomes = []
        for photo, prediction in predicted:
            try:
                outcomes.append(self.finish(photo, prediction.prob, prediction.mirrored))
            except Exception as error:  # one bad item must not end the run
                outcomes.append(Outcome.skipped(photo.key, ERROR_REASON, f"{type(error).__name__}: {error}"))
        return outcomes

    def finish(self, photo: LoadedPhoto, prob: np.ndarray, mirrored: np.ndarray | None) -> Outcome:
        """Signals, files and the manifest row of one predicted photo."""
        signals = quality_signals(prob, mirrored, photo.face)
        prob = merged(prob, mirrored)  # flip test-time augmentation: the mask comes from both passes
        name = output_name(photo.key)
        mask_path = self.out_dir / "masks" / f"{name}.png"
        write_mask(mask_path, (prob > 0.5).astype(np.uint8))
        row = {"id": photo.item.id, "image": self.relative(photo.item.path), "mask": self.relative(mask_path),
               "source": "pseudo", "split": "unlabeled", "status": "pending", **photo.item.carried,
               "width": photo.size[1], "height": photo.size[0], "teacher": self.teacher_hash, **signals}
        if "origin" in row:
            row["origin"] = self.relative(Path(row["origin"]))
        if self.options.soft:
            soft_path = self.out_dir / "soft" / f"{name}.png"
            write_png(soft_path, np.round(prob * 255).astype(np.uint8))
            row["soft_mask"] = self.relative(soft_path)
        return Outcome(photo.key, rows=[row])

    def relative(self, path: Path) -> str:
        return os.path.relpath(path, self.out_dir)


class _PhotoDataset(Dataset):
    def __init__(self, items: Sequence[tuple[str, PhotoItem]], options: LabelOptions):
        self.items, self.options = list(items), options

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> LoadedPhoto:
        key, item = self.items[index]
        return load_photo(key, item, self.options.long_side, self.options.faces)


def _as_list(batch: list[LoadedPhoto]) -> list[LoadedPhoto]:
    return batch


def _single_thread_worker(_: int) -> None:
    torch.set_num_threads(1)  # loaders run MTCNN; several workers with many threads each would fight


def run_local(labeler: Labeler, items: Sequence[tuple[str, PhotoItem]], options: LabelOptions) -> Iterator[Outcome]:
    """The local engine: ``options.workers`` DataLoader processes load photos; the main thread runs the model
    on batch k+1 while a second thread computes signals and writes the files of batch k (cv2, NumPy, zlib and
    torch release the GIL), so the model rarely waits."""
    loader = DataLoader(_PhotoDataset(items, options), batch_size=options.batch_size, num_workers=options.workers,
                        collate_fn=_as_list, worker_init_fn=DiesWithParent(_single_thread_worker),
                        prefetch_factor=4 if options.workers else None)
    with ThreadPoolExecutor(max_workers=1) as pool:
        finishing: Future | None = None
        for batch in loader:
            skipped, predicted = labeler.predict(batch)
            yield from skipped
            if finishing is not None:
                yield from finishing.result()
            finishing = pool.submit(labeler.finish_all, predicted)
        if finishing is not None:
            yield from finishing.result()


def pseudo_label(source: str | os.PathLike, teacher: str | os.PathLike, out_dir: str | os.PathLike,
                 options: LabelOptions = LabelOptions(), engine: str = "local", actors: int = 1,
                 gpus_per_actor: float | None = None) -> StageSummary:
    """Pseudo-label a folder or manifest of photos into ``out_dir`` (resumable).

    Args:
        source: folder of photos or a manifest.
        teacher: teacher checkpoint.
        out_dir: output folder (``masks/``, ``soft/``, ``manifest.csv``, ``skipped.csv``, journal).
        options: see :class:`LabelOptions`.
        engine: ``local`` or ``ray``.
        actors: Ray model actors.
        gpus_per_actor: Ray GPUs per model actor (None: one where the cluster has GPUs).

    Raises:
        CheckpointError: the teacher cannot be loaded (checked before any photo is read).
        ValueError: ``out_dir`` holds output of another teacher or other options (resuming would mix them).
    """
    items = plan_items(source)
    if engine == "ray":
        from pipeline.teacher.ray_engine import run_ray

        teacher_hash = load_teacher(teacher).hash  # fail here, clearly, rather than inside an actor

        def execute(pending: list[tuple[str, PhotoItem]]) -> Iterator[Outcome]:
            return run_ray(teacher, out_dir, pending, options, actors=actors, gpus_per_actor=gpus_per_actor)
    else:
        labeler = Labeler(teacher, out_dir, options)
        teacher_hash = labeler.teacher_hash

        def execute(pending: list[tuple[str, PhotoItem]]) -> Iterator[Outcome]:
            return run_local(labeler, pending, options)

    claim_folder(out_dir, {"teacher": teacher_hash, "long_side": options.long_side, "mirror": options.mirror,
                           "faces": options.faces, "soft": options.soft})
    return run_stage(f"pseudo-label ({engine})", items, execute, out_dir)
