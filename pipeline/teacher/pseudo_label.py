"""``pipeline pseudo-label``: a mask, quality signals and a review priority for every photo.

The work splits in two per-item halves that every engine shares:

* :func:`load_photo` (loader side: DataLoader workers or Ray loading actors): read the photo, find the
  largest face with MTCNN, shrink very large photos to a working size. A photo that cannot be read becomes a
  recorded skip.
* :class:`Labeler` (model side: the main process or a Ray model actor): one call per batch predicts with the
  teacher (any checkpoint :func:`~pipeline.teacher.ensemble.load_any_teacher` reads), computes the signals and
  the teacher's calibrated ``auto_accept``, writes the mask PNGs atomically and returns one
  :class:`~sinet_plus.stage.Outcome` per photo.

A row of an input manifest that already has a mask (crop-baidu's crops of human-made masks) is **checked**
rather than relabelled: it keeps its id, source and mask; the teacher's mask goes to ``teacher_mask``, their
IoU to ``teacher_agreement``, ``priority`` is ``1 - teacher_agreement`` (doubtful human masks are reviewed
first), and ``auto_accept`` holds only where the teacher confirms the mask (agreement of at least the
teacher's calibrated ``min_agreement``). With ``check_masks`` off, such masks (made by a machine, e.g. crops of
the teacher's whole-photo masks, a framing aid) are ignored and the rows labelled anew.

:func:`pseudo_label` plans the items and hands an engine to :func:`sinet_plus.stage.run_stage`, which journals
outcomes, resumes, and writes ``manifest.csv`` and ``skipped.csv``.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pipeline.faces import DetectorSettings, detector
from pipeline.teacher.ensemble import EnsemblePrediction, load_any_teacher
from pipeline.teacher.members import DEEPLAB
from pipeline.teacher.signals import quality_signals
from sinet.metrics import foreground_iou
from sinet_plus import manifest as mf
from sinet_plus.errors import PathError, UserError
from sinet_plus.imageio import ImageReadError, list_photos, read_image, read_mask, write_mask, write_png
from sinet_plus.processes import DiesWithParent
from sinet_plus.stage import ERROR_REASON, Outcome, StageSummary, claim_folder, run_stage
from sinet_plus.torch_utils import pick_device

CARRIED = ("origin", "origin_stem", "crop_x0", "crop_y0", "crop_x1", "crop_y1", "face_x0", "face_y0", "face_x1",
           "face_y1", "face_prob", "crop_shift_x", "crop_shift_y", "crop_clipped", "person_coverage")
"""Provenance columns copied from an input manifest's rows (paths rebased)."""

MIN_SIDE = 8
"""Photos with a side below this many pixels are skipped as ``too_small``."""

WORKING_SIDE = 1280
"""Larger photos are shrunk to this long side on the loading side (every teacher predicts at 512 px or less);
masks are written at the photo's own size."""

ENGINES = ("local", "ray")

FACE_SEARCH_SIDE = 320
"""MTCNN searches a copy with this long side: ``face_in_mask`` only needs the largest face, which it finds there
as well as at crop-baidu's 640 px, in less time (docs/teacher.md)."""


@dataclass
class LabelOptions:
    """How to pseudo-label.

    Args:
        long_side: DeepLabV3+ members predict at this long side (rounded to multiples of 32) instead of the
            test-time sizes the teacher carries (None = the teacher's own).
        mirror: also predict the mirror image: averaged in (flip test-time augmentation) and compared
            (``flip_agreement``); costs a second forward pass.
        faces: run MTCNN for ``face_in_mask``.
        check_masks: check the masks that manifest rows come with (human-made) instead of labelling those
            rows anew; off for masks a machine made.
        soft: also write the probability map as a PNG (0..255).
        batch_size: photos per model call.
        workers: loader processes (local) or loading actors (ray).
        device: ``auto``, ``cpu``, ``cuda``...
        engine: ``local`` (DataLoader processes and the model in this process) or ``ray`` (Ray Data actors).
        actors: Ray: model actors.
        gpus_per_actor: Ray: GPUs per model actor (None: one where the cluster has GPUs, else none).
    """

    long_side: int | None = None
    mirror: bool = True
    faces: bool = True
    check_masks: bool = True
    soft: bool = False
    batch_size: int = 8
    workers: int = 2
    device: str = "auto"
    engine: str = "local"
    actors: int = 1
    gpus_per_actor: float | None = None

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise UserError(f"engine must be one of {', '.join(ENGINES)}, not {self.engine!r}")


@dataclass
class PhotoItem:
    """One photo to label: where it is, its output id and provenance cells (paths absolute); ``checked`` is the
    human-made mask to check instead of labelling, with the row's own cells (id, source, split, mask)."""

    path: Path
    id: str
    carried: dict[str, Any] = field(default_factory=dict)
    checked: Path | None = None


