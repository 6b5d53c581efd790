"""Awkward input gets a recorded reason or a clear refusal, never a traceback or a silent skip: paths no file
system accepts, ids that look like missing values, broken symlinks, photos sharing a stem, a damaged settings
record or journal.

Real photos from ../shared, the real MTCNN, the shipped checkpoints, the real commands.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from pipeline.cli import app as pipeline_app
from pipeline.crop.stage import run as crop
from sinet.cli import app as sinet_app
from sinet.weights import SINET_EG1800
from sinet_plus import manifest as mf
from sinet_plus.imageio import read_image
from sinet_plus.stage import Journal, Outcome, map_items, run_stage

SHIPPED_SINET = SINET_EG1800
SHIPPED_TEACHER = SINET_EG1800  # a SINet checkpoint is a teacher too, and fast


def invoke(app, *args):
    """Run a command in this process; (exit code, output on one line, the exception it ended with)."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, " ".join(result.output.split()), result.exception


def unusable_paths_manifest(eg1800_dir: Path, folder: Path) -> Path:
    """A manifest with a good row, a path holding a NUL byte and a 300-character file name."""
    folder.mkdir(parents=True, exist_ok=True)
    image = os.path.relpath(eg1800_dir / "images" / "00002.jpg", folder)
    mask = os.path.relpath(eg1800_dir / "masks" / "00002.png", folder)
    (folder / "manifest.csv").write_text(
        "id,image,mask,source,split,status\n"
        f"t/good,{image},{mask},t,train,pending\n"
        f"t/nul,images/a\x00b.jpg,{mask},t,train,pending\n"
        f"t/long,images/{'x' * 300}.jpg,{mask},t,train,pending\n", encoding="utf-8")
    return folder / "manifest.csv"


def test_nul_bytes_and_overlong_names_are_reported_not_crashed_on(eg1800_dir, tmp_path):
    manifest = unusable_paths_manifest(eg1800_dir, tmp_path / "data")
    code, output, error = invoke(pipeline_app, "manifest", "validate", manifest)
    assert code == 1 and isinstance(error, SystemExit)
    assert "t/nul (a NUL byte at position 8)" in output and "t/long (a 304-byte name" in output
    db = tmp_path / "review.sqlite"
    code, output, error = invoke(pipeline_app, "queue", manifest, "--db", db, "--root", "/")
    assert code == 1 and isinstance(error, SystemExit) and "NUL byte" in output


def test_ids_that_look_like_missing_values_stay_text(eg1800_dir, tmp_path):
    image = os.path.relpath(eg1800_dir / "images" / "00002.jpg", tmp_path)
    rows = [{"id": name, "image": image, "mask": "", "source": "t", "split": "unlabeled", "status": "pending",
             "origin_stem": name} for name in ("NA", "null", "None", "nan", "00012")]
    mf.write_manifest(mf.new_rows(rows), tmp_path / "manifest.csv")
    manifest = mf.load(tmp_path / "manifest.csv", check_files=True)
    assert manifest.frame["id"].tolist() == ["NA", "null", "None", "nan", "00012"]
    assert manifest.frame["origin_stem"].tolist() == ["NA", "null", "None", "nan", "00012"]
    code, output, _ = invoke(pipeline_app, "manifest", "validate", tmp_path / "manifest.csv")
    assert code == 0, output


@pytest.fixture
def with_broken_link(eg1800_dir, fullbody_dir, tmp_path) -> Path:
    """images/ (two full-body photos and a link to a photo that is gone) and masks/ for them."""
    for kind, suffix in (("images", ".jpg"), ("masks", ".png")):
        (tmp_path / kind).mkdir()
        for stem in ("0001", "0002"):
            os.symlink(fullbody_dir / kind / f"{stem}{suffix}", tmp_path / kind / f"{stem}{suffix}")
        os.symlink(tmp_path / "gone" / f"0003{suffix}", tmp_path / kind / f"0003{suffix}")
    return tmp_path


def broken_link_skip(out: Path) -> str:
    skipped = pd.read_csv(out / "skipped.csv", dtype=str).set_index("key")
    return skipped.loc["0003", "reason"] + " " + skipped.loc["0003", "detail"]


