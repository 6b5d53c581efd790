"""`pipeline crop-baidu` end to end with the real MTCNN on real full-body photos, plus every bad input.

One run over a folder that mixes real photos with broken ones is shared by most tests; a second, SIGKILLed
run over the same folder (real subprocess, 2 spawned workers) is resumed and must give the same manifest.
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.crop.rules import COVERAGE_TOO_LARGE, COVERAGE_TOO_SMALL, SelectionRules
from pipeline.crop.stage import CropSettings, crop_photo, run
from pipeline.faces import FaceDetector
from sinet_plus.errors import UserError
from sinet_plus.imageio import read_image, read_mask
from sinet_plus.manifest import new_rows, read_manifest, validate, write_manifest

pytestmark = pytest.mark.slow

PLAIN = ("0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008")
"""Real photos with one clear face each, to give the killed run something to be killed in."""


def png_bytes(width: int, height: int, rows: bytes) -> bytes:
    """A 1-bit grayscale PNG whose compressed pixel data is ``rows`` (made without holding the pixels)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def zero_rows(width: int, height: int) -> bytes:
    """zlib stream of ``height`` 1-bit rows of zeros, each with its filter byte."""
    packer = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)
    return b"".join(packer.compress(row) for _ in range(height)) + packer.flush()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, fullbody_dir) -> Path:
    """Real photos and every kind of bad input, in images/ and masks/."""
    root = tmp_path_factory.mktemp("crop-inputs")
    images, masks = root / "images", root / "masks"
    images.mkdir()
    masks.mkdir()
    for stem in PLAIN + ("0009", "0940", "0042", "0661", "0671"):
        shutil.copy(fullbody_dir / "images" / f"{stem}.jpg", images)
        shutil.copy(fullbody_dir / "masks" / f"{stem}.png", masks)
    photo = Image.open(fullbody_dir / "images" / "0042.jpg")
    mask = Image.open(fullbody_dir / "masks" / "0042.png")
    mask_array = np.asarray(mask)

    def with_mask(stem: str, image: Image.Image, suffix: str = ".png", mask_image: Image.Image = mask, **save):
        image.save(images / f"{stem}{suffix}", **save)
        mask_image.save(masks / f"{stem}.png")

    with_mask("gray", photo.convert("L"))
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.where(np.arange(photo.width) < 40, 0, 255).astype(np.uint8)[None]
                                  .repeat(photo.height, 0)))
    with_mask("rgba", rgba)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 90 degrees counter-clockwise: viewers rotate it clockwise
    with_mask("exif", photo.transpose(Image.Transpose.ROTATE_90), ".jpg", exif=exif, quality=95)
    (images / "corrupt.jpg").write_bytes(os.urandom(5000))
    mask.save(masks / "corrupt.png")
    data = (fullbody_dir / "images" / "0042.jpg").read_bytes()
    (images / "truncated.jpg").write_bytes(data[: len(data) // 3])
    mask.save(masks / "truncated.png")
    with_mask("othersize", photo, ".jpg", mask_image=mask.resize((photo.width // 2, photo.height // 2)))
    photo.save(images / "nomask.jpg")
    with_mask("tiny", Image.new("RGB", (1, 1)), mask_image=Image.new("L", (1, 1), 255))
    (images / "huge.png").write_bytes(png_bytes(20_000, 20_000, zero_rows(20_000, 20_000)))
    Image.new("L", (1, 1), 255).save(masks / "huge.png")
    with_mask("emptymask", photo, ".jpg", mask_image=Image.new("L", photo.size, 0))
    poster = mask_array.copy()
    poster[:260] = 0  # the person's head is not in the mask: its face looks like a poster's
    with_mask("poster", photo, ".jpg", mask_image=Image.fromarray(poster))
    printed = photo.copy()
    head = photo.crop((230, 40, 320, 160))  # the face with some hair, pasted on the chest like a print
    printed.paste(head, (230, 300))
    with_mask("print", printed, ".jpg")
    return root


@pytest.fixture(scope="module")
def crops(inputs) -> Path:
    out = inputs.parent / "unbroken"
    run(inputs / "images", inputs / "masks", out, workers=1)
    return out


def skips(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "skipped.csv", dtype={"key": str, "face": str}, keep_default_na=False)


def reasons(out: Path, key: str) -> set[str]:
    table = skips(out)
    return set(table[table["key"] == key]["reason"])


def test_real_photos_become_eg1800_like_crops(crops):
    manifest = read_manifest(crops / "manifest.csv")
    frame = manifest.frame
    assert validate(manifest, check_files=True) == []
    expected = {f"baidu_crop/{stem}-f0" for stem in PLAIN + ("0042", "0940", "0661", "gray", "rgba", "exif", "print")}
    assert expected | {"baidu_crop/0009-f1", "baidu_crop/0940-f1"} == set(frame["id"])
    assert set(frame["source"]) == {"baidu_crop"} and set(frame["status"]) == {"pending"}
    assert all(i == f"baidu_crop/{stem}-f{i[-1]}" for i, stem in zip(frame["id"], frame["origin_stem"]))
    for row in frame.itertuples():
        origin = read_image(manifest.path(row.origin))
        assert 0 <= row.crop_x0 < row.crop_x1 <= origin.shape[1] and 0 <= row.crop_y0 < row.crop_y1 <= origin.shape[0]
        assert row.crop_x0 <= row.face_x0 < row.face_x1 <= row.crop_x1 + 1
        assert abs((row.crop_x1 - row.crop_x0) * 4 - (row.crop_y1 - row.crop_y0) * 3) <= 4
        assert row.face_prob > 0.9 and 0.2 <= row.person_coverage <= 0.95
        image, mask = read_image(manifest.path(row.image)), read_mask(manifest.path(row.mask))
        assert image.shape == (800, 600, 3) and mask.shape == (800, 600)
        assert set(np.unique(mask)) <= {0, 1}
        stored = np.asarray(Image.open(manifest.path(row.mask)))
        assert set(np.unique(stored)) <= {0, 255}


def test_every_bad_input_is_skipped_with_its_reason(crops):
    assert reasons(crops, "corrupt") == {"unreadable"}
    assert reasons(crops, "truncated") == {"unreadable"}
    assert "truncated" in skips(crops).set_index("key").loc["truncated", "detail"]
    assert reasons(crops, "othersize") == {"mask_size_mismatch"}
    assert reasons(crops, "nomask") == {"missing_mask"}
    assert reasons(crops, "tiny") == {"photo_too_small"}
    assert reasons(crops, "emptymask") == {"empty_mask"}
    assert reasons(crops, "poster") == {"face_outside_mask"}
    assert "face_not_head" in reasons(crops, "print")
    assert {"face_outside_mask", "face_too_small"} <= reasons(crops, "0009")  # bystanders the mask leaves out
    assert reasons(crops, "0661") == {"duplicate_face"}  # MTCNN boxed the eyes a second time
    assert reasons(crops, "0671") == {"no_face"}  # the face is turned away
    assert not (skips(crops)["reason"] == "error").any()


def test_huge_photo_is_refused_by_the_pixel_limit_before_decoding(crops, inputs):
    assert (inputs / "images" / "huge.png").stat().st_size < 1_000_000
    detail = skips(crops).set_index("key").loc["huge", "detail"]
    assert "decompression bomb" in detail  # raised from the header, by PIL or by read_image's own pixel limit


def test_exif_rotation_is_applied_before_detection(crops, inputs):
    assert Image.open(inputs / "images" / "exif.jpg").size == (Image.open(inputs / "images" / "0042.jpg").size[::-1])
    frame = read_manifest(crops / "manifest.csv").frame.set_index("origin_stem")
    columns = ["face_x0", "face_y0", "face_x1", "face_y1", "crop_x0", "crop_y0", "crop_x1", "crop_y1"]
    assert np.abs(frame.loc["exif", columns].to_numpy(float) - frame.loc["0042", columns].to_numpy(float)).max() <= 4


def test_grayscale_photo_stays_gray(crops):
    manifest = read_manifest(crops / "manifest.csv")
    row = manifest.frame.set_index("origin_stem").loc["gray"]
    image = read_image(manifest.path(row["image"])).astype(int)
    assert np.abs(image[..., 0] - image[..., 1]).max() <= 2


def test_rerun_resumes_and_writes_the_same_manifest(crops, inputs):
    before = (crops / "manifest.csv").read_bytes(), (crops / "skipped.csv").read_bytes()
    summary = run(inputs / "images", inputs / "masks", crops, workers=1)
    assert summary.processed == 0 and summary.done_before == summary.planned
    assert ((crops / "manifest.csv").read_bytes(), (crops / "skipped.csv").read_bytes()) == before


def test_other_settings_in_the_same_folder_are_refused(crops, inputs):
    with pytest.raises(UserError, match="other settings"):
        run(inputs / "images", inputs / "masks", crops, CropSettings(output_size=None))


def test_native_size_crop_is_the_origin_pixels(fullbody_dir, tmp_path):
    folder = tmp_path / "in"
    for kind, suffix in (("images", ".jpg"), ("masks", ".png")):
        (folder / kind).mkdir(parents=True)
        shutil.copy(fullbody_dir / kind / f"0042{suffix}", folder / kind)
    run(folder / "images", folder / "masks", tmp_path / "out", CropSettings(output_size=None))
    manifest = read_manifest(tmp_path / "out" / "manifest.csv")
    row = manifest.frame.iloc[0]
    origin_mask = read_mask(fullbody_dir / "masks" / "0042.png")
    written = read_mask(manifest.path(row["mask"]))
    assert np.array_equal(written, origin_mask[row.crop_y0:row.crop_y1, row.crop_x0:row.crop_x1])
    assert (row.width, row.height) == (row.crop_x1 - row.crop_x0, row.crop_y1 - row.crop_y0)


def test_coverage_rules_on_a_real_photo(fullbody_dir):
    image = read_image(fullbody_dir / "images" / "0042.jpg")
    mask = read_mask(fullbody_dir / "masks" / "0042.png")
    faces = FaceDetector().detect(image)
    assert len(crop_photo(image, mask, faces, CropSettings()).crops) == 1
    strict_low = CropSettings(rules=SelectionRules(min_coverage=0.99))
    strict_high = CropSettings(rules=SelectionRules(max_coverage=0.3))
    assert [r.reason for r in crop_photo(image, mask, faces, strict_low).rejections] == [COVERAGE_TOO_SMALL]
    assert [r.reason for r in crop_photo(image, mask, faces, strict_high).rejections] == [COVERAGE_TOO_LARGE]


def test_sigkill_midway_then_rerun_gives_the_unbroken_manifest(crops, inputs):
    out = inputs.parent / "killed"
    command = [str(Path(sys.executable).parent / "pipeline"), "crop-baidu", str(inputs / "images"),
               str(inputs / "masks"), "--out", str(out), "--workers", "2"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    journal = out / ".journal.jsonl"
    deadline = time.monotonic() + 300  # spawning two torch workers is slow on a busy machine
    while time.monotonic() < deadline and process.poll() is None:
        if journal.exists() and len(journal.read_text().splitlines()) >= 4:
            break
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done = len(journal.read_text().splitlines())
    planned = len(list((inputs / "images").iterdir()))
    assert 4 <= done < planned, "the run was not killed midway"
    assert not (out / "manifest.csv").exists()
    for path in (out / "images").glob("[!.]*"):
        read_image(path)  # every visible file is whole
    result = CliRunner().invoke(app, command[1:] + ["--preview", str(out / "sheet.png")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert not list(out.rglob(".*.tmp*"))
    assert (out / "manifest.csv").read_bytes() == (crops / "manifest.csv").read_bytes()
    assert (out / "skipped.csv").read_bytes() == (crops / "skipped.csv").read_bytes()
    assert read_image(out / "sheet.png").shape[0] >= 200


def test_manifest_input_gives_the_same_crop_as_folders(crops, inputs, tmp_path):
    rows = [{"id": "folder/0042", "image": str(inputs / "images" / "0042.jpg"),
             "mask": str(inputs / "masks" / "0042.png"),
             "source": "folder", "split": "train", "status": "accepted"},
            {"id": "folder/nomask", "image": str(inputs / "images" / "nomask.jpg"), "mask": "",
             "source": "folder", "split": "unlabeled", "status": "pending"}]
    frame = new_rows(rows)
    frame[["image", "mask"]] = frame[["image", "mask"]].map(lambda p: os.path.relpath(p, tmp_path) if p else "")
    write_manifest(frame, tmp_path / "input.csv")
    result = CliRunner().invoke(app, ["crop-baidu", "--manifest", str(tmp_path / "input.csv"),
                                      "--out", str(tmp_path / "out")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    made = read_manifest(tmp_path / "out" / "manifest.csv").frame
    unbroken = read_manifest(crops / "manifest.csv").frame.set_index("id")
    assert list(made["id"]) == ["baidu_crop/0042-f0"]
    columns = ["crop_x0", "crop_y0", "crop_x1", "crop_y1", "face_x0", "face_y0", "face_x1", "face_y1"]
    assert made.set_index("id").loc["baidu_crop/0042-f0", columns].tolist() == \
        unbroken.loc["baidu_crop/0042-f0", columns].tolist()
    assert reasons(tmp_path / "out", "nomask") == {"missing_mask"}


def test_command_needs_folders_or_a_manifest(tmp_path):
    result = CliRunner().invoke(app, ["crop-baidu", str(tmp_path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "--manifest" in result.output


def test_ray_engine_gives_the_local_engines_crops_and_skips(crops, inputs):
    ray = pytest.importorskip("ray")
    from pipeline.ray_engine import start_local_ray

    out = inputs.parent / "ray"
    start_local_ray(num_cpus=2)
    try:
        result = CliRunner().invoke(app, ["crop-baidu", str(inputs / "images"), str(inputs / "masks"), "--out",
                                          str(out), "--engine", "ray", "--workers", "2"])
    finally:
        ray.shutdown()
    assert result.exit_code == 0, result.output
    assert (out / "manifest.csv").read_bytes() == (crops / "manifest.csv").read_bytes()
    assert (out / "skipped.csv").read_bytes() == (crops / "skipped.csv").read_bytes()
    for mask in (crops / "masks").glob("*.png"):
        assert (read_mask(out / "masks" / mask.name) == read_mask(mask)).all(), mask.name
