"""A stage's "done" means done from these inputs with these settings: reruns on changed inputs, other weights or
another folder redo or refuse, never report stale output as done; and killed runs resume to the unbroken result.

Real photos from ../shared, the real MTCNN, the shipped teacher and SINet checkpoints, real subprocesses.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from pipeline.cli import app as pipeline_app
from pipeline.crop.stage import run as crop
from pipeline.teacher.inference import model_shape
from sinet.cli import app as sinet_app
from sinet.weights import SINET_EG1800
from sinet_plus.imageio import read_image, write_jpeg
from sinet_plus.stage import Outcome, map_items, run_stage

PROJECT = Path(__file__).resolve().parents[1]
SHIPPED_SINET = SINET_EG1800
SHIPPED_TEACHER = SINET_EG1800  # a SINet checkpoint is a teacher too, and fast
LABEL = ["--long-side", "128", "--batch-size", "4", "--workers", "1", "--device", "cpu", "--no-faces"]

pytestmark = pytest.mark.slow


def invoke(app, *args) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, " ".join(result.output.split())


def link(source: Path, folder: Path, stems: dict[str, str], suffix: str = ".jpg") -> Path:
    """``folder/<name><suffix>`` linking to ``source/<stem><suffix>`` for each name → stem."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, stem in stems.items():
        os.symlink(source / f"{stem}{suffix}", folder / f"{name}{suffix}")
    return folder


def test_predict_with_other_weights_is_refused_not_reported_done(official_weights, eg1800_dir, tmp_path):
    photos = link(eg1800_dir / "images", tmp_path / "photos", {"00002": "00002", "00005": "00005"})
    out = tmp_path / "out"
    code, _ = invoke(sinet_app, "predict", "--weights", official_weights, photos, "--out", out, "--no-cutouts",
                     "--no-overlays")
    masks = {p.name: p.read_bytes() for p in (out / "masks").iterdir()}
    code_b, output = invoke(sinet_app, "predict", "--weights", SHIPPED_SINET, photos, "--out", out,
                            "--no-cutouts", "--no-overlays")
    assert code == 0 and code_b == 1
    assert str(out) in output and "weights" in output and "done before" not in output
    assert {p.name: p.read_bytes() for p in (out / "masks").iterdir()} == masks  # A's masks, not called B's


