"""The face-relative framing rule: geometry on synthetic faces, and agreement with EG1800's annotators on real
raw photos (faces found by MTCNN)."""

from __future__ import annotations

import random
import statistics

import pandas as pd
import pytest
import torch

from pipeline.crop.framing import FramingRule, box_iou, frame_face
from pipeline.faces import Face, FaceDetector
from sinet_plus.errors import UserError
from sinet_plus.imageio import read_image


def face_at(center_x: float, center_y: float, width: float) -> Face:
    height = width * 1.25
    return Face(center_x - width / 2, center_y - height / 2, center_x + width / 2, center_y + height / 2, 0.99)


def test_full_body_face_is_framed_at_the_eg1800_medians():
    face = face_at(275, 110, 58)
    box = frame_face(face, 550, 830)
    assert box.width == round(58 / 0.455)
    assert abs(box.height - box.width * 4 / 3) <= 1
    assert abs((face.center[1] - box.y0) / box.height - 0.44) < 0.01
    assert abs((face.center[0] - box.x0) / box.width - 0.5) < 0.01
    assert (box.shift_x, box.shift_y, box.clipped) == (0, 0, False)


def test_face_at_the_edge_shifts_the_box_inside_without_padding():
    face = face_at(20, 30, 50)
    box = frame_face(face, 550, 830)
    assert (box.x0, box.y0) == (0, 0)
    assert box.shift_x > 0 and box.shift_y > 0 and not box.clipped
    assert box.width == round(50 / 0.455)


def test_portrait_photo_keeps_the_largest_window_the_face_allows():
    rule = FramingRule()
    face = face_at(380, 420, 290)  # face is 0.38 of the 768 px wide photo: already a portrait
    box = frame_face(face, 768, 1024, rule)
    assert (box.width, box.height) == (768, 1024)
    small = face_at(380, 420, 200)  # 0.26: portrait, but the crop stops where the face is 0.37 of it
    box = frame_face(small, 768, 1024, rule)
    assert box.width == round(200 / rule.widest_face_share)


def test_box_too_large_for_the_photo_is_shrunk_keeping_3_to_4():
    face = face_at(300, 200, 250)
    box = frame_face(face, 600, 400, FramingRule(portrait_face_share=1.0))
    assert box.clipped and box.height == 400 and box.width == 300
    assert 0 <= box.x0 and box.x1 <= 600


def test_every_box_stays_inside_the_photo_and_keeps_3_to_4():
    generator = random.Random(0)
    for _ in range(2000):
        width, height = generator.randint(1, 2000), generator.randint(1, 2000)
        face = face_at(generator.uniform(0, width), generator.uniform(0, height), generator.uniform(1, 600))
        box = frame_face(face, width, height)
        assert 0 <= box.x0 < box.x1 <= width and 0 <= box.y0 < box.y1 <= height
        if min(box.width, box.height) >= 30:
            assert abs(box.width / box.height - 0.75) < 0.03


def test_invalid_rule_is_refused():
    with pytest.raises(UserError, match="invalid framing rule"):
        FramingRule(face_width_share=0)


def test_box_iou():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)


@pytest.mark.slow
def test_crops_agree_with_the_annotators_on_raw_eg1800_photos(eg1800_dir):
    """On real raw photos, MTCNN + the rule land close to the box the EG1800 annotators cut."""
    boxes = pd.read_csv(eg1800_dir / "raw_crop_boxes.csv", dtype={"stem": str}).iloc[::16]
    detector = FaceDetector()
    ious = []
    torch.set_num_threads(1)  # the suite shares two cores
    for row in boxes.itertuples():
        image = read_image(eg1800_dir / "raw" / "images" / f"{row.stem}.jpg")
        face = detector.detect(image)[0]
        box = frame_face(face, image.shape[1], image.shape[0])
        ious.append(box_iou((box.x0, box.y0, box.x1, box.y1), (row.col0, row.row0, row.col1, row.row1)))
    assert len(ious) >= 8
    assert statistics.median(ious) >= 0.85
