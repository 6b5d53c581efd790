"""Quality signals of a predicted mask: pure functions of the teacher's probability map.

Each signal looks at one way a prediction goes wrong: hesitation everywhere (``mean_confidence``,
``uncertain_share``), blurry outlines (``boundary_sharpness``), instability under mirroring
(``flip_agreement``), fragments (``components``), a face left out of the person (``face_in_mask``). They
combine into ``priority``, the predicted-failure score that orders the review queue.

How they combine is part of the teacher: ``pipeline build-teacher`` keeps, among the rules of
:data:`PRIORITY_RULES` written down beforehand, the one that best ranks the masks below 0.90 IoU of photos
held out of every member's training (never the validation set), and stores its name in the ensemble file.
A single checkpoint that carries no rule uses :data:`DEFAULT_PRIORITY`. The rules and their figures are in
docs/teacher.md; the other signals stay in the manifest for reviewers and for rules a later teacher may need.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import cv2
import numpy as np

UNCERTAIN = (0.2, 0.8)
"""Probabilities in this open interval count as uncertain."""

MIN_COMPONENT_SHARE = 0.01
"""Person regions smaller than this share of the mask's area are specks, not components."""

EMPTY_SHARE = 0.002
"""A mask covering less than this share of the photo is empty (a missed person)."""


def mean_confidence(prob: np.ndarray) -> float:
    """Mean over pixels of ``max(p, 1 - p)``: 0.5 = a coin toss everywhere, 1 = certain everywhere."""
    return float(np.maximum(prob, 1 - prob).mean())


def uncertain_share(prob: np.ndarray, bounds: tuple[float, float] = UNCERTAIN) -> float:
    """Share of pixels whose probability lies strictly between ``bounds``."""
    return float(((prob > bounds[0]) & (prob < bounds[1])).mean())


def foreground_share(mask: np.ndarray) -> float:
    """Share of pixels in the (boolean) mask."""
    return float(mask.mean())


