"""Inference: a photo in, logits/labels/probability out; and the ``sinet predict`` stage (masks, cut-outs, overlays).

Every photo goes through the checkpoint's own :class:`~sinet.preprocess.Preprocessing` (stretch to the network
size), the logits are upsampled bilinearly to whatever size is asked for (network size for the official metric,
the photo's size for masks people use), and the label is the argmax.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sinet.checkpoint import weights_hash
from sinet.preprocess import Preprocessing
from sinet_plus.imageio import read_image, write_jpeg, write_mask, write_png
from sinet_plus.stage import Outcome, StageSummary, claim_folder, map_items, run_stage

PERSON = 1
OVERLAY_COLOUR = np.array([0, 220, 90], np.float32)


@dataclass
class Logits:
    """Logits of one photo at the network size, resized on demand.

    Args:
        logits: ``(classes, h, w)`` float tensor at the preprocessing size.
    """

    logits: torch.Tensor

    def _resized(self, size: tuple[int, int] | None) -> torch.Tensor:
        if size is None or tuple(size) == tuple(self.logits.shape[-2:]):
            return self.logits
        return F.interpolate(self.logits[None], size=tuple(size), mode="bilinear", align_corners=False)[0]

    def labels(self, size: tuple[int, int] | None = None) -> np.ndarray:
        """uint8 argmax labels ``(H, W)``.

        Args:
            size: ``(height, width)``; None keeps the network size.
        """
        return self._resized(size).argmax(0).to(torch.uint8).numpy()

    def probability(self, size: tuple[int, int] | None = None) -> np.ndarray:
        """float32 person probability ``(H, W)`` in [0, 1] (softmax over classes).

        Args:
            size: ``(height, width)``; None keeps the network size.
        """
        return torch.softmax(self._resized(size), 0)[PERSON].numpy()


@torch.inference_mode()
def predict(model: nn.Module, preprocessing: Preprocessing, image: np.ndarray) -> Logits:
    """Run ``model`` on one uint8 RGB photo.

    Args:
        model: a SINet (or stage-1 encoder, whose 1/8 logits are upsampled to the network size) in eval mode.
        preprocessing: the checkpoint's preprocessing.
        image: uint8 RGB ``(H, W, 3)``.
    """
    logits = model(preprocessing(image))
    if tuple(logits.shape[-2:]) != tuple(preprocessing.size):
        logits = F.interpolate(logits, size=preprocessing.size, mode="bilinear", align_corners=False)
    return Logits(logits[0].float().cpu())


def cutout(image: np.ndarray, probability: np.ndarray) -> np.ndarray:
    """RGBA cut-out whose alpha is the person probability (soft edges, no jagged staircase).

    Args:
        image: uint8 RGB ``(H, W, 3)``.
        probability: person probability ``(H, W)`` in [0, 1].
    """
    alpha = np.clip(np.rint(probability * 255), 0, 255).astype(np.uint8)
    return np.dstack([image, alpha])


def overlay(image: np.ndarray, labels: np.ndarray, opacity: float = 0.45) -> np.ndarray:
    """The photo with the person tinted green and outlined, for a quick visual check.

    Args:
        image: uint8 RGB ``(H, W, 3)``.
        labels: predicted labels ``(H, W)``.
        opacity: tint strength.
    """
    person = labels == PERSON
    out = image.astype(np.float32)
    out[person] = (1 - opacity) * out[person] + opacity * OVERLAY_COLOUR
    out = out.astype(np.uint8)
    contours, _ = cv2.findContours(person.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    thickness = max(1, round(max(image.shape[:2]) / 300))
    cv2.drawContours(out, contours, -1, tuple(int(v) for v in OVERLAY_COLOUR), thickness)
    return out


@dataclass
class PredictOutputs:
    """Where ``sinet predict`` writes, and what.

    Args:
        out_dir: stage folder (``masks/``, ``cutouts/``, ``overlays/``, ``manifest.csv``).
        cutouts: also write RGBA cut-outs (``cutouts/``).
        overlays: also write overlay JPEGs (``overlays/``).
    """

    out_dir: Path
    cutouts: bool = True
    overlays: bool = True


def predict_photo(model: nn.Module, preprocessing: Preprocessing, outputs: PredictOutputs, key: str,
                  photo: Path) -> Outcome:
    """Segment one photo and write its outputs atomically; the manifest row points at the mask.

    Args:
        model: model in eval mode.
        preprocessing: the checkpoint's preprocessing.
        outputs: output settings.
        key: the photo's stem (unique in the run).
        photo: photo file.
    """
    image = read_image(photo)
    prediction = predict(model, preprocessing, image)
    probability = prediction.probability(image.shape[:2])
    labels = (probability > 0.5).astype(np.uint8)
    mask_path = outputs.out_dir / "masks" / f"{key}.png"
    write_mask(mask_path, labels)
    if outputs.cutouts:
        write_png(outputs.out_dir / "cutouts" / f"{key}.png", cutout(image, probability))
    if outputs.overlays:
        write_jpeg(outputs.out_dir / "overlays" / f"{key}.jpg", overlay(image, labels), quality=90)
    row = {"id": f"predict/{key}", "image": os.path.relpath(photo.resolve(), outputs.out_dir.resolve()),
           "mask": os.path.relpath(mask_path.resolve(), outputs.out_dir.resolve()), "source": "predict",
           "split": "unlabeled", "status": "pending", "origin_stem": photo.stem,
           "width": image.shape[1], "height": image.shape[0],
           "foreground_share": float(labels.mean())}
    return Outcome(key, rows=[row])


def predict_folder(model: nn.Module, preprocessing: Preprocessing, photos: list[Path],
                   outputs: PredictOutputs) -> StageSummary:
    """Run :func:`predict_photo` over ``photos`` as a resumable stage (journal, manifest.csv, skipped.csv).

    The folder is claimed for these weights, preprocessing and outputs: a rerun with other weights is refused
    rather than reporting the earlier weights' masks as done.

    Args:
        model: model in eval mode.
        preprocessing: the checkpoint's preprocessing.
        photos: photo files (two with one stem are both skipped).
        outputs: output settings.

    Raises:
        UserError: ``outputs.out_dir`` holds predictions made with other weights or settings.
    """
    claim_folder(outputs.out_dir, {"weights": weights_hash(model), "preprocessing": preprocessing.to_dict(),
                                   "cutouts": outputs.cutouts, "overlays": outputs.overlays})

    def execute(pending: list[tuple[str, Path]]) -> Iterator[Outcome]:
        return map_items(lambda photo: predict_photo(model, preprocessing, outputs, photo.stem, photo), pending)

    return run_stage("predict", [(photo.stem, photo) for photo in photos], execute, outputs.out_dir)
