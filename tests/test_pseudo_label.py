"""pseudo-label with a tiny teacher trained on real photos: rows, files, signals, bad input, resume after SIGKILL."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from teacher_helpers import TINY, bad_photo_folder, invoke, small_manifest

from pipeline.ray_engine import start_local_ray
from pipeline.teacher import signals as sg
from pipeline.teacher.checkpoint import teacher_hash
from sinet_plus import manifest as mf
from sinet_plus.imageio import read_image, read_mask
from sinet_plus.stage import Journal

LABEL = ["--long-side", "96", "--batch-size", "3", "--workers", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, eg1800_dir):
    folder = tmp_path_factory.mktemp("teacher")
    manifest = small_manifest(eg1800_dir, folder / "small.csv")
    result = invoke("train-teacher", "--manifest", manifest, "--out", folder / "t.pt", *TINY, "--max-steps", "3",
                    "--val-limit", "1")
    assert result.exit_code == 0, result.output
    return folder / "t.pt"


@pytest.fixture(scope="module")
def photos(tmp_path_factory, eg1800_dir):
    folder = tmp_path_factory.mktemp("photos")
    return folder, bad_photo_folder(eg1800_dir, folder)


@pytest.fixture(scope="module")
def labelled(teacher, photos, tmp_path_factory):
    """One local run over the photo folder (with soft maps)."""
    out = tmp_path_factory.mktemp("local")
    result = invoke("pseudo-label", photos[0], "--teacher", teacher, "--out", out, *LABEL, "--soft")
    assert result.exit_code == 0, result.output
    return out


def test_rows_files_and_skips(labelled, teacher, photos):
    folder, expected = photos
    manifest = mf.load(labelled / "manifest.csv", check_files=True)
    frame = manifest.frame.set_index("origin_stem")
    assert sorted(frame.index) == sorted(s for s, reason in expected.items() if not reason)
    assert set(frame["source"]) == {"pseudo"} and set(frame["status"]) == {"pending"}
    assert set(frame["teacher"]) == {teacher_hash(teacher)}
    skipped = pd.read_csv(labelled / "skipped.csv", dtype=str).set_index("key")["reason"].to_dict()
    assert skipped == {s: reason for s, reason in expected.items() if reason}
    for stem, row in frame.iterrows():
        photo = read_image(manifest.path(row["image"]))
        mask = read_mask(manifest.path(row["mask"]))
        soft = np.asarray(Image.open(manifest.path(row["soft_mask"])))
        assert mask.shape == soft.shape == photo.shape[:2] == (row["height"], row["width"]), stem
        assert np.array_equal(mask == 1, soft > 127.5), "the mask is the thresholded soft map"
        assert row["foreground_share"] == pytest.approx(sg.foreground_share(mask == 1), abs=1e-6)
        assert 0 <= row["priority"] <= 1 and 0.5 <= row["mean_confidence"] <= 1
        assert 0 <= row["uncertain_share"] <= 1 and 0 <= row["flip_agreement"] <= 1
        assert row["components"] >= 0 and (math.isnan(row["face_in_mask"]) or 0 <= row["face_in_mask"] <= 1)


def test_faces_are_found_on_real_portraits(labelled):
    frame = mf.load(labelled / "manifest.csv").frame.set_index("origin_stem")
    # EG1800 portraits show one large face; MTCNN finds it, so face_in_mask is a number, not empty
    assert frame.loc[["00002", "00005"], "face_in_mask"].notna().all()


def test_manifest_input_keeps_ids_and_provenance(teacher, eg1800_dir, tmp_path):
    source = small_manifest(eg1800_dir, tmp_path / "in" / "small.csv")
    frame = mf.read_manifest(source).frame.head(2).assign(origin=lambda f: f["image"], origin_stem=["a", "b"],
                                                          mask="", status="pending")
    mf.write_manifest(mf.new_rows(frame.to_dict("records")), source)
    result = invoke("pseudo-label", source, "--teacher", teacher, "--out", tmp_path / "out", *LABEL, "--no-faces")
    assert result.exit_code == 0, result.output
    out = mf.load(tmp_path / "out" / "manifest.csv", check_files=True)
    assert list(out.frame["id"]) == ["pseudo/eg1800/00001", "pseudo/eg1800/00003"]
    assert list(out.frame["origin_stem"]) == ["a", "b"]
    assert out.path(out.frame["origin"][0]) == (eg1800_dir / "images" / "00001.jpg").resolve()
    assert out.frame["face_in_mask"].isna().all()
    assert (tmp_path / "out" / "masks" / "eg1800__00001.png").is_file()


def test_rows_with_human_masks_are_checked_not_relabelled(teacher, eg1800_dir, tmp_path):
    source = small_manifest(eg1800_dir, tmp_path / "in" / "small.csv")
    result = invoke("pseudo-label", source, "--teacher", teacher, "--out", tmp_path / "out", *LABEL, "--no-faces")
    assert result.exit_code == 0, result.output
    out = mf.load(tmp_path / "out" / "manifest.csv", check_files=True).frame.set_index("id")
    given = mf.load(source)
    readable = [i for i, image in zip(given.frame["id"], given.paths("image")) if image.is_file()]
    assert sorted(out.index) == sorted(readable)  # same ids and sources: the same samples
    assert set(out["source"]) == {"eg1800"} and set(out["split"]) == {"train", "val"}
    row = out.loc["eg1800/00001"]
    assert mf.load(tmp_path / "out" / "manifest.csv").path(row["mask"]) == given.path(given.frame["mask"][0])
    teacher_mask = read_mask(tmp_path / "out" / row["teacher_mask"])
    human = read_mask(eg1800_dir / "masks" / "00001.png")
    expected = np.logical_and(teacher_mask == 1, human == 1).sum() / np.logical_or(teacher_mask == 1, human == 1).sum()
    assert row["teacher_agreement"] == pytest.approx(expected, abs=1e-6)
    assert row["priority"] == pytest.approx(1 - expected, abs=1e-6)
    assert not out["auto_accept"].any()  # a bare checkpoint carries no calibrated rule: nothing is auto-accepted


def test_machine_made_masks_are_ignored_and_the_rows_labelled_anew(teacher, eg1800_dir, tmp_path):
    """Crops of the teacher's whole-photo masks (a framing aid) must not be kept as training masks."""
    source = small_manifest(eg1800_dir, tmp_path / "in" / "small.csv")
    result = invoke("pseudo-label", source, "--teacher", teacher, "--out", tmp_path / "out", *LABEL, "--no-faces",
                    "--ignore-masks")
    assert result.exit_code == 0, result.output
    written = mf.load(tmp_path / "out" / "manifest.csv", check_files=True)
    out = written.frame.set_index("id")
    assert "pseudo/eg1800/00001" in out.index and set(out["source"]) == {"pseudo"}
    row = out.loc["pseudo/eg1800/00001"]
    assert written.path(row["mask"]).parent == tmp_path / "out" / "masks"  # the teacher's own mask
    assert "teacher_agreement" not in out.columns or out["teacher_agreement"].isna().all()
    again = invoke("pseudo-label", source, "--teacher", teacher, "--out", tmp_path / "out", *LABEL, "--no-faces")
    assert again.exit_code != 0 and "check_masks" in again.output  # checking into that folder would mix both


