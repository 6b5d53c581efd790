"""The face-relative 3:4 framing rule, calibrated on how the EG1800 annotators framed portraits.

In the 600x800 EG1800 crops the MTCNN face box is 0.455 of the crop's width (median; p10-p90 0.37-0.61) and the
face centre sits at 0.44 of the crop's height (0.32-0.54); the annotators' boxes are all 3:4 and never leave
the photo (they shifted, never padded or clipped), and because their raw photos were already portraits most
boxes are simply the largest 3:4 window. The rule has two regimes, both sized from the face:

* a photo that is already a portrait (the face is at least ``portrait_face_share`` of the largest 3:4 window's
  width) keeps as much of the photographer's framing as EG1800 allows: the crop is as wide as the photo lets
  it be, but no wider than makes the face ``widest_face_share`` (EG1800's p10) of it;
* any other photo (a full-body shot, where the face is small) is framed at EG1800's median, the face
  ``face_width_share`` of the crop's width.

In both the face centre sits at ``face_center_height`` of the crop's height; the box is then shifted back
inside the photo, and shrunk (keeping 3:4) only when it cannot fit at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.faces import BoxGeometry, Face
from sinet_plus.errors import UserError


@dataclass(frozen=True)
class FramingRule:
    """Where the face goes in the crop.

    Args:
        face_width_share: face box width / crop width for photos that are not portraits yet (EG1800 median 0.455).
        widest_face_share: smallest face box width / crop width for photos that are portraits already
            (EG1800 p10 0.37): their crop grows up to the largest 3:4 window, but not beyond this.
        portrait_face_share: a photo counts as a portrait when the face is at least this share of the largest
            3:4 window's width (raw EG1800 photos: 0.22 and more; full-body photos: about 0.1).
        face_center_height: face centre's distance from the crop's top / crop height (EG1800 median 0.44).
        aspect: crop width / crop height (EG1800: 600/800 = 3:4).
    """

    face_width_share: float = 0.455
    widest_face_share: float = 0.37
    portrait_face_share: float = 0.18
    face_center_height: float = 0.44
    aspect: float = 0.75

    def __post_init__(self):
        shares = (self.face_width_share, self.widest_face_share, self.portrait_face_share)
        if not all(0 < share <= 1 for share in shares) or not 0 <= self.face_center_height <= 1 or self.aspect <= 0:
            raise UserError(f"invalid framing rule {self}")

    def crop_width(self, face_width: float, photo_width: int, photo_height: int) -> float:
        """The crop width the rule wants for a face of ``face_width`` pixels (before fitting the photo)."""
        largest_window = min(photo_width, photo_height * self.aspect)
        if face_width >= self.portrait_face_share * largest_window:
            return min(largest_window, face_width / self.widest_face_share)
        return face_width / self.face_width_share


@dataclass(frozen=True)
class CropBox(BoxGeometry):
    """A crop in photo pixels (end-exclusive) and how it was bent to fit the photo.

    ``shift_x``/``shift_y`` are the pixels the framed box was moved to stay inside; ``clipped`` is true when the
    framed box was larger than the photo allows and had to shrink (keeping the aspect ratio).
    """

    x0: int
    y0: int
    x1: int
    y1: int
    shift_x: int = 0
    shift_y: int = 0
    clipped: bool = False


def frame_face(face: Face, photo_width: int, photo_height: int, rule: FramingRule = FramingRule()) -> CropBox:
    """The crop box the rule gives for ``face`` in a photo of the given size."""
    width = rule.crop_width(face.width, photo_width, photo_height)
    height = width / rule.aspect
    shrink = min(1.0, photo_width / width, photo_height / height)
    width, height = width * shrink, height * shrink
    crop_width = max(1, min(photo_width, round(width)))
    crop_height = max(1, min(photo_height, round(height)))
    center_x, center_y = face.center
    x0 = round(center_x - crop_width / 2)
    y0 = round(center_y - rule.face_center_height * crop_height)
    inside_x0 = min(max(x0, 0), photo_width - crop_width)
    inside_y0 = min(max(y0, 0), photo_height - crop_height)
    return CropBox(inside_x0, inside_y0, inside_x0 + crop_width, inside_y0 + crop_height,
                   shift_x=inside_x0 - x0, shift_y=inside_y0 - y0, clipped=shrink < 1.0)


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