@pytest.mark.slow
def test_a_dangling_symlink_is_a_recorded_skip_in_every_stage(with_broken_link, tmp_path):
    images, masks = with_broken_link / "images", with_broken_link / "masks"
    crop(images, masks, tmp_path / "crop")
    code, output, _ = invoke(pipeline_app, "pseudo-label", images, "--teacher", SHIPPED_TEACHER, "--out",
                             tmp_path / "label", "--long-side", "128", "--workers", "0", "--device", "cpu")
    assert code == 0, output
    code, output, _ = invoke(sinet_app, "predict", "--weights", SHIPPED_SINET, images, "--out", tmp_path / "predict",
                             "--no-cutouts", "--no-overlays")
    assert code == 0, output
    for stage in ("crop", "label", "predict"):
        reason = broken_link_skip(tmp_path / stage)
        assert reason.startswith("unreadable") and "broken symbolic link" in reason and "gone/0003" in reason
    assert len(mf.read_manifest(tmp_path / "predict" / "manifest.csv")) == 2


@pytest.mark.slow
def test_photos_sharing_a_stem_are_skipped_and_the_crop_run_goes_on(fullbody_dir, tmp_path):
    for kind in ("images", "masks"):
        (tmp_path / kind).mkdir()
    for stem in ("0001", "0002"):
        shutil.copy(fullbody_dir / "images" / f"{stem}.jpg", tmp_path / "images")
        shutil.copy(fullbody_dir / "masks" / f"{stem}.png", tmp_path / "masks")
    shutil.copy(fullbody_dir / "images" / "0004.jpg", tmp_path / "images" / "0002.jpeg")  # another photo, one stem
    code, output, _ = invoke(pipeline_app, "crop-baidu", tmp_path / "images", tmp_path / "masks", "--out",
                             tmp_path / "out")
    assert code == 0, output
    crops = mf.read_manifest(tmp_path / "out" / "manifest.csv").frame
    assert set(crops["origin_stem"]) == {"0001"}
    skipped = pd.read_csv(tmp_path / "out" / "skipped.csv", dtype=str)
    duplicates = skipped[skipped["reason"] == "duplicate_key"]
    assert duplicates["key"].tolist() == ["0002", "0002"]
    assert all("0002.jpg" in detail and "0002.jpeg" in detail for detail in duplicates["detail"])


def photo_heights(photos: Path, out: Path):
    """A small real stage: the height of each photo."""
    def height(path: Path) -> Outcome:
        return Outcome(path.stem, rows=[{"id": f"t/{path.stem}", "image": str(path), "mask": "", "source": "t",
                                         "split": "x", "height": read_image(path).shape[0]}])

    return run_stage("heights", [(p.stem, p) for p in sorted(photos.iterdir())],
                     lambda pending: map_items(height, pending), out)


def test_a_damaged_journal_line_is_reported_and_its_item_redone(eg1800_dir, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for stem in ("00002", "00005", "00009"):
        os.symlink(eg1800_dir / "images" / f"{stem}.jpg", photos / f"{stem}.jpg")
    out = tmp_path / "out"
    photo_heights(photos, out)
    journal = out / ".journal.jsonl"
    lines = journal.read_text().splitlines()
    lines[1] = json.dumps({"key": "00005", "rows": "not a list"})
    journal.write_text("\n".join(lines + ['["neither", "a", "record"]', '{"key": "00009", "ro']))
    capsys.readouterr()
    again = photo_heights(photos, out)
    message = capsys.readouterr().err
    assert (again.done_before, again.processed) == (2, 1)
    assert str(journal) in "".join(message.split())  # the console may wrap a long path anywhere
    assert "lines 2, 4, 5 are not journal records" in " ".join(message.split())
    assert len(Journal(journal).load()) == 3 and Journal(journal).unreadable == []


@pytest.mark.slow
def test_a_damaged_settings_record_is_named(fullbody_dir, tmp_path):
    for kind, suffix in (("images", ".jpg"), ("masks", ".png")):
        (tmp_path / kind).mkdir()
        os.symlink(fullbody_dir / kind / f"0001{suffix}", tmp_path / kind / f"0001{suffix}")
    out = tmp_path / "out"
    crop(tmp_path / "images", tmp_path / "masks", out)
    (out / "settings.json").write_text('{"framing": {"face_width_share": 0.2')  # cut short
    code, output, error = invoke(pipeline_app, "crop-baidu", tmp_path / "images", tmp_path / "masks", "--out", out)
    assert code == 1 and isinstance(error, SystemExit)
    assert str(out / "settings.json") in output and "cannot read the settings" in output
