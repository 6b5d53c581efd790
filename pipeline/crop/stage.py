"""`crop-baidu` per photo: a pure function from arrays to crops, and the glue to the shared stage runner.

:func:`crop_photo` takes a photo, its mask and the detected faces and returns the crops (arrays and their
provenance) and the rejections; :func:`process_photo` reads the files, detects faces, writes the crops
atomically and turns the result into an :class:`~sinet_plus.stage.Outcome`; :func:`run` plans the items and
hands them to :func:`~sinet_plus.stage.run_stage` and :func:`~sinet_plus.stage.map_items`.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from pipeline.crop.framing import CropBox, FramingRule, frame_face
from pipeline.crop.rules import (
    NO_FACE,
    PHOTO_TOO_SMALL,
    Rejection,
    SelectionRules,
    check_coverage,
    check_face,
    check_mask,
    person_share,
)
from pipeline.faces import DetectorSettings, Face, detector
from sinet_plus.errors import UserError
from sinet_plus.imageio import list_photos, read_image, read_mask, write_jpeg, write_mask
from sinet_plus.manifest import Manifest
from sinet_plus.stage import Outcome, StageSummary, claim_folder, map_items, run_stage

SOURCE = "baidu_crop"
MISSING_MASK = "missing_mask"
MASK_SIZE_MISMATCH = "mask_size_mismatch"
ENGINES = ("local", "ray")
"""Where photos are cropped: a local process pool, or a Ray Data actor pool (this machine or a cluster)."""


@dataclass(frozen=True)
class CropSettings:
    """Everything that decides the crops of one photo.

    Args:
        framing: where the face goes in the crop.
        rules: which faces become crops.
        detector: how faces are searched.
        output_size: (width, height) of the written crops; None writes them at the photo's own resolution.
        unknown_value: grayscale mask value read as "unknown" (128 in the project's masks), or None.
    """

    framing: FramingRule = FramingRule()
    rules: SelectionRules = SelectionRules()
    detector: DetectorSettings = DetectorSettings()
    output_size: tuple[int, int] | None = (600, 800)
    unknown_value: int | None = 128


@dataclass
class Crop:
    """One crop: its arrays and where it came from."""

    index: int
    face: Face
    box: CropBox
    coverage: float
    image: np.ndarray
    mask: np.ndarray


@dataclass
class PhotoCrops:
    """What one photo gave: crops and rejections (of the photo, or of single faces)."""

    crops: list[Crop] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


def resize_crop(image: np.ndarray, mask: np.ndarray, size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    """Resize a photo crop smoothly (area when shrinking, bicubic when enlarging) and its mask by nearest
    neighbour, so mask values stay exactly 0, 1 or unknown."""
    if size is None or (image.shape[1], image.shape[0]) == tuple(size):
        return image, mask
    shrinking = size[0] * size[1] < image.shape[0] * image.shape[1]
    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
    return image, cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)


def crop_photo(image: np.ndarray, mask: np.ndarray, faces: list[Face], settings: CropSettings) -> PhotoCrops:
    """The crops of one photo (uint8 RGB) given its mask (0/1/IGNORE) and faces (largest first)."""
    height, width = mask.shape
    rejection = check_mask(mask)
    if rejection is None and not faces:
        rejection = Rejection(NO_FACE, f"no face found in the {width}x{height} photo")
    if rejection is not None:
        return PhotoCrops(rejections=[rejection])
    result = PhotoCrops()
    for index, face in enumerate(faces):
        rejection = check_face(faces, index, mask, settings.rules)
        if rejection is None:
            box = frame_face(face, width, height, settings.framing)
            coverage = person_share(mask[box.y0:box.y1, box.x0:box.x1])
            rejection = check_coverage(coverage, index, settings.rules)
        if rejection is not None:
            result.rejections.append(rejection)
            continue
        photo, labels = resize_crop(image[box.y0:box.y1, box.x0:box.x1], mask[box.y0:box.y1, box.x0:box.x1],
                                    settings.output_size)
        result.crops.append(Crop(index, face, box, coverage, photo, labels))
    return result


def crop_name(stem: str, index: int) -> str:
    """File stem of a crop: the origin stem and the face index (``0007-f0``)."""
    return f"{stem}-f{index}"


def crop_row(stem: str, image_path: Path, crop: Crop, out_dir: Path) -> dict:
    """The manifest row of one written crop (paths relative to ``out_dir``)."""
    name = crop_name(stem, crop.index)
    face, box = crop.face, crop.box
    return {
        "id": f"{SOURCE}/{name}", "image": f"images/{name}.jpg", "mask": f"masks/{name}.png",
        "source": SOURCE, "split": "train", "status": "pending",
        "origin": os.path.relpath(image_path, out_dir), "origin_stem": stem,
        "crop_x0": box.x0, "crop_y0": box.y0, "crop_x1": box.x1, "crop_y1": box.y1,
        "face_x0": round(face.x0), "face_y0": round(face.y0), "face_x1": round(face.x1), "face_y1": round(face.y1),
        "face_prob": round(face.prob, 4), "crop_shift_x": box.shift_x, "crop_shift_y": box.shift_y,
        "crop_clipped": box.clipped, "person_coverage": round(crop.coverage, 4),
        "width": crop.image.shape[1], "height": crop.image.shape[0],
    }


_worker: dict = {}
"""Per-process state set by :func:`init_worker`: the settings and the output folder."""


def init_worker(settings: CropSettings, out_dir: str, threads: int | None = None) -> None:
    """Load MTCNN once in this process; ``threads`` sets torch's threads (None keeps torch's default)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    _worker.update(settings=settings, out_dir=Path(out_dir))
    detector(settings.detector)


