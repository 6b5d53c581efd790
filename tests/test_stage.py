"""The shared stage runner: journaled, resumable, atomic, failures recorded with reasons."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from sinet_plus.stage import Journal, Outcome, map_items, run_stage

STEMS = ("00001", "00002", "00003", "00004", "00005", "00006", "00007", "00009")

THUMBNAIL_STAGE = textwrap.dedent('''
    """A toy stage over real photos: write a thumbnail of each, record its size."""
    import sys, time
    from pathlib import Path
    from sinet_plus.imageio import read_image, write_png
    from sinet_plus.stage import Outcome, map_items, run_stage

    OUT = Path(sys.argv[1])
    DELAY = float(sys.argv[3])

    def thumbnail(path):
        image = read_image(path)
        time.sleep(DELAY)
        small = image[::8, ::8]
        write_png(OUT / "thumbs" / f"{path.stem}.png", small)
        return Outcome(path.stem, rows=[{"id": f"toy/{path.stem}", "image": f"thumbs/{path.stem}.png", "mask": "",
                                          "source": "toy", "split": "train", "height": small.shape[0]}])

    if __name__ == "__main__":
        photos = sorted(Path(sys.argv[2]).iterdir())
        workers = int(sys.argv[4])
        run_stage("thumbs", [(p.stem, p) for p in photos],
                  lambda pending: map_items(thumbnail, pending, workers=workers), OUT)
''')


@pytest.fixture
def photos(eg1800_dir, tmp_path) -> Path:
    """Eight real photos and one truncated one."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for stem in STEMS:
        os.symlink(eg1800_dir / "images" / f"{stem}.jpg", folder / f"{stem}.jpg")
    (folder / "99999.jpg").write_bytes((eg1800_dir / "images" / "00010.jpg").read_bytes()[:3000])
    return folder


def run_script(tmp_path: Path, out: Path, photos: Path, delay: float = 0.0, workers: int = 1) -> subprocess.Popen:
    script = tmp_path / "thumbs_stage.py"
    script.write_text(THUMBNAIL_STAGE)
    return subprocess.Popen([sys.executable, str(script), str(out), str(photos), str(delay), str(workers)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(process: subprocess.Popen) -> str:
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    return err


def test_rows_skips_summary_and_resume(tmp_path, photos):
    out = tmp_path / "out"
    finished(run_script(tmp_path, out, photos))
    manifest = pd.read_csv(out / "manifest.csv", dtype=str)
    assert manifest["id"].tolist() == [f"toy/{stem}" for stem in STEMS]
    assert manifest["status"].unique().tolist() == ["pending"]
    skipped = pd.read_csv(out / "skipped.csv")
    assert skipped["key"].astype(str).tolist() == ["99999"] and skipped["reason"].tolist() == ["unreadable"]
    assert "99999.jpg" in skipped["detail"].iloc[0]
    again = finished(run_script(tmp_path, out, photos))
    assert "9 done before, 0 processed" in again
    assert pd.read_csv(out / "manifest.csv", dtype=str).equals(manifest)


def test_sigkill_midway_then_rerun_equals_unbroken_run(tmp_path, photos):
    unbroken, killed = tmp_path / "unbroken", tmp_path / "killed"
    finished(run_script(tmp_path, unbroken, photos))
    process = run_script(tmp_path, killed, photos, delay=0.4)
    journal = killed / ".journal.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and (not journal.exists() or len(journal.read_text().splitlines()) < 3):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "manifest.csv").exists()
    done_before_kill = len(Journal(journal).load())
    assert 3 <= done_before_kill < 9
    resumed = finished(run_script(tmp_path, killed, photos))
    assert f"{done_before_kill} done before" in resumed
    assert (pd.read_csv(killed / "manifest.csv", dtype=str)
            .equals(pd.read_csv(unbroken / "manifest.csv", dtype=str)))
    assert sorted(p.name for p in (killed / "thumbs").iterdir()) == [f"{stem}.png" for stem in STEMS]


def test_two_workers_write_the_same_manifest(tmp_path, photos):
    one, two = tmp_path / "one", tmp_path / "two"
    finished(run_script(tmp_path, one, photos, workers=1))
    finished(run_script(tmp_path, two, photos, workers=2))
    assert pd.read_csv(one / "manifest.csv").equals(pd.read_csv(two / "manifest.csv"))


def test_unexpected_errors_are_recorded_then_retried(tmp_path):
    calls = []

    def flaky(key):
        calls.append(key)
        if key == "b" and calls.count("b") == 1:
            raise RuntimeError("disk hiccup")
        return Outcome(key, rows=[{"id": f"t/{key}", "image": f"{key}.png", "mask": "", "source": "t", "split": "x"}])

    items = [("a", "a"), ("b", "b"), ("c", "c")]
    first = run_stage("flaky", items, lambda pending: map_items(flaky, pending), tmp_path)
    assert first.skipped == {"error": 1} and first.rows == 2
    assert "RuntimeError: disk hiccup" in pd.read_csv(tmp_path / "skipped.csv")["detail"].iloc[0]
    second = run_stage("flaky", items, lambda pending: map_items(flaky, pending), tmp_path)
    assert (second.done_before, second.processed, second.rows, second.skipped) == (2, 1, 3, {})
    assert calls == ["a", "b", "c", "b"]


def test_items_sharing_a_key_are_skipped_and_the_rest_run(tmp_path):
    def done(key):
        return Outcome(key, rows=[{"id": f"t/{key}", "image": f"{key}.png", "mask": "", "source": "t", "split": "x"}])

    summary = run_stage("dup", [("x", "x"), ("y", "y"), ("x", "x")], lambda pending: map_items(done, pending), tmp_path)
    assert (summary.planned, summary.rows, summary.skipped) == (3, 1, {"duplicate_key": 2})
    skipped = pd.read_csv(tmp_path / "skipped.csv")
    assert skipped["key"].tolist() == ["x", "x"] and "shares the key 'x'" in skipped["detail"][0]


def test_torn_journal_line_is_ignored(tmp_path):
    journal = Journal(tmp_path / ".journal.jsonl")
    journal.append(Outcome("a", rows=[{"id": "t/a"}]))
    with open(journal.path, "a") as handle:
        handle.write('{"key": "b", "rows": [')  # what a kill in the middle of a write leaves
    assert list(journal.load()) == ["a"]