def test_signals_as_functions_of_the_probability_map():
    crisp = np.zeros((100, 80), np.float32)
    crisp[20:90, 20:60] = 1.0
    blurry = crisp * 0.4 + 0.3  # 0.3 outside, 0.7 inside: same mask, hesitant
    crisp_signals = sg.quality_signals(crisp, crisp, (25, 25, 45, 45))
    blurry_signals = sg.quality_signals(blurry, blurry, (25, 25, 45, 45))
    assert crisp_signals["mean_confidence"] == 1.0 and crisp_signals["uncertain_share"] == 0.0
    assert crisp_signals["expected_iou"] == 1.0 and crisp_signals["priority"] == 0.0
    assert blurry_signals["uncertain_share"] == 1.0 and blurry_signals["boundary_sharpness"] == pytest.approx(0.7)
    assert blurry_signals["priority"] == 1.0 > crisp_signals["priority"]  # priority = share of uncertain pixels
    outside = sg.quality_signals(crisp, crisp, (0, 0, 15, 15))  # the face is not in the person mask
    assert outside["face_in_mask"] == 0.0  # recorded for reviewers; it predicted nothing (AUC ~0.45): not in priority
    shifted = np.roll(crisp, 20, axis=1)  # the mirror pass disagrees
    disagreeing = sg.quality_signals(crisp, shifted)
    assert disagreeing["flip_agreement"] == pytest.approx(20 / 60)
    assert disagreeing["uncertain_share"] == pytest.approx(70 * 40 / 8000), "signals describe the mean of both maps"
    assert disagreeing["priority"] == disagreeing["uncertain_share"]
    two = crisp.copy()
    two[0:5, 0:5] = 1.0  # a speck below 1% of the area does not count
    two[92:100, 65:80] = 1.0
    assert sg.components(two > 0.5) == 2
    assert sg.quality_signals(np.zeros((50, 50), np.float32))["priority"] == 1.0


