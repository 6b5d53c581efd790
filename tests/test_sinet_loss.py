"""SINet loss: hand-checked values, the boundary band against OpenCV, class weights, no NaN on empty bands."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sinet.loss import BoundaryAwareLoss, _dilate_max_pool, _dilate_opencv, class_weights, label_band
from sinet_plus.imageio import IGNORE, read_mask


def _opencv_band(label: np.ndarray, kernel: int) -> np.ndarray:
    element = np.ones((kernel, kernel), np.uint8)
    return (cv2.dilate(label, element) - cv2.erode(label, element)) > 0


def _row_example() -> tuple[torch.Tensor, torch.Tensor]:
    """A 1x4 image, labels 0 0 1 1; per-pixel CE ln2, ln(4/3), ln(4/3), ln(8/7)."""
    labels = torch.tensor([[[0, 0, 1, 1]]])
    background = torch.tensor([0.0, math.log(3), 0.0, 0.0])
    person = torch.tensor([0.0, 0.0, math.log(3), math.log(7)])
    return torch.stack([background, person])[None, :, None, :], labels


def test_loss_on_a_hand_checked_example():
    logits, labels = _row_example()
    ce = [math.log(2), math.log(4 / 3), math.log(4 / 3), math.log(8 / 7)]
    # 3x3 kernel on 0 0 1 1: only the two middle pixels see both classes.
    assert label_band(labels, 3).tolist() == [[[False, True, True, False]]]
    plain = BoundaryAwareLoss(band_kernel=3, boundary_weight=0.5)
    whole, band = plain.terms(logits, labels)
    assert whole.item() == pytest.approx(sum(ce) / 4)
    assert band.item() == pytest.approx((ce[1] + ce[2]) / 2)
    assert plain(logits, labels).item() == pytest.approx(sum(ce) / 4 + 0.5 * (ce[1] + ce[2]) / 2)

    weights = torch.tensor([1.0, 3.0])
    weighted = BoundaryAwareLoss(band_kernel=3, boundary_weight=0.5, weight=weights)
    whole, band = weighted.terms(logits, labels)
    assert whole.item() == pytest.approx((ce[0] + ce[1] + 3 * ce[2] + 3 * ce[3]) / 8)
    assert whole.item() == pytest.approx(F.cross_entropy(logits, labels, weight=weights).item())
    assert band.item() == pytest.approx((ce[1] + 3 * ce[2]) / 4)


def test_ignored_pixels_count_nowhere():
    logits, labels = _row_example()
    labels[0, 0, 3] = IGNORE
    whole, band = BoundaryAwareLoss(band_kernel=3).terms(logits, labels)
    assert whole.item() == pytest.approx((math.log(2) + 2 * math.log(4 / 3)) / 3)
    assert band.item() == pytest.approx(math.log(4 / 3))
    # an unknown region inside the background starts no band
    patch = torch.zeros(1, 20, 20, dtype=torch.long)
    patch[0, 5:10, 5:10] = IGNORE
    assert not label_band(patch, 5).any()


@pytest.mark.parametrize("kernel,side", [(15, 224), (5, 28)])
def test_band_equals_opencv_on_real_masks(eg1800_dir, kernel, side):
    labels = [cv2.resize(read_mask(eg1800_dir / "masks" / f"{stem}.png"), (side, side),
                         interpolation=cv2.INTER_NEAREST) for stem in ("00001", "00002", "00010")]
    rng = np.random.default_rng(0)
    labels.append((cv2.GaussianBlur(rng.random((side, side), np.float32), (0, 0), 3) > 0.5).astype(np.uint8))
    labels.append(np.ones((side, side), np.uint8))  # touching every border: the border adds nothing
    batch = torch.from_numpy(np.stack(labels))
    expected = np.stack([_opencv_band(label, kernel) for label in labels])
    assert expected[:4].any(axis=(1, 2)).all() and not expected[4].any()
    assert np.array_equal(label_band(batch, kernel).numpy(), expected)
    for value in (0, 1):
        indicator = (batch == value).to(torch.uint8)
        assert torch.equal(_dilate_max_pool(indicator, kernel), _dilate_opencv(indicator, kernel))


def test_no_nan_without_band_or_labelled_pixels():
    logits = torch.randn(2, 2, 32, 32, requires_grad=True)
    loss = BoundaryAwareLoss(weight=class_weights([3, 1]))
    for fill in (0, 1, IGNORE):
        labels = torch.full((2, 32, 32), fill, dtype=torch.long)
        value = loss(logits, labels)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(logits.grad).all()
        assert loss.terms(logits, labels)[1].item() == 0.0
        logits.grad = None
    assert loss(logits, torch.full((2, 32, 32), IGNORE, dtype=torch.long)).item() == 0.0


def test_class_weights_follow_the_erfnet_formula():
    weights = class_weights([750, 250])
    assert weights.tolist() == pytest.approx([1 / math.log(1.85), 1 / math.log(1.35)])
    assert weights[1] > weights[0]  # the rarer class weighs more
    with pytest.raises(ValueError):
        class_weights([0, 0])
