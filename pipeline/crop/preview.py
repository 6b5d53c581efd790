"""Contact sheet of random crops with their masks overlaid: the quickest way to see what the stage made."""

from __future__ import annotations

import os
import random

import cv2
import numpy as np

from sinet_plus.imageio import read_image, read_mask, write_png
from sinet_plus.manifest import Manifest

TILE = (150, 200)
"""Width and height of one crop on the sheet."""


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The photo with person pixels tinted red, unknown pixels greyed and the mask's outline drawn."""
    tinted = image.astype(np.float32)
    person = mask == 1
    tinted[person] = (1 - alpha) * tinted[person] + alpha * np.array([255, 0, 0], np.float32)
    unknown = mask > 1
    tinted[unknown] = 0.5 * tinted[unknown] + 64
    result = tinted.astype(np.uint8)
    contours, _ = cv2.findContours(person.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(result, contours, -1, (255, 255, 0), max(1, image.shape[1] // 200))
    return result


def contact_sheet(manifest: Manifest, count: int = 24, columns: int = 6, seed: int = 0) -> np.ndarray:
    """A grid of up to ``count`` randomly chosen crops (fixed ``seed``) with masks overlaid and ids written."""
    frame = manifest.frame
    chosen = sorted(random.Random(seed).sample(range(len(frame)), min(count, len(frame))))
    rows = max(1, -(-len(chosen) // columns))
    sheet = np.full((rows * TILE[1], columns * TILE[0], 3), 255, np.uint8)
    for slot, position in enumerate(chosen):
        row = frame.iloc[position]
        image = read_image(manifest.path(row["image"]))
        mask = read_mask(manifest.path(row["mask"]), unknown_value=128)
        tile = cv2.resize(overlay(image, mask), TILE, interpolation=cv2.INTER_AREA)
        cv2.putText(tile, str(row["id"]).split("/")[-1], (4, TILE[1] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (255, 255, 255), 1, cv2.LINE_AA)
        top, left = (slot // columns) * TILE[1], (slot % columns) * TILE[0]
        sheet[top:top + TILE[1], left:left + TILE[0]] = tile
    return sheet


def write_contact_sheet(manifest: Manifest, path: str | os.PathLike, count: int = 24, seed: int = 0) -> int:
    """Write the contact sheet PNG atomically; returns how many crops it shows."""
    write_png(path, contact_sheet(manifest, count=count, seed=seed))
    return min(count, len(manifest))