def components(mask: np.ndarray, min_share: float = MIN_COMPONENT_SHARE) -> int:
    """Connected person regions (8-connectivity) of at least ``min_share`` of the mask's area."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    areas = stats[1:count, cv2.CC_STAT_AREA]
    return int((areas >= max(1.0, min_share * areas.sum())).sum()) if len(areas) else 0


def outline_band(mask: np.ndarray, width: int | None = None) -> np.ndarray:
    """Pixels within ``width`` of the mask's outline (default 1% of the image diagonal, at least 2 px)."""
    if width is None:
        width = max(2, round(0.01 * math.hypot(*mask.shape)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    mask = mask.astype(np.uint8)
    return cv2.dilate(mask, kernel) != cv2.erode(mask, kernel)


def boundary_sharpness(prob: np.ndarray, mask: np.ndarray) -> float:
    """Mean of ``max(p, 1 - p)`` on the outline band: low = blurry edges; NaN when the mask has no outline."""
    band = outline_band(mask)
    return float(np.maximum(prob[band], 1 - prob[band]).mean()) if band.any() else float("nan")


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def expected_iou(prob: np.ndarray) -> float:
    """IoU the mask ``p > 0.5`` would have if each pixel were person with probability ``p`` (soft IoU).

    ``sum(p * m) / sum(p + m - p * m)``: 1 for a crisp map, lower as probability mass sits on the wrong side.
    """
    mask = (prob > 0.5).astype(np.float32)
    union = float((prob + mask - prob * mask).sum())
    return float((prob * mask).sum() / union) if union > 0 else 1.0


def face_in_mask(mask: np.ndarray, box: tuple[float, float, float, float] | None) -> float:
    """Share of the face box ``(x0, y0, x1, y1)`` covered by the mask; NaN when there is no face."""
    if box is None:
        return float("nan")
    height, width = mask.shape
    x0, y0 = max(0, int(math.floor(box[0]))), max(0, int(math.floor(box[1])))
    x1, y1 = min(width, int(math.ceil(box[2]))), min(height, int(math.ceil(box[3])))
    if x1 <= x0 or y1 <= y0:
        return float("nan")
    return float(mask[y0:y1, x0:x1].mean())


def member_agreement(member_probs: Sequence[np.ndarray]) -> float:
    """Mean pairwise IoU of the members' masks (``p > 0.5``): 1 = they all agree; NaN for one member."""
    masks = [prob > 0.5 for prob in member_probs]
    pairs = [mask_iou(a, b) for i, a in enumerate(masks) for b in masks[i + 1:]]
    return float(np.mean(pairs)) if pairs else float("nan")


def _known(value: float, default: float) -> float:
    return default if math.isnan(value) else value


PRIORITY_RULES: dict[str, Callable[[dict[str, float]], float]] = {
    "uncertain_share": lambda s: s["uncertain_share"],
    "disagreement": lambda s: 1 - _known(s["member_agreement"], 1 - s["uncertain_share"]),
    "uncertain_or_disagreement": lambda s: max(s["uncertain_share"], 1 - _known(s["member_agreement"], 1.0)),
    "combined": lambda s: 1 - ((1 - s["uncertain_share"]) * _known(s["member_agreement"], 1.0)
                               * _known(s["flip_agreement"], 1.0)),
}
"""Candidate priority rules (higher = more likely wrong), written down before any ensemble was calibrated;
``pipeline build-teacher`` keeps the one that ranks held-out masks below 0.90 IoU best."""

DEFAULT_PRIORITY = "uncertain_share"
"""The rule of a single checkpoint that carries none (chosen for the first teachers; see docs/teacher.md)."""


def priority(signals: dict[str, float], rule: str = DEFAULT_PRIORITY) -> float:
    """Predicted-failure score in [0, 1] from the signals: 1 for an empty mask (a missed person), else ``rule``."""
    if signals["foreground_share"] < EMPTY_SHARE:
        return 1.0
    return float(min(1.0, max(0.0, PRIORITY_RULES[rule](signals))))


def quality_signals(prob: np.ndarray, mirrored: np.ndarray | None = None,
                    face_box: tuple[float, float, float, float] | None = None,
                    member_probs: Sequence[np.ndarray] = (), rule: str = DEFAULT_PRIORITY) -> dict[str, float]:
    """Every signal and the priority for one prediction.

    Args:
        prob: the photo's person probability per pixel (H x W, float in [0, 1]).
        mirrored: the mirror image's prediction flipped back, or None when it was not run. When given, the
            signals describe the mean of both maps (the delivered mask, flip test-time augmentation) and
            ``flip_agreement`` compares the two; otherwise ``flip_agreement`` is NaN.
        face_box: the largest detected face ``(x0, y0, x1, y1)`` in the same pixels, or None.
        member_probs: each ensemble member's own map (for ``member_agreement``; NaN with fewer than two).
        rule: the priority rule (:data:`PRIORITY_RULES`).
    """
    final = merged(prob, mirrored)
    mask = final > 0.5
    signals = {
        "mean_confidence": mean_confidence(final),
        "uncertain_share": uncertain_share(final),
        "foreground_share": foreground_share(mask),
        "components": components(mask),
        "boundary_sharpness": boundary_sharpness(final, mask),
        "flip_agreement": mask_iou(prob > 0.5, mirrored > 0.5) if mirrored is not None else float("nan"),
        "face_in_mask": face_in_mask(mask, face_box),
        "expected_iou": expected_iou(final),
        "member_agreement": member_agreement(member_probs),
    }
    signals["priority"] = priority(signals, rule)
    return signals


def merged(prob: np.ndarray, mirrored: np.ndarray | None) -> np.ndarray:
    """The delivered probability map: the mean of the photo's and the mirror image's, or the photo's alone."""
    return prob if mirrored is None else (prob + mirrored) / 2
