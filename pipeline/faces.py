"""Face detection with facenet-pytorch's MTCNN (its weights ship inside the wheel, so it works offline), for every
stage that needs faces: ``crop-baidu`` frames crops around them, ``pseudo-label`` checks the mask covers the face.

Large photos are searched on a downscaled copy, which is faster and finds the same main face (docs/crop-baidu.md
and docs/teacher.md have the measurements). Boxes come back in the original photo's pixels. :func:`detector` is
how a stage gets its MTCNN: loaded once per process and settings, whichever stage asks.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np
import torch


class BoxGeometry:
    """Size and centre of a box with ``x0, y0, x1, y1`` attributes (end-exclusive)."""

    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def center(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2


@dataclass(frozen=True)
class Face(BoxGeometry):
    """One detected face: its box in photo pixels (x0, y0, x1, y1; floats, end-exclusive) and probability."""

    x0: float
    y0: float
    x1: float
    y1: float
    prob: float


@dataclass(frozen=True)
class DetectorSettings:
    """How MTCNN searches for faces.

    Args:
        max_side: the photo is downscaled so its long side is at most this many pixels before the search
            (speed; 0 searches at full size).
        thresholds: MTCNN's three stage thresholds (P-, R-, O-net); the last one is the kept faces' minimum
            probability.
        min_face_size: smallest face MTCNN looks for, in pixels of the searched (downscaled) copy; smaller
            values add pyramid levels and time. The stage's own size rule (in photo pixels) comes later.
    """

    max_side: int = 640
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    min_face_size: int = 20


class FaceDetector:
    """MTCNN loaded once (per process) and applied to uint8 RGB arrays."""

    def __init__(self, settings: DetectorSettings = DetectorSettings()):
        from facenet_pytorch import MTCNN

        self.settings = settings
        self.mtcnn = MTCNN(keep_all=True, min_face_size=settings.min_face_size,
                           thresholds=list(settings.thresholds), device="cpu")

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in ``image`` (uint8 RGB, H x W x 3), largest first, boxes in ``image``'s pixels."""
        height, width = image.shape[:2]
        scale = 1.0
        if self.settings.max_side and max(height, width) > self.settings.max_side:
            scale = self.settings.max_side / max(height, width)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        if min(image.shape[:2]) < 12:  # below P-net's 12 px window there is nothing to search
            return []
        with torch.inference_mode():
            boxes, probs = self.mtcnn.detect(image)
        if boxes is None:
            return []
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) / scale
        faces = [Face(*(float(v) for v in box), prob=float(prob)) for box, prob in zip(boxes, probs)]
        return sorted(faces, key=lambda f: -f.width * f.height)


@functools.cache
def detector(settings: DetectorSettings = DetectorSettings()) -> FaceDetector:
    """This process's :class:`FaceDetector` for ``settings``, loaded on first use (worker processes each load
    their own)."""
    return FaceDetector(settings)