def test_a_replaced_photo_is_redone_and_the_change_named(eg1800_dir, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for stem in ("00002", "00005"):
        shutil.copy(eg1800_dir / "images" / f"{stem}.jpg", photos)

    def height(path: Path) -> Outcome:
        return Outcome(path.stem, rows=[{"id": f"t/{path.stem}", "image": str(path), "mask": "", "source": "t",
                                         "split": "x", "height": read_image(path).shape[0] // 2}])

    def stage():
        items = [(p.stem, p) for p in sorted(photos.iterdir())]
        return run_stage("heights", items, lambda pending: map_items(height, pending), tmp_path / "out")

    stage()
    for photo in photos.iterdir():  # copied again or restored: new times, same bytes
        os.utime(photo, ns=(photo.stat().st_atime_ns, photo.stat().st_mtime_ns + 3_600 * 10**9))
    restored = stage()
    assert (restored.done_before, restored.processed) == (2, 0)
    write_jpeg(photos / "00005.jpg", read_image(eg1800_dir / "images" / "00005.jpg")[:400])  # same name, new photo
    capsys.readouterr()
    again = stage()
    message = " ".join(capsys.readouterr().err.split())
    assert (again.done_before, again.processed) == (1, 1)
    assert "00005" in message and "changed (its bytes)" in message
    assert pd.read_csv(tmp_path / "out" / "manifest.csv")["height"].tolist() == [400, 200]
    photo, info = photos / "00002.jpg", (photos / "00002.jpg").stat()
    data = bytearray(photo.read_bytes())
    data[-3] ^= 0xFF  # an edit that keeps the size, with the time put back
    photo.write_bytes(bytes(data))
    os.utime(photo, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert (stage().done_before, photo.stat().st_size) == (1, info.st_size)
    journal = tmp_path / "out" / ".journal.jsonl"  # as an older version wrote it: a time where the hash is now
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    for record in records:
        record["source"] = {"identity": "0" * 16, "files": [[path, size, 1_700_000_000_000_000_000]
                                                            for path, size, _ in record["source"]["files"]]}
    journal.write_text("".join(json.dumps(record) + "\n" for record in records))
    capsys.readouterr()
    assert stage().processed == 2 and "recorded by modification time" in " ".join(capsys.readouterr().err.split())


@pytest.fixture(scope="module")
def two_folders(fullbody_dir, tmp_path_factory) -> tuple[Path, Path]:
    """Folders A (0001-0003) and B (0002-0004) whose ``0002`` are different photos, with their masks."""
    root = tmp_path_factory.mktemp("two-folders")
    for folder, names in (("a", {"0001": "0001", "0002": "0002", "0003": "0003"}),
                          ("b", {"0002": "0005", "0003": "0003", "0004": "0004"})):
        link(fullbody_dir / "images", root / folder / "images", names)
        link(fullbody_dir / "masks", root / folder / "masks", names, ".png")
    return root / "a", root / "b"


def files(folder: Path, *parts: str) -> dict[str, bytes]:
    return {f"{part}/{p.name}": p.read_bytes() for part in parts if (folder / part).is_dir()
            for p in sorted((folder / part).iterdir())}


def test_crop_rerun_from_another_folder_equals_a_fresh_run(two_folders, tmp_path):
    a, b = two_folders
    out, fresh = tmp_path / "runs" / "out", tmp_path / "runs" / "fresh"
    crop(a / "images", a / "masks", out)
    crop(b / "images", b / "masks", out)
    crop(b / "images", b / "masks", fresh)
    assert (out / "manifest.csv").read_bytes() == (fresh / "manifest.csv").read_bytes()
    made_from_b = files(fresh, "images", "masks")
    assert {name: data for name, data in files(out, "images", "masks").items() if name in made_from_b} == made_from_b


def test_pseudo_label_rerun_from_another_folder_equals_a_fresh_run(two_folders, tmp_path):
    a, b = two_folders
    out, fresh = tmp_path / "runs" / "out", tmp_path / "runs" / "fresh"
    outputs = []
    for folder, target in ((a, out), (b, out), (b, fresh)):
        code, output = invoke(pipeline_app, "pseudo-label", folder / "images", "--teacher", SHIPPED_TEACHER,
                              "--out", target, *LABEL)
        assert code == 0, output
        outputs.append(output)
    assert "2 items" in outputs[1] and "done from other inputs" in outputs[1] and "0002" in outputs[1]
    assert (out / "manifest.csv").read_bytes() == (fresh / "manifest.csv").read_bytes()
    assert files(out, "masks")["masks/0002.png"] == files(fresh, "masks")["masks/0002.png"]


def test_pseudo_label_masks_do_not_depend_on_the_batch(fullbody_dir, tmp_path):
    """Photos of different shapes in one batch: a resumed run batches them differently than an unbroken one."""
    stems = ("0001", "0005", "0009", "0014")  # 550x801-877 photos: 352x512 and 320x512 at the model
    photos = link(fullbody_dir / "images", tmp_path / "photos", {s: s for s in stems})
    assert len({model_shape(*read_image(p).shape[:2], 512) for p in photos.iterdir()}) == 2
    runs = {}
    for batch in ("1", "4"):
        out = tmp_path / f"batch-{batch}"
        code, output = invoke(pipeline_app, "pseudo-label", photos, "--teacher", SHIPPED_TEACHER, "--out", out,
                              *LABEL, "--batch-size", batch, "--long-side", "512")
        assert code == 0, output
        runs[batch] = (out / "manifest.csv").read_bytes(), files(out, "masks")
    assert runs["1"] == runs["4"]


def test_chaos_benchmark_resumes_to_the_unbroken_result(fullbody_dir, tmp_path):
    """A small version of bench/chaos_resume.py: SIGKILL at random moments, resume, compare every file."""
    result = subprocess.run([sys.executable, str(PROJECT / "bench" / "chaos_resume.py"), "--photos", "6",
                             "--kills", "1", "--workers", "2", "--label-options", "--no-faces --long-side 128",
                             "--keep", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if "kills with SIGKILL" in line]
    assert len(lines) == 2 and all(" 0 differences" in line and " 0 workers outlived" in line for line in lines)