def process_photo(payload: tuple[str, Path, Path | None]) -> Outcome:
    """Read one photo and its mask, crop it and write the crops; the payload is (stem, photo, mask or None)."""
    stem, image_file, mask_file = payload
    settings: CropSettings = _worker["settings"]
    out_dir: Path = _worker["out_dir"]
    if mask_file is None:
        return Outcome.skipped(stem, MISSING_MASK, f"{image_file}: no mask with stem {stem!r}")
    image = read_image(image_file)
    mask = read_mask(mask_file, unknown_value=settings.unknown_value)
    if mask.shape != image.shape[:2]:
        return Outcome.skipped(stem, MASK_SIZE_MISMATCH, f"{mask_file}: mask is {mask.shape[1]}x{mask.shape[0]} "
                                                         f"but the photo is {image.shape[1]}x{image.shape[0]}")
    if min(image.shape[:2]) < settings.rules.min_face_width:
        return Outcome.skipped(stem, PHOTO_TOO_SMALL, f"{image_file}: {image.shape[1]}x{image.shape[0]} photo is "
                                                      "smaller than the minimum face")
    faces = detector(settings.detector).detect(image) if check_mask(mask) is None else []
    result = crop_photo(image, mask, faces, settings)
    outcome = Outcome(stem)
    for crop in result.crops:
        name = crop_name(stem, crop.index)
        write_jpeg(out_dir / "images" / f"{name}.jpg", crop.image)
        write_mask(out_dir / "masks" / f"{name}.png", crop.mask)
        outcome.rows.append(crop_row(stem, Path(image_file), crop, out_dir))
    for rejection in result.rejections:
        outcome.skips.append({"key": stem, "reason": rejection.reason, "detail": f"{image_file}: {rejection.detail}",
                              "face": "" if rejection.face is None else rejection.face})
    return outcome


def plan_items(images_dir: str | os.PathLike, masks_dir: str | os.PathLike) -> list[tuple[str, tuple]]:
    """One item per photo in ``images_dir``, keyed by stem, with its mask by stem (or None when missing)."""
    masks = {}
    for path in list_photos(masks_dir):
        masks.setdefault(path.stem, path)
    return [(photo.stem, (photo.stem, _input_path(photo),
                          _input_path(masks[photo.stem]) if photo.stem in masks else None))
            for photo in list_photos(images_dir)]


def _input_path(path: Path) -> Path:
    """The file a listed path names (a broken link stays itself, so its skip names the link)."""
    return path.resolve() if path.exists() else path.absolute()


def plan_manifest_items(manifest: Manifest) -> list[tuple[str, tuple]]:
    """One item per manifest row, keyed by its photo's stem, with its mask (or None when the row has none)."""
    return [(image.stem, (image.stem, image, mask))
            for image, mask in zip(manifest.paths("image"), manifest.paths("mask")) if image is not None]


def run(images_dir: str | os.PathLike | None, masks_dir: str | os.PathLike | None, out_dir: str | os.PathLike,
        settings: CropSettings = CropSettings(), workers: int = 1, threads: int = 1,
        manifest: Manifest | None = None, engine: str = ENGINES[0]) -> StageSummary:
    """Crop every photo of ``images_dir`` (masks by stem from ``masks_dir``), or of ``manifest``, into ``out_dir``,
    resumably.

    Args:
        images_dir: folder of photos (None when ``manifest`` is given).
        masks_dir: folder of masks with the photos' stems (None when ``manifest`` is given).
        out_dir: gets images/, masks/, manifest.csv, skipped.csv and the journal.
        settings: framing, rules, detector and output size.
        workers: processes (local) or actors (ray); each loads MTCNN once.
        threads: torch threads per worker. One is best here: MTCNN's small convolutions gain little from more,
            and on a busy machine extra threads spin against each other (see docs/crop-baidu.md).
        manifest: photos and masks as manifest rows instead of folders (keys are the photos' stems).
        engine: ``local`` (a process pool) or ``ray`` (a Ray Data actor pool, :func:`pipeline.ray_engine.map_on_ray`).
    """
    if engine not in ENGINES:
        raise UserError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    out_dir = Path(out_dir).resolve()
    items = plan_manifest_items(manifest) if manifest is not None else plan_items(images_dir, masks_dir)
    claim_folder(out_dir, asdict(settings))

    def execute(pending: list[tuple[str, tuple]]):
        initargs = (settings, str(out_dir), threads)
        if engine == "ray":
            from pipeline.ray_engine import map_on_ray

            return map_on_ray(process_photo, pending, actors=workers, initializer=init_worker, initargs=initargs)
        return map_items(process_photo, pending, workers=workers, initializer=init_worker, initargs=initargs)

    return run_stage("crop-baidu" + (" (ray)" if engine == "ray" else ""), items, execute, out_dir)
