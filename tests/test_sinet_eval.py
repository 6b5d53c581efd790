"""Metrics on hand-made masks with known answers, and the `sinet eval` / `sinet predict` commands on real photos."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.importers import import_eg1800
from sinet.cli import app
from sinet.metrics import (
    GRAY_BORDER,
    ScoreBoard,
    boundary_band,
    boundary_f1,
    foreground_iou,
    rotate_pair,
    rotation_angles,
    scaled_band_kernel,
)
from sinet_plus import manifest as mf
from sinet_plus.imageio import IGNORE, read_image, read_mask


def _square(size: int, top: int, left: int, side: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[top:top + side, left:left + side] = 1
    return mask


def test_foreground_iou_of_shifted_squares():
    gt, pred = _square(20, 0, 0, 10), _square(20, 0, 5, 10)  # overlap 10x5 = 50, union 150
    assert foreground_iou(pred, gt) == pytest.approx(50 / 150)
    assert foreground_iou(np.zeros((4, 4)), np.zeros((4, 4), np.uint8)) == 1.0  # empty union
    assert foreground_iou(np.ones((4, 4)), np.zeros((4, 4), np.uint8)) == 0.0


def test_ignored_pixels_do_not_count():
    gt, pred = _square(20, 0, 0, 10), _square(20, 0, 5, 10)
    gt[:, 10:] = IGNORE  # hides the 50 false-positive pixels right of the gt square
    assert foreground_iou(pred, gt) == pytest.approx(50 / 100)


def test_boundary_band_and_f1():
    gt = _square(40, 10, 10, 20)
    band = boundary_band(gt, kernel=5)  # 2 px each side of the outline: 24² - 16² pixels
    assert band.sum() == 24 * 24 - 16 * 16
    assert boundary_f1(gt, gt, kernel=5) == 1.0
    assert boundary_f1(np.zeros_like(gt), gt, kernel=5) == 0.0  # recall 0, precision 1 (nothing predicted)
    # predicting the square grown by 1 px: inside the band, precision = 20²-16² over 22²-16², recall = 1
    grown = _square(40, 9, 9, 22)
    precision = (20 * 20 - 16 * 16) / (22 * 22 - 16 * 16)
    assert boundary_f1(grown, gt, kernel=5) == pytest.approx(2 * precision / (precision + 1))


def test_scoreboard_miou_uses_the_set_wide_confusion_matrix():
    board = ScoreBoard()
    gt, pred = _square(20, 0, 0, 10), _square(20, 0, 5, 10)
    board.add("a", pred, gt)
    board.add("b", gt, gt)
    # person: intersection 50 + 100 over union 150 + 100; background (400 px each): 250 + 300 over 350 + 300
    expected = (150 / 250 + 550 / 650) / 2
    summary = board.summary()
    assert summary["miou"] == pytest.approx(100 * expected)
    assert summary["iou"] == pytest.approx(100 * (50 / 150 + 1) / 2)
    assert summary["images"] == 2
    with pytest.raises(ValueError, match="differ in size"):
        board.add("c", pred[:10], gt)


def test_band_kernel_scales_with_the_photo():
    assert scaled_band_kernel(15, (224, 224), (224, 224)) == 15
    assert scaled_band_kernel(15, (800, 600), (224, 224)) == 45  # 7 px x 3.125 -> 22 px each side


def test_rotation_turns_photo_and_mask_together_with_a_gray_border():
    image = np.zeros((31, 31, 3), np.uint8)
    image[:, :15] = 255
    mask = (image[..., 0] > 0).astype(np.uint8)
    turned, turned_mask = rotate_pair(image, mask, 90)
    assert np.array_equal(turned_mask, np.rot90(mask))
    assert np.array_equal(turned[..., 0] > 127, turned_mask > 0)
    corner_image, corner_mask = rotate_pair(image, mask, 45)
    assert tuple(corner_image[0, 0]) == (GRAY_BORDER,) * 3 and corner_mask[0, 0] == 0
    angles = rotation_angles(500, 25, seed=3)
    assert np.abs(angles).max() <= 25 and np.abs(angles).max() > 20
    assert np.array_equal(angles, rotation_angles(500, 25, seed=3))


@pytest.fixture(scope="module")
def val_manifest(eg1800_dir, tmp_path_factory):
    """A manifest of three real EG1800 val photos."""
    out = tmp_path_factory.mktemp("manifest") / "val3.csv"
    manifest = mf.select(import_eg1800(eg1800_dir, out).manifest, split="val")
    mf.write_manifest(mf.Manifest(manifest.frame.head(3), manifest.root), out)
    return out


@pytest.mark.slow
def test_sinet_eval_writes_the_json_report(official_weights, val_manifest, tmp_path):
    report_path = tmp_path / "eval.json"
    result = CliRunner().invoke(app, ["eval", "--weights", str(official_weights), "--manifest", str(val_manifest),
                                      "--split", "val", "--json", str(report_path), "--rotations"])
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert report["images"] == 3 and report["source"] == "official"
    assert report["iou"] > 90 and 80 < report["miou"] <= 100 and 50 < report["boundary_f1"] <= 100
    assert report["full_resolution"]["iou"] > 90
    assert set(report["rotations"]) == {"25", "45", "75", "90"}
    assert all(scores["images"] == 3 and scores["iou"] != report["iou"] for scores in report["rotations"].values())
    sheet = read_image(tmp_path / "eval_worst.png")
    assert sheet.shape == (224, 4 * 2 * 224, 3)


def test_sinet_eval_without_weights_scores_the_shipped_model(val_manifest, tmp_path):
    from sinet.weights import SINET

    report_path = tmp_path / "eval.json"
    result = CliRunner().invoke(app, ["eval", "--manifest", str(val_manifest), "--split", "val", "--json",
                                      str(report_path)])
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert report["weights"] == str(SINET) and report["source"] == "sinet-plus"
    assert {"iou", "miou", "boundary_f1"} <= set(report) and report["iou"] > 80


@pytest.mark.slow
def test_sinet_predict_writes_masks_cutouts_overlays_and_resumes(official_weights, eg1800_dir, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for stem in ("00002", "00357"):  # 00357 is a grayscale JPEG
        (photos / f"{stem}.jpg").write_bytes((eg1800_dir / "images" / f"{stem}.jpg").read_bytes())
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    command = ["predict", "--weights", str(official_weights), str(photos), "--out", str(out)]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    mask = read_mask(out / "masks" / "00002.png")
    gt = read_mask(eg1800_dir / "masks" / "00002.png")
    assert mask.shape == gt.shape and foreground_iou(mask, gt) > 0.9
    assert read_image(out / "overlays" / "00357.jpg").shape == (800, 600, 3)
    assert (out / "cutouts" / "00002.png").exists()
    rows = mf.read_manifest(out / "manifest.csv")
    assert sorted(rows.frame["id"]) == ["predict/00002", "predict/00357"]
    assert "broken" in (out / "skipped.csv").read_text()
    rerun = CliRunner().invoke(app, command)
    assert rerun.exit_code == 0 and "3 done before, 0 processed" in rerun.output.replace("\n", " ")


@pytest.mark.slow
def test_sinet_eval_skips_a_broken_photo_with_its_reason(official_weights, eg1800_dir, tmp_path):
    (tmp_path / "good.jpg").write_bytes((eg1800_dir / "images" / "00002.jpg").read_bytes())
    (tmp_path / "broken.jpg").write_bytes((eg1800_dir / "images" / "00002.jpg").read_bytes()[:2000])
    mask = (eg1800_dir / "masks" / "00002.png").read_bytes()
    (tmp_path / "good.png").write_bytes(mask)
    (tmp_path / "broken.png").write_bytes(mask)
    rows = [{"id": f"t/{stem}", "image": f"{stem}.jpg", "mask": f"{stem}.png", "source": "t", "split": "val",
             "status": "accepted"} for stem in ("good", "broken")]
    mf.write_manifest(mf.Manifest(mf.new_rows(rows), tmp_path), tmp_path / "m.csv")
    result = CliRunner().invoke(app, ["eval", "--weights", str(official_weights), "--manifest",
                                      str(tmp_path / "m.csv"), "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["images"] == 1 and report["iou"] > 90
    assert [s["key"] for s in report["skipped"]] == ["t/broken"] and "broken.jpg" in report["skipped"][0]["reason"]
