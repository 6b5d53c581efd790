"""Which faces become crops: each rule either passes a face or rejects it with a reason code and a detail.

Masks use the project's convention (0 background, 1 person, ``IGNORE`` unknown); shares are taken over the
known pixels only, so raw EG1800 masks (unknown outside the annotators' box) are judged on what is labelled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.faces import Face

EMPTY_MASK = "empty_mask"
PHOTO_TOO_SMALL = "photo_too_small"
NO_FACE = "no_face"
FACE_TOO_SMALL = "face_too_small"
FACE_OUTSIDE_MASK = "face_outside_mask"
FACE_NOT_HEAD = "face_not_head"
DUPLICATE_FACE = "duplicate_face"
COVERAGE_TOO_SMALL = "coverage_too_small"
COVERAGE_TOO_LARGE = "coverage_too_large"


@dataclass(frozen=True)
class Rejection:
    """Why a photo (``face`` None) or one of its faces (``face`` = index, largest first) gave no crop."""

    reason: str
    detail: str
    face: int | None = None


@dataclass(frozen=True)
class SelectionRules:
    """Thresholds of the selection rules.

    Args:
        min_face_width: smallest face box width in photo pixels; a smaller face gives a crop too blurry once
            enlarged to 600x800 (a 32 px face makes a 70 px wide crop, enlarged 8.5x).
        min_face_in_mask: smallest share of the face box's labelled pixels that the mask marks as person;
            below it the face is not the masked person's (a poster, a reflection, a bystander).
        max_person_above_face: most face heights the person mask may reach above the face box's top in the
            face's central columns; a real face has only hair or a hat above it, a face printed on clothing
            has the wearer's neck and head.
        max_face_overlap: largest share of a face box that may lie inside a larger detected face's box; above
            it the face is a second, partial detection of that face (MTCNN sometimes boxes the eyes again).
        min_coverage: smallest person share of the crop (EG1800 crops: min 0.22, p1 0.30).
        max_coverage: largest person share of the crop (EG1800: p99 0.92; 1.0 only for an annotation error).
    """

    min_face_width: float = 32.0
    min_face_in_mask: float = 0.5
    max_person_above_face: float = 1.25
    max_face_overlap: float = 0.5
    min_coverage: float = 0.2
    max_coverage: float = 0.95


def person_share(mask: np.ndarray) -> float:
    """Share of ``mask``'s labelled pixels that are person (NaN when none is labelled)."""
    person = int(np.count_nonzero(mask == 1))
    known = person + int(np.count_nonzero(mask == 0))
    return person / known if known else math.nan


def face_pixels(face: Face, height: int, width: int) -> tuple[int, int, int, int]:
    """The face box as integer pixel bounds (x0, y0, x1, y1) clipped to a photo of the given size."""
    x0, y0 = max(0, math.floor(face.x0)), max(0, math.floor(face.y0))
    x1, y1 = min(width, math.ceil(face.x1)), min(height, math.ceil(face.y1))
    return x0, y0, max(x0, x1), max(y0, y1)


def check_mask(mask: np.ndarray) -> Rejection | None:
    """Reject a mask without a single person pixel."""
    if not np.any(mask == 1):
        return Rejection(EMPTY_MASK, "the mask marks no person pixel")
    return None


def check_face(faces: list[Face], index: int, mask: np.ndarray, rules: SelectionRules) -> Rejection | None:
    """Reject face ``index`` of ``faces`` (largest first) if it is too small, a duplicate of a larger face, not
    covered by the person mask, or not the person's head."""
    face = faces[index]
    if face.width < rules.min_face_width:
        return Rejection(FACE_TOO_SMALL, f"face is {face.width:.0f} px wide, below {rules.min_face_width:.0f}", index)
    for larger_index, larger in enumerate(faces[:index]):
        inside = overlap_share(face, larger)
        if inside > rules.max_face_overlap:
            return Rejection(DUPLICATE_FACE, f"{inside:.0%} of the face box lies inside face {larger_index}'s box",
                             index)
    x0, y0, x1, y1 = face_pixels(face, *mask.shape)
    covered = person_share(mask[y0:y1, x0:x1])
    if covered < rules.min_face_in_mask:  # NaN (face box all unknown) passes: nothing says it is wrong
        return Rejection(FACE_OUTSIDE_MASK, f"mask covers {covered:.0%} of the face box, below "
                                            f"{rules.min_face_in_mask:.0%} (poster, print, reflection, bystander?)",
                         index)
    above = person_above(face, mask)
    if above > rules.max_person_above_face:
        return Rejection(FACE_NOT_HEAD, f"the person reaches {above:.1f} face heights above the face, more than "
                                        f"{rules.max_person_above_face:g} (a face printed on clothing?)", index)
    return None


def overlap_share(face: Face, other: Face) -> float:
    """Share of ``face``'s box area that lies inside ``other``'s box."""
    width = max(0.0, min(face.x1, other.x1) - max(face.x0, other.x0))
    height = max(0.0, min(face.y1, other.y1) - max(face.y0, other.y0))
    area = face.width * face.height
    return width * height / area if area > 0 else 0.0


def person_above(face: Face, mask: np.ndarray) -> float:
    """How many face heights the person mask reaches above the face box's top, in its central columns."""
    height, width = mask.shape
    center_x = (face.x0 + face.x1) / 2
    x0, x1 = max(0, round(center_x - face.width / 4)), min(width, round(center_x + face.width / 4) + 1)
    top = min(height, max(0, math.floor(face.y0)))
    rows = np.flatnonzero(np.any(mask[:top, x0:x1] == 1, axis=1))
    if rows.size == 0 or face.height <= 0:
        return 0.0
    return (top - rows[0]) / face.height


def check_coverage(coverage: float, index: int, rules: SelectionRules) -> Rejection | None:
    """Reject a crop whose person share is outside the EG1800-like range."""
    if math.isnan(coverage) or coverage < rules.min_coverage:
        return Rejection(COVERAGE_TOO_SMALL, f"person covers {coverage:.0%} of the crop, below "
                                             f"{rules.min_coverage:.0%}", index)
    if coverage > rules.max_coverage:
        return Rejection(COVERAGE_TOO_LARGE, f"person covers {coverage:.0%} of the crop, above "
                                             f"{rules.max_coverage:.0%}", index)
    return None