@dataclass
class LoadedPhoto:
    """A photo ready for the model (at most :data:`WORKING_SIDE` on its long side, face box in those pixels;
    ``size`` is the photo's own), or the reason it is not."""

    key: str
    item: PhotoItem
    photo: np.ndarray | None = None
    size: tuple[int, int] = (0, 0)
    face: tuple[float, float, float, float] | None = None
    skip: tuple[str, str] | None = None


def plan_items(source: str | os.PathLike, check_masks: bool = True) -> list[tuple[str, PhotoItem]]:
    """``(key, item)`` pairs for a folder of photos (key = file stem) or a manifest (key = row id; rows with a
    mask are to be checked, unless ``check_masks`` is off).

    Raises:
        PathError: ``source`` does not exist.
        ManifestError: an invalid manifest.
    """
    source = Path(source)
    if source.is_dir():
        return [(photo.stem, PhotoItem(photo.absolute(), f"pseudo/{photo.stem}",
                                       {"origin": photo.absolute(), "origin_stem": photo.stem}))
                for photo in list_photos(source)]
    if not source.exists():
        raise PathError(source, "no such folder or manifest")
    manifest = mf.load(source)
    items = []
    for _, row in manifest.frame.iterrows():
        carried = {c: row[c] for c in CARRIED if c in row.index and not _empty(row[c])}
        if "origin" in carried:
            carried["origin"] = manifest.path(carried["origin"])
        image = manifest.path(row["image"])
        carried.setdefault("origin_stem", image.stem)
        mask = row.get("mask", "")
        if _empty(mask) or not check_masks:
            items.append((str(row["id"]), PhotoItem(image, f"pseudo/{row['id']}", carried)))
        else:
            carried.update(source=row["source"], split=row["split"])
            items.append((str(row["id"]), PhotoItem(image, str(row["id"]), carried, manifest.path(mask))))
    return items


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


