"""SINet's training loss: cross-entropy plus a weighted cross-entropy on the label's boundary band.

``L = CE(all pixels) + λ · CE(band pixels)`` with the band = dilate(y) − erode(y) under a k×k all-ones kernel, as
in the authors' code: k = 15 on 224² labels (stage 2), k = 5 on the 28² labels of stage 1, λ = 0.5. Both terms are
(class-weighted) means, the boundary one over band pixels only, as in the official ``train_edge``. The band is
computed on the augmented label batch (OpenCV on the CPU, max-pooling on a GPU); both equal the official
``cv2.dilate - cv2.erode`` (checked in ``tests/test_sinet_loss.py``).
"""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sinet.recipe import STAGE2_BAND_KERNEL
from sinet_plus.imageio import IGNORE


def label_band(labels: torch.Tensor, kernel: int, num_classes: int = 2,
                  ignore_index: int = IGNORE) -> torch.Tensor:
    """Pixels whose ``kernel`` x ``kernel`` neighbourhood holds more than one known class.

    Args:
        labels: integer labels (N, H, W); ``ignore_index`` marks unknown pixels, which neither start nor
            stop a band.
        kernel: odd side of the square structuring element (15 at 224², 5 at 28²).
        num_classes: labels are in [0, num_classes) apart from ``ignore_index``.
        ignore_index: label value of unknown pixels.

    Returns:
        A bool tensor (N, H, W) on the labels' device. For 0/1 labels it equals
        ``cv2.dilate(y, k) - cv2.erode(y, k) > 0`` with an all-ones k×k kernel and OpenCV's default border
        (the border never adds or removes band pixels): a class is "present" where the dilation of its
        indicator is 1, and the band is where two classes are present.
    """
    if kernel % 2 != 1:
        raise ValueError(f"the band kernel must be odd, got {kernel}")
    dilate = _dilate_opencv if labels.device.type == "cpu" else _dilate_max_pool
    present = sum(dilate((labels == c).to(torch.uint8), kernel).to(torch.int8) for c in range(num_classes))
    return present >= 2


def _dilate_opencv(indicator: torch.Tensor, kernel: int) -> torch.Tensor:
    """Square dilation of a (N, H, W) uint8 CPU tensor with OpenCV, on a CPU far faster than ``max_pool2d``, square
    or separable (docs/training.md has the figures)."""
    element = np.ones((kernel, kernel), np.uint8)
    return torch.from_numpy(np.stack([cv2.dilate(plane, element) for plane in indicator.numpy()]))


def _dilate_max_pool(indicator: torch.Tensor, kernel: int) -> torch.Tensor:
    """Square dilation on any device as a row max-pool then a column max-pool."""
    values = indicator.unsqueeze(1).float()
    rows = F.max_pool2d(values, (1, kernel), stride=1, padding=(0, kernel // 2))
    return F.max_pool2d(rows, (kernel, 1), stride=1, padding=(kernel // 2, 0)).squeeze(1).to(torch.uint8)


def class_weights(pixel_counts: Iterable[float], offset: float = 1.10) -> torch.Tensor:
    """ERFNet class weights of the official code: ``w_c = 1 / ln(offset + p_c)``.

    Args:
        pixel_counts: number of training-label pixels of each class (ignored pixels left out).
        offset: the 1.10 of the formula; it bounds the weight of a rare class near 1 / ln(1.10) ≈ 10.5.
    """
    counts = np.asarray(list(pixel_counts), dtype=np.float64)
    if counts.sum() <= 0:
        raise ValueError("class weights need at least one labelled pixel")
    frequency = counts / counts.sum()
    return torch.tensor(1.0 / np.log(offset + frequency), dtype=torch.float32)


def label_pixel_counts(masks: Iterable[np.ndarray], classes: int = 2) -> np.ndarray:
    """Pixels of each class over label arrays (values ``>= classes``, e.g. IGNORE, are not counted)."""
    counts = np.zeros(classes, dtype=np.int64)
    for mask in masks:
        counts += np.bincount(mask.ravel(), minlength=256)[:classes]
    return counts


class BoundaryAwareLoss(nn.Module):
    """``CE + boundary_weight · CE on the boundary band``, optionally class-weighted.

    Args:
        band_kernel: square kernel of the band (15 for 224² labels, 5 for the 28² labels of stage 1).
        boundary_weight: λ, the weight of the band term (0.5 in the official code; 0 disables it).
        weight: optional per-class weights (see :func:`class_weights`); None = plain means.
        ignore_index: label of unknown pixels, left out of both terms.

    A batch without labelled pixels, or without band pixels, contributes 0 for that term (never NaN) while
    keeping the graph, so ``backward`` always works.
    """

    def __init__(self, band_kernel: int = STAGE2_BAND_KERNEL, boundary_weight: float = 0.5,
                 weight: torch.Tensor | None = None, ignore_index: int = IGNORE):
        super().__init__()
        self.band_kernel = band_kernel
        self.boundary_weight = boundary_weight
        self.ignore_index = ignore_index
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32))

    def terms(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two loss terms (whole image, boundary band) as scalar tensors.

        Args:
            logits: (N, C, H, W) raw scores; computed in float32 whatever their dtype (AMP).
            labels: (N, H, W) integer labels in [0, C) or ``ignore_index``.
        """
        labels = labels.long()
        pixel_loss = F.cross_entropy(logits.float(), labels, ignore_index=self.ignore_index, reduction="none")
        known = labels != self.ignore_index
        if self.weight is None:
            pixel_weight = known.float()
        else:
            pixel_weight = self.weight[labels.clamp(0, len(self.weight) - 1)] * known
        whole = _weighted_mean(pixel_loss, pixel_weight)
        if self.boundary_weight == 0:
            return whole, pixel_loss.sum() * 0
        band = label_band(labels, self.band_kernel, logits.shape[1], self.ignore_index)
        return whole, _weighted_mean(pixel_loss, pixel_weight * band)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The total loss (see :meth:`terms` for the arguments)."""
        whole, band = self.terms(logits, labels)
        return whole + self.boundary_weight * band


def distillation_loss(logits: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
                      ignore_index: int = IGNORE) -> torch.Tensor:
    """Cross-entropy of the model's class probabilities against a teacher's soft ones (background 1 − p, person
    p), averaged over the pixels that have a teacher probability (≥ 0; rows without a map carry -1) and a known
    label; a graph-keeping 0 where there are none.

    Args:
        logits: (N, 2, H, W) raw scores; computed in float32 whatever their dtype (AMP).
        teacher: (N, H, W) teacher person probabilities in [0, 1], -1 where there is no teacher map.
        labels: (N, H, W) the labels, whose unknown pixels stay out here too.
        ignore_index: label of unknown pixels.
    """
    log_probs = F.log_softmax(logits.float(), 1)
    target = teacher.clamp(0, 1)
    pixel_loss = -(target * log_probs[:, 1] + (1 - target) * log_probs[:, 0])
    return _weighted_mean(pixel_loss, ((teacher >= 0) & (labels != ignore_index)).float())


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ w·v / Σ w, or a graph-keeping 0 when Σ w is 0 (no pixels to average)."""
    total = weights.sum()
    return (values * weights).sum() / total.clamp_min(torch.finfo(values.dtype).tiny)
