"""Selection rules on synthetic masks and faces: each rule rejects what it should, with its reason."""

from __future__ import annotations

import math

import numpy as np

from pipeline.crop.rules import (
    COVERAGE_TOO_LARGE,
    COVERAGE_TOO_SMALL,
    DUPLICATE_FACE,
    EMPTY_MASK,
    FACE_NOT_HEAD,
    FACE_OUTSIDE_MASK,
    FACE_TOO_SMALL,
    SelectionRules,
    check_coverage,
    check_face,
    check_mask,
    person_share,
)
from pipeline.faces import Face
from sinet_plus.imageio import IGNORE

RULES = SelectionRules()


def person_mask(height=800, width=550, top=60, left=200, right=350):
    """A person standing from row ``top`` down, between columns ``left`` and ``right``."""
    mask = np.zeros((height, width), np.uint8)
    mask[top:, left:right] = 1
    return mask


HEAD = Face(245, 80, 305, 155, 0.99)  # 20 px of hair above the face box


def test_empty_and_unknown_only_masks_are_rejected():
    assert check_mask(np.zeros((10, 10), np.uint8)).reason == EMPTY_MASK
    assert check_mask(np.full((10, 10), IGNORE, np.uint8)).reason == EMPTY_MASK
    assert check_mask(person_mask()) is None


def test_real_head_passes():
    assert check_face([HEAD], 0, person_mask(), RULES) is None


def test_small_face_is_rejected():
    small = Face(260, 80, 280, 105, 0.99)
    assert check_face([small], 0, person_mask(), RULES).reason == FACE_TOO_SMALL


def test_face_outside_the_mask_is_rejected():
    poster = Face(420, 80, 480, 155, 0.99)
    rejection = check_face([HEAD, poster], 1, person_mask(), RULES)
    assert rejection.reason == FACE_OUTSIDE_MASK and rejection.face == 1


def test_face_printed_on_clothing_is_rejected():
    shirt = Face(245, 330, 305, 405, 0.9)  # inside the mask, with the wearer's head far above it
    assert check_face([HEAD, shirt], 1, person_mask(), RULES).reason == FACE_NOT_HEAD


def test_partial_duplicate_of_a_larger_face_is_rejected():
    eyes = Face(250, 95, 300, 130, 0.8)
    assert check_face([HEAD, eyes], 1, person_mask(), RULES).reason == DUPLICATE_FACE


def test_face_on_unknown_pixels_is_not_called_outside():
    mask = person_mask()
    mask[:200] = IGNORE
    assert check_face([HEAD], 0, mask, RULES) is None
    assert math.isnan(person_share(mask[:100]))


def test_coverage_bounds():
    assert check_coverage(0.1, 0, RULES).reason == COVERAGE_TOO_SMALL
    assert check_coverage(math.nan, 0, RULES).reason == COVERAGE_TOO_SMALL
    assert check_coverage(0.99, 0, RULES).reason == COVERAGE_TOO_LARGE
    assert check_coverage(0.6, 0, RULES) is None


def test_person_share_ignores_unknown_pixels():
    mask = np.array([[1, 0, IGNORE, IGNORE]], np.uint8)
    assert person_share(mask) == 0.5
