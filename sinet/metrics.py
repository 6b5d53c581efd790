"""Segmentation metrics on label masks (0 background, 1 person, 255 ignored), plus rotation for robustness tests.

- :func:`foreground_iou` — the **official metric** (the one the paper reports): per-image foreground IoU, an
  empty union counts as 1; the dataset figure is the mean over images (the authors' code averages per-batch
  means; with equal batches that is the same number).
- Two-class **mIoU** — the standard definition: IoU of each class from the confusion matrix summed over the
  whole set, then averaged over the two classes (:class:`ScoreBoard`).
- :func:`boundary_f1` — foreground F1 restricted to the ground-truth boundary band (dilate − erode, 15×15).
All reported figures are ×100.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from sinet_plus.imageio import IGNORE

GRAY_BORDER = 128
"""Border value of rotated photos (the PortraitNet augmentation and the paper's rotation test use gray)."""


def _valid(gt: np.ndarray) -> np.ndarray:
    return gt != IGNORE


def foreground_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Foreground IoU of one image in [0, 1]; 1.0 when both masks are empty (nothing to get wrong).

    Args:
        pred: predicted labels (0/1), same shape as ``gt``.
        gt: ground-truth labels (0/1, 255 = ignored).
    """
    valid = _valid(gt)
    pred_fg, gt_fg = (pred == 1) & valid, gt == 1
    union = np.count_nonzero(pred_fg | gt_fg)
    return 1.0 if union == 0 else np.count_nonzero(pred_fg & gt_fg) / union


def boundary_band(gt: np.ndarray, kernel: int = 15) -> np.ndarray:
    """Boolean band around the ground-truth person outline: dilate − erode with an all-ones square kernel.

    Args:
        gt: ground-truth labels (0/1, 255 = ignored; ignored pixels never belong to the band).
        kernel: side of the square structuring element (15 at 224², 5 on the 28² labels of stage 1).
    """
    person = (gt == 1).astype(np.uint8)
    element = np.ones((kernel, kernel), np.uint8)
    band = cv2.dilate(person, element) != cv2.erode(person, element)
    return band & _valid(gt)


def boundary_f1(pred: np.ndarray, gt: np.ndarray, kernel: int = 15) -> float:
    """Foreground F1 inside the GT boundary band, in [0, 1]: how well the outline is traced, which the IoU of a
    whole person barely feels.

    Precision and recall count 1 when their denominator is empty; F1 is 0 when both are 0.

    Args:
        pred: predicted labels (0/1).
        gt: ground-truth labels (0/1, 255 = ignored).
        kernel: band kernel size.
    """
    band = boundary_band(gt, kernel)
    pred_fg, gt_fg = (pred == 1) & band, (gt == 1) & band
    hits = np.count_nonzero(pred_fg & gt_fg)
    predicted, actual = np.count_nonzero(pred_fg), np.count_nonzero(gt_fg)
    precision = hits / predicted if predicted else 1.0
    recall = hits / actual if actual else 1.0
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def confusion(pred: np.ndarray, gt: np.ndarray, num_classes: int = 2) -> np.ndarray:
    """``(num_classes, num_classes)`` pixel counts, rows = ground truth, columns = prediction.

    Args:
        pred: predicted labels.
        gt: ground-truth labels (255 = ignored).
        num_classes: number of classes.
    """
    valid = _valid(gt)
    index = gt[valid].astype(np.int64) * num_classes + pred[valid].astype(np.int64)
    return np.bincount(index, minlength=num_classes ** 2).reshape(num_classes, num_classes)


@dataclass
class ImageScore:
    """Scores of one image (fractions in [0, 1])."""

    key: str
    iou: float
    boundary_f1: float


@dataclass
class ScoreBoard:
    """Accumulates per-image scores and the set-wide confusion matrix; :meth:`summary` gives the ×100 figures.

    Args:
        band_kernel: boundary band kernel for :func:`boundary_f1`.
        num_classes: classes of the confusion matrix.
    """

    band_kernel: int = 15
    num_classes: int = 2
    images: list[ImageScore] = field(default_factory=list)
    matrix: np.ndarray | None = None

    def add(self, key: str, pred: np.ndarray, gt: np.ndarray, band_kernel: int | None = None) -> ImageScore:
        """Score one image and keep it.

        Args:
            key: the image's id (for the worst-images sheet).
            pred: predicted labels.
            gt: ground-truth labels of the same shape.
            band_kernel: boundary band kernel for this image (default: the board's).
        """
        if pred.shape != gt.shape:
            raise ValueError(f"{key}: prediction {pred.shape} and ground truth {gt.shape} differ in size")
        kernel = band_kernel or self.band_kernel
        score = ImageScore(key, foreground_iou(pred, gt), boundary_f1(pred, gt, kernel))
        self.images.append(score)
        counts = confusion(pred, gt, self.num_classes)
        self.matrix = counts if self.matrix is None else self.matrix + counts
        return score

    def miou(self) -> float:
        """Two-class mIoU in [0, 1] from the summed confusion matrix (classes absent everywhere are skipped)."""
        if self.matrix is None:
            return float("nan")
        hits = np.diag(self.matrix).astype(np.float64)
        unions = self.matrix.sum(0) + self.matrix.sum(1) - hits
        present = unions > 0
        return float((hits[present] / unions[present]).mean())

    def summary(self) -> dict[str, float]:
        """``iou`` (official metric), ``miou`` (two-class) and ``boundary_f1``, all ×100, and ``images``."""
        if not self.images:
            return {"iou": float("nan"), "miou": float("nan"), "boundary_f1": float("nan"), "images": 0}
        return {"iou": 100 * float(np.mean([s.iou for s in self.images])),
                "miou": 100 * self.miou(),
                "boundary_f1": 100 * float(np.mean([s.boundary_f1 for s in self.images])),
                "images": len(self.images)}


def scaled_band_kernel(kernel: int, size: tuple[int, int], reference: tuple[int, int]) -> int:
    """The odd kernel that covers the same share of the photo at ``size`` as ``kernel`` does at ``reference``.

    Lets boundary F1 at the photo's resolution use the same band as the 15×15 band at 224² (≈ 45 px at 600×800).

    Args:
        kernel: odd kernel size at ``reference``.
        size: ``(height, width)`` of the photo.
        reference: ``(height, width)`` the kernel was defined at.
    """
    scale = (size[0] / reference[0] + size[1] / reference[1]) / 2
    return 2 * round((kernel // 2) * scale) + 1


def rotate_pair(image: np.ndarray, mask: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate a photo and its mask about the centre, keeping the size; new border pixels are gray / background.

    Args:
        image: uint8 RGB ``(H, W, 3)``; bilinear, border value 128.
        mask: labels ``(H, W)``; nearest, border 0 (background).
        degrees: counter-clockwise angle.
    """
    height, width = mask.shape
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), degrees, 1.0)
    rotated = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=(GRAY_BORDER,) * 3)
    rotated_mask = cv2.warpAffine(mask, matrix, (width, height), flags=cv2.INTER_NEAREST,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return rotated, rotated_mask


def rotation_angles(count: int, max_degrees: float, seed: int = 0) -> np.ndarray:
    """Reproducible angles drawn uniformly from ``[-max_degrees, max_degrees]``, one per image.

    Args:
        count: number of images.
        max_degrees: largest rotation.
        seed: random seed (the same seed gives the same table).
    """
    return np.random.default_rng([seed, int(round(max_degrees * 1000))]).uniform(-max_degrees, max_degrees, count)
