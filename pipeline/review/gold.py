"""Gold items: known-good masks and deliberately damaged copies that measure each annotator's accuracy.

A careful annotator accepts the good mask and rejects every damaged one. The damage is sized from the
person's own extent (the square root of the mask area), so it is plainly visible on a close-up portrait
and on a small full-body figure alike: about 6% of that size for erosion, dilation and the shift, and a
disc covering about 15% of the person for the removed chunk.
"""

from __future__ import annotations

import cv2
import numpy as np

from sinet_plus.imageio import IGNORE

DAMAGES = ("eroded", "dilated", "shifted", "chunk")
"""Kinds of damage, in the order gold photos cycle through them."""


def _extent(mask: np.ndarray) -> float:
    return float(np.sqrt(max(int((mask == 1).sum()), 1)))


def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def damage(mask: np.ndarray, kind: str, seed: int = 0) -> np.ndarray:
    """A damaged copy of a 0/1/IGNORE person mask.

    Args:
        mask: ``uint8`` (H, W) mask, 1 = person.
        kind: one of :data:`DAMAGES`.
        seed: picks the shift direction and the chunk's place, so copies are reproducible.
    """
    person = (mask == 1).astype(np.uint8)
    step = max(3, int(round(0.06 * _extent(mask))))
    rng = np.random.default_rng(seed)
    if kind == "eroded":
        out = cv2.erode(person, _disc(step))
    elif kind == "dilated":
        out = cv2.dilate(person, _disc(step))
    elif kind == "shifted":
        dy, dx = (rng.choice([-1, 1], size=2) * step * 1.5).astype(int)
        out = np.roll(person, (dy, dx), axis=(0, 1))
    elif kind == "chunk":
        ys, xs = np.nonzero(person)
        out = person.copy()
        if len(ys):
            at = rng.integers(len(ys))
            radius = int(round(0.22 * _extent(mask)))
            cv2.circle(out, (int(xs[at]), int(ys[at])), radius, 0, thickness=-1)
    else:
        raise ValueError(f"unknown damage {kind!r} (use one of {', '.join(DAMAGES)})")
    out[mask == IGNORE] = IGNORE
    return out
