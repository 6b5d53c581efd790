"""Evaluation on a manifest split: the official metric, two-class mIoU and boundary F1, at the network size and
at the photo's resolution; the rotation-robustness table; a PNG sheet of the worst images.

At the network size (224², the paper's protocol) the ground truth is stretch-resized with nearest
neighbour, like the photo. At the photo's resolution the logits are upsampled bilinearly to the photo and
compared with the untouched mask, with a boundary band scaled to cover the same share of the photo (15 px at
224² ≈ 45 px at 600×800). The rotation table rotates each photo and its mask by its own random angle
in ±max (gray border, mask border = background) before the same 224² scoring.
"""

from __future__ import annotations

import heapq
import os
from dataclasses import dataclass, field

import cv2
import numpy as np
from rich.console import Console
from rich.progress import Progress
from torch import nn

from sinet.data import Sample, read_labelled
from sinet.metrics import ScoreBoard, rotate_pair, rotation_angles, scaled_band_kernel
from sinet.predict import predict
from sinet.preprocess import Preprocessing
from sinet_plus.errors import UserError
from sinet_plus.imageio import IGNORE, STORED_UNKNOWN, ImageReadError, write_png

console = Console(stderr=True)
ROTATION_LIMITS = (25, 45, 75, 90)
ERROR_COLOURS = {"missed": (40, 90, 255), "extra": (255, 50, 50)}


class NothingToScore(UserError):
    """No photo of the evaluation could be scored; the message names the reasons."""


@dataclass
class WorstImages:
    """Keeps the ``limit`` lowest-IoU images (at the network size) with what the sheet needs.

    Args:
        limit: number of images kept.
    """

    limit: int = 12
    heap: list = field(default_factory=list)

    def offer(self, iou: float, key: str, image: np.ndarray, gt: np.ndarray, pred: np.ndarray) -> None:
        """Keep this image if it is among the worst so far.

        Args:
            iou: its foreground IoU.
            key: its id.
            image, gt, pred: photo, ground truth and prediction at the network size.
        """
        entry = (-iou, key, image, gt, pred)
        if len(self.heap) < self.limit:
            heapq.heappush(self.heap, entry)
        elif -iou > self.heap[0][0]:
            heapq.heapreplace(self.heap, entry)

    def sorted(self) -> list[tuple]:
        """``(iou, key, image, gt, pred)``, worst first."""
        return [(-neg, key, image, gt, pred) for neg, key, image, gt, pred in sorted(self.heap, reverse=True)]


def error_map(image: np.ndarray, gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """The photo dimmed, with missed person pixels blue and extra ones red.

    Args:
        image: uint8 RGB at the mask's size.
        gt: ground-truth labels (255 ignored).
        pred: predicted labels.
    """
    out = (image.astype(np.float32) * 0.5).astype(np.uint8)
    out[(gt == 1) & (pred != 1)] = ERROR_COLOURS["missed"]
    out[(gt == 0) & (pred == 1)] = ERROR_COLOURS["extra"]
    return out


def worst_sheet(worst: list[tuple], columns: int = 4) -> np.ndarray:
    """A grid of tiles ``photo | error map`` with id and IoU written on each.

    Args:
        worst: entries of :meth:`WorstImages.sorted`.
        columns: tiles per row.
    """
    tiles = []
    for iou, key, image, gt, pred in worst:
        tile = np.concatenate([image, error_map(image, gt, pred)], axis=1).copy()
        tile[:22] //= 3  # a dark strip keeps the caption readable on any photo
        cv2.putText(tile, f"{key}   IoU {100 * iou:.1f}", (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1,
                    cv2.LINE_AA)
        tiles.append(tile)
    blank = np.zeros_like(tiles[0])
    tiles += [blank] * (-len(tiles) % columns)
    rows = [np.concatenate(tiles[i:i + columns], axis=1) for i in range(0, len(tiles), columns)]
    return np.concatenate(rows, axis=0)


def evaluate(model: nn.Module, preprocessing: Preprocessing, items: list[Sample],
             rotations: tuple[int, ...] = (), seed: int = 0, worst: int = 12,
             sheet_path: str | os.PathLike | None = None) -> dict:
    """Score ``model`` on ``items``; unreadable pairs are skipped and listed with their reason.

    Args:
        model: model in eval mode.
        preprocessing: the checkpoint's preprocessing (gives the network size).
        items: labelled photos.
        rotations: maximum angles of the rotation table (e.g. ``(25, 45, 75, 90)``); empty = no table.
        seed: seed of the rotation angles.
        worst: number of images on the worst-images sheet.
        sheet_path: PNG to write the sheet to (None = no sheet).

    Returns:
        ``iou``, ``miou``, ``boundary_f1`` (×100, at the network size), ``images``, ``full_resolution``
        (the same at the photo's resolution), ``rotations`` (max angle → scores), ``per_image`` and ``skipped``.

    Raises:
        NothingToScore: no item could be scored (unreadable, or every mask pixel unknown), rather than a
            report of NaN figures.
    """
    at_network, at_photo = ScoreBoard(), ScoreBoard()
    rotated = {limit: ScoreBoard() for limit in rotations}
    angles = {limit: rotation_angles(len(items), limit, seed) for limit in rotations}
    keeper, skipped = WorstImages(worst), []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("evaluating", total=len(items))
        for index, item in enumerate(items):
            progress.advance(task)
            try:
                image, gt = read_labelled(item)
            except ImageReadError as error:
                skipped.append({"key": item.key, "reason": str(error)})
                continue
            if not np.any(gt != IGNORE):
                skipped.append({"key": item.key, "reason": f"{item.mask}: every pixel is unknown ({STORED_UNKNOWN})"})
                continue
            prediction = predict(model, preprocessing, image)
            pred_small, gt_small = prediction.labels(), preprocessing.resize_mask(gt)
            score = at_network.add(item.key, pred_small, gt_small)
            at_photo.add(item.key, prediction.labels(gt.shape), gt,
                         scaled_band_kernel(at_network.band_kernel, gt.shape, preprocessing.size))
            if sheet_path is not None:
                keeper.offer(score.iou, item.key, preprocessing.resize_image(image), gt_small, pred_small)
            for limit in rotations:
                turned, turned_gt = rotate_pair(image, gt, float(angles[limit][index]))
                rotated[limit].add(item.key, predict(model, preprocessing, turned).labels(),
                                   preprocessing.resize_mask(turned_gt))
    if not at_network.images:
        reasons = "; ".join(skip["reason"] for skip in skipped[:3]) + (" ..." if len(skipped) > 3 else "")
        raise NothingToScore(f"none of the {len(items)} photos could be scored: {reasons}")
    if sheet_path is not None and keeper.heap:
        write_png(sheet_path, worst_sheet(keeper.sorted()))
    photo_scores = {score.key: score for score in at_photo.images}
    return {
        **at_network.summary(),
        "size": list(preprocessing.size),
        "full_resolution": at_photo.summary(),
        "rotations": {str(limit): board.summary() for limit, board in rotated.items()},
        "rotation_seed": seed,
        "per_image": [{"id": s.key, "iou": 100 * s.iou, "boundary_f1": 100 * s.boundary_f1,
                       "iou_full_resolution": 100 * photo_scores[s.key].iou} for s in at_network.images],
        "skipped": skipped,
    }