def load_photo(key: str, item: PhotoItem, faces: bool) -> LoadedPhoto:
    """Read one photo, find its largest face and shrink it to the working size; failures become a skip reason."""
    try:
        photo = read_image(item.path)
        height, width = photo.shape[:2]
        if min(height, width) < MIN_SIDE:
            return LoadedPhoto(key, item, skip=("too_small", f"{item.path}: {width}x{height} pixels, "
                                                             f"below {MIN_SIDE} px on a side"))
        scale = min(1.0, WORKING_SIDE / max(height, width))
        if scale < 1:
            photo = cv2.resize(photo, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
        found = detector(DetectorSettings(max_side=FACE_SEARCH_SIDE)).detect(photo) if faces else []
        face = (found[0].x0, found[0].y0, found[0].x1, found[0].y1) if found else None
        return LoadedPhoto(key, item, photo, (height, width), face)
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
        teacher: checkpoint or ensemble file (loaded once here: in the main process or in each Ray actor).
        out_dir: the stage's output folder; masks go to ``masks/``, soft maps to ``soft/``.
        options: see :class:`LabelOptions`.
    """

    def __init__(self, teacher: str | os.PathLike, out_dir: str | os.PathLike, options: LabelOptions):
        self.teacher = load_any_teacher(teacher, pick_device(options.device))
        if options.long_side:
            for member in self.teacher.members:
                if member.kind == DEEPLAB:
                    member.sizes = (options.long_side,)
        self.teacher_hash = self.teacher.hash
        self.out_dir = Path(out_dir).resolve()
        self.options = options

    def __call__(self, batch: Sequence[LoadedPhoto]) -> list[Outcome]:
        skipped, predicted = self.predict(batch)
        return skipped + self.finish_all(predicted)

    def predict(self, batch: Sequence[LoadedPhoto]
                ) -> tuple[list[Outcome], list[tuple[LoadedPhoto, EnsemblePrediction]]]:
        """The model half: skips for photos the loader refused, predictions for the others."""
        ready = [photo for photo in batch if photo.skip is None]
        skipped = [Outcome.skipped(p.key, *p.skip) for p in batch if p.skip is not None]
        if not ready:
            return skipped, []
        predictions = self.teacher.predict([p.photo for p in ready], self.options.mirror)
        return skipped, list(zip(ready, predictions))

    def finish_all(self, predicted: Sequence[tuple[LoadedPhoto, EnsemblePrediction]]) -> list[Outcome]:
        """The CPU half: :meth:`finish` each prediction, an error becoming that photo's recorded skip."""
        outcomes = []
        for photo, prediction in predicted:
            try:
                outcomes.append(self.finish(photo, prediction))
            except ImageReadError as error:
                outcomes.append(Outcome.skipped(photo.key, "unreadable", str(error)))
            except Exception as error:  # one bad item must not end the run
                outcomes.append(Outcome.skipped(photo.key, ERROR_REASON, f"{type(error).__name__}: {error}"))
        return outcomes

    def finish(self, photo: LoadedPhoto, prediction: EnsemblePrediction) -> Outcome:
        """Signals, files and the manifest row of one predicted photo."""
        views = prediction.views
        signals = quality_signals(views.plain, views.mirrored, photo.face, prediction.members,
                                  self.teacher.priority)
        prob = _at_size(views.merged(), photo.size)  # flip test-time augmentation: the mask comes from both passes
        name = output_name(photo.key)
        mask_path = self.out_dir / "masks" / f"{name}.png"
        write_mask(mask_path, (prob > 0.5).astype(np.uint8))
        row = {"id": photo.item.id, "image": self.relative(photo.item.path), "mask": self.relative(mask_path),
               "source": "pseudo", "split": "unlabeled", "status": "pending", **photo.item.carried,
               "width": photo.size[1], "height": photo.size[0], "teacher": self.teacher_hash, **signals,
               "auto_accept": self.teacher.accepts(signals["priority"])}
        if photo.item.checked is not None:
            agreement = foreground_iou(prob > 0.5, read_mask(photo.item.checked, unknown_value=128))
            row.update(mask=self.relative(photo.item.checked), teacher_mask=row["mask"], teacher_agreement=agreement,
                       priority=1 - agreement, auto_accept=self.teacher.confirms(agreement))
        if "origin" in row:
            row["origin"] = self.relative(Path(row["origin"]))
        if self.options.soft:
            soft_path = self.out_dir / "soft" / f"{name}.png"
            write_png(soft_path, np.round(prob * 255).astype(np.uint8))
            row["soft_mask"] = self.relative(soft_path)
        return Outcome(photo.key, rows=[row])

    def relative(self, path: Path) -> str:
        return os.path.relpath(path, self.out_dir)


def _at_size(prob: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A probability map resized to ``size`` (height, width) when the loader shrank the photo."""
    if prob.shape == tuple(size):
        return prob
    return cv2.resize(prob, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


class _PhotoDataset(Dataset):
    def __init__(self, items: Sequence[tuple[str, PhotoItem]], options: LabelOptions):
        self.items, self.options = list(items), options

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> LoadedPhoto:
        key, item = self.items[index]
        return load_photo(key, item, self.options.faces)


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


def run_on_ray(teacher: str | os.PathLike, out_dir: str | os.PathLike, items: Sequence[tuple[str, PhotoItem]],
               options: LabelOptions) -> Iterator[Outcome]:
    """The Ray engine (:func:`pipeline.ray_engine.run_ray`) with this stage's halves: ``options.workers`` loading
    actors run :func:`load_photo`, ``options.actors`` model actors each hold a :class:`Labeler`.

    Args:
        teacher: checkpoint or ensemble file, readable from every Ray node.
        out_dir: output folder, shared by every Ray node.
        items: pending ``(key, item)`` pairs.
        options: see :class:`LabelOptions`.
    """
    from pipeline.ray_engine import run_ray

    load = functools.partial(load_photo, faces=options.faces)
    make_labeler = functools.partial(Labeler, str(teacher), str(out_dir), options)
    return run_ray(items, load, make_labeler, options.batch_size, options.workers, options.actors,
                   options.gpus_per_actor)


def pseudo_label(source: str | os.PathLike, teacher: str | os.PathLike, out_dir: str | os.PathLike,
                 options: LabelOptions = LabelOptions()) -> StageSummary:
    """Pseudo-label a folder or manifest of photos into ``out_dir`` (resumable).

    Args:
        source: folder of photos or a manifest.
        teacher: teacher checkpoint.
        out_dir: output folder (``masks/``, ``soft/``, ``manifest.csv``, ``skipped.csv``, journal).
        options: see :class:`LabelOptions` (also which engine runs it).

    Raises:
        CheckpointError: the teacher cannot be loaded (checked before any photo is read).
        UserError: ``out_dir`` holds output of another teacher or other options (resuming would mix them).
    """
    items = plan_items(source, options.check_masks)
    if options.engine == "ray":
        teacher_hash = load_any_teacher(teacher).hash  # fail here, clearly, rather than inside an actor

        def execute(pending: list[tuple[str, PhotoItem]]) -> Iterator[Outcome]:
            return run_on_ray(teacher, out_dir, pending, options)
    else:
        labeler = Labeler(teacher, out_dir, options)
        teacher_hash = labeler.teacher_hash

        def execute(pending: list[tuple[str, PhotoItem]]) -> Iterator[Outcome]:
            return run_local(labeler, pending, options)

    claim_folder(out_dir, {"teacher": teacher_hash, "long_side": options.long_side, "mirror": options.mirror,
                           "faces": options.faces, "soft": options.soft,
                           "check_masks": options.check_masks})
    return run_stage(f"pseudo-label ({options.engine})", items, execute, out_dir)