@pytest.mark.slow
def test_resume_after_sigkill_has_no_duplicates_or_torn_files(teacher, photos, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "pipeline.cli", "pseudo-label", str(photos[0]), "--teacher", str(teacher),
               "--out", str(out), "--long-side", "96", "--batch-size", "1", "--workers", "0", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    journal = out / ".journal.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if journal.exists() and len(journal.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "manifest.csv").exists()
    done = len(Journal(journal).load())  # a torn last line from the kill does not count
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{done} done before" in " ".join(rerun.stderr.split())
    frame = mf.load(out / "manifest.csv", check_files=True).frame
    expected = {s for s, reason in photos[1].items() if not reason}
    assert sorted(frame["origin_stem"]) == sorted(expected) and frame["id"].is_unique
    for path in (out / "masks").iterdir():
        if not path.name.startswith("."):  # a kill may leave an unrenamed temporary file, never a torn mask
            assert read_mask(path).shape[0] > 0


@pytest.mark.slow
def test_ray_engine_matches_the_local_engine(teacher, photos, labelled, tmp_path):
    ray = pytest.importorskip("ray")
    start_local_ray(num_cpus=2)
    try:
        result = invoke("pseudo-label", photos[0], "--teacher", teacher, "--out", tmp_path, *LABEL, "--soft",
                        "--engine", "ray")
    finally:
        ray.shutdown()
    assert result.exit_code == 0, result.output
    local = mf.load(labelled / "manifest.csv").frame.set_index("id")
    distributed = mf.load(tmp_path / "manifest.csv", check_files=True).frame.set_index("id")
    assert sorted(local.index) == sorted(distributed.index)
    assert (pd.read_csv(tmp_path / "skipped.csv", dtype=str).sort_values("key")["reason"].tolist()
            == pd.read_csv(labelled / "skipped.csv", dtype=str).sort_values("key")["reason"].tolist())
    for sample_id in local.index:  # same per-batch function; batches may pad differently, so near-equal
        a = read_mask(labelled / local.loc[sample_id, "mask"]) == 1
        b = read_mask(tmp_path / distributed.loc[sample_id, "mask"]) == 1
        assert (a == b).mean() > 0.98, sample_id
        assert distributed.loc[sample_id, "priority"] == pytest.approx(local.loc[sample_id, "priority"], abs=0.05)


def test_a_rerun_with_other_settings_is_refused(labelled, teacher, photos):
    result = invoke("pseudo-label", photos[0], "--teacher", teacher, "--out", labelled, *LABEL, "--soft",
                    "--long-side", "128")
    assert result.exit_code == 1 and "long_side differ" in " ".join(result.output.split())


def test_ensemble_of_a_deeplab_and_a_sinet_is_calibrated_and_labels(teacher, eg1800_dir, tmp_path):
    from pipeline.teacher.ensemble import load_any_teacher
    from sinet.weights import SINET

    calibration = small_manifest(eg1800_dir, tmp_path / "cal.csv")  # its two 'val' rows stand in for a holdout
    ensemble = tmp_path / "ensemble.pt"
    result = invoke("build-teacher", "--member", teacher, "--member", f"{SINET}@224,256", "--calibrate",
                    calibration, "--split", "val", "--out", ensemble)
    assert result.exit_code == 0, result.output
    loaded = load_any_teacher(ensemble)
    assert [m.kind for m in loaded.members] == ["deeplabv3plus", "sinet"]
    assert loaded.members[1].sizes == (224, 256) and sum(loaded.weights) == pytest.approx(1.0)
    assert 0 < loaded.acceptance["min_agreement"] <= 1 and loaded.priority in sg.PRIORITY_RULES
    assert loaded.card["calibration"]["photos"] == 2
    out = tmp_path / "out"
    folder = tmp_path / "photos"
    folder.mkdir()
    for stem in ("00002", "00005"):
        (folder / f"{stem}.jpg").write_bytes((eg1800_dir / "images" / f"{stem}.jpg").read_bytes())
    result = invoke("pseudo-label", folder, "--out", out, "--teacher", ensemble, "--no-faces", "--batch-size", "2",
                    "--workers", "0", "--device", "cpu")
    assert result.exit_code == 0, result.output
    frame = mf.load(out / "manifest.csv", check_files=True).frame
    assert frame["member_agreement"].between(0, 1).all()
    limit = loaded.acceptance.get("max_priority")
    expected = frame["priority"] <= limit if limit is not None else frame["priority"] < -1
    assert list(frame["auto_accept"].astype(str) == "True") == list(expected)
