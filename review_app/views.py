"""How a photo and its mask are shown: overlay, contour, cut-out or the bare photo, as ready-made JPEG bytes.

Rendering is pure numpy/OpenCV. :func:`render` caches its results per process (all browser sessions
share them), and :func:`prefetch` renders the next items in a background thread, so a decision never
waits for an image to be drawn or encoded.
"""

from __future__ import annotations

import base64
import functools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from sinet_plus.imageio import read_pair

VIEWS = ("overlay", "contour", "cutout", "photo")
"""The ways a mask can be shown; the app's V key cycles through them."""

THUMB_SCALE = 0.4
"""Size of grid thumbnails relative to the photo (600x800 -> 240x320)."""

OUTLINE = (255, 220, 0)
TINT = np.array([40, 90, 255], dtype=np.float32)


def outline(mask: np.ndarray, thickness: int) -> np.ndarray:
    """Boolean map of the person's boundary, ``thickness`` pixels wide."""
    person = (mask == 1).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * thickness + 1, 2 * thickness + 1))
    return cv2.morphologyEx(person, cv2.MORPH_GRADIENT, kernel) > 0


def draw(photo: np.ndarray, mask: np.ndarray, view: str) -> np.ndarray:
    """The RGB picture of one view.

    Args:
        photo: ``uint8`` RGB (H, W, 3).
        mask: ``uint8`` (H, W), 1 = person (0 and IGNORE count as background).
        view: one of :data:`VIEWS`. ``overlay`` tints the background blue and outlines the person,
            ``contour`` only outlines, ``cutout`` shows the person on grey.
    """
    person = mask == 1
    if view == "photo":
        return photo
    if view == "cutout":
        out = np.full_like(photo, 128)
        out[person] = photo[person]
        return out
    out = photo.copy()
    if view == "overlay":
        background = ~person
        out[background] = (0.45 * photo[background] + 0.55 * TINT).astype(np.uint8)
    elif view != "contour":
        raise ValueError(f"unknown view {view!r} (use one of {', '.join(VIEWS)})")
    out[outline(mask, max(1, round(photo.shape[1] / 300)))] = OUTLINE
    return out


def encode_jpeg(picture: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of an RGB picture (OpenCV's encoder: a few milliseconds for 600x800)."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()


@functools.lru_cache(maxsize=512)
def render(image: Path, mask: Path, view: str, thumb: bool = False) -> str:
    """A ``data:`` URI of one view of a photo and its mask (cached; raises ``ImageReadError``).

    Args:
        image, mask: the files (already checked to lie under the data root).
        view: one of :data:`VIEWS`.
        thumb: a small copy for the grid.
    """
    photo, labels = read_pair(image, mask)
    picture = draw(photo, labels, view)
    if thumb:
        size = (round(photo.shape[1] * THUMB_SCALE), round(photo.shape[0] * THUMB_SCALE))
        picture = cv2.resize(picture, size, interpolation=cv2.INTER_AREA)
    data = encode_jpeg(picture, 80 if thumb else 85)
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="review-prefetch")


def prefetch(pairs: list[tuple[Path, Path]], view: str, thumb: bool = False) -> None:
    """Render the given photo/mask pairs in the background so they are in :func:`render`'s cache."""
    for image, mask in pairs:
        _worker.submit(_quiet_render, image, mask, view, thumb)


def _quiet_render(image: Path, mask: Path, view: str, thumb: bool) -> None:
    try:
        render(image, mask, view, thumb)
    except Exception:  # a broken file is reported when the item is shown, not here
        pass
