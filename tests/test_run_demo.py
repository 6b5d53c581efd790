"""A tiny real `pipeline run`: the packaged demo photos through every stage with the shipped weights, offline.

Checks the run ends with a fine-tuned and evaluated SINet, that auto-accepted rows are marked as such in the
curated manifest, that the run report renders in real Chromium with every stage's pictures, and that a second
run skips every step. Tiny budgets (one fine-tuning epoch).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.run.step import read_record
from sinet.weights import SINET_EG1800, TEACHER
from sinet_plus import manifest as mf


def run(config: Path, *options: str) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("pipeline")
    env = dict(os.environ, SINET_SHARED=str(config.parent / "no-shared"), COLUMNS="200")
    return subprocess.run([str(script), "run", str(config), *options], capture_output=True, text=True, env=env,
                          timeout=900)


@pytest.mark.slow
def test_demo_run_end_to_end_then_every_step_current(tmp_path):
    for path in (TEACHER, SINET_EG1800):
        if not path.is_file():
            pytest.skip(f"{path} is absent: the shipped weights are committed with sinet/weights/MODEL_CARD.md")
    config = tmp_path / "demo.toml"
    config.write_text(f"""
[run]
out = "out"
threads = 1
[teacher]
checkpoint = "{TEACHER}"
[[sources]]
name = "demo"
demo = true
masks_from = "{SINET_EG1800}"
[pseudo_label]
long-side = 256
batch-size = 2
workers = 0
[sinet]
init = "{SINET_EG1800}"
val = "curated"
val_split = "train"
[sinet.options]
stage2-epochs = 1
stage2-batch = 2
workers = 0
threads = 1
""")
    first = run(config, "--auto-accept", "0.5")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    out = tmp_path / "out"
    assert "pipeline review --db" in first.stdout and str(out / "review.sqlite") in first.stdout
    curated = mf.load(out / "curated.csv", check_files=True).frame
    assert len(curated) > 0 and set(curated["reviewer"]) == {"auto"}
    assert all("<= threshold 0.5" in reason for reason in curated["reason"])
    assert (curated["priority"].astype(float) <= 0.5).all()
    assert (out / "sinet-plus" / "best.pt").is_file() and (out / "sinet-plus" / "eval.json").is_file()
    assert read_record(out, "sinet-plus")["status"] == "done"
    assert f"run report:         {out / 'report.html'}" in first.stdout
    check_report_in_chromium(out / "report.html", crops=len(curated), photos=3)

    second = run(config, "--auto-accept", "0.5")
    assert second.returncode == 0, second.stdout[-3000:]
    steps = [line for line in second.stdout.splitlines() if "current, skipped" in line]
    assert len(steps) == 9, second.stdout[-3000:]  # photos, masks, crop, label, queue, review, export, train, eval

    waiting = run(config, "--stop-after", "review")  # no threshold: the items above 0.5 wait for people
    left = mf.read_manifest(out / "demo" / "pseudo" / "manifest.csv").frame["priority"].astype(float).gt(0.5).sum()
    assert waiting.returncode == (2 if left else 0), waiting.stdout[-2000:] + waiting.stderr[-2000:]


def check_report_in_chromium(report: Path, crops: int, photos: int) -> None:
    """Open the report page in Debian's Chromium: every section is there and every picture decodes."""
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).is_file():
        pytest.skip("Debian chromium is not installed (make system-deps)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox"])
        page = browser.new_page()
        page.goto(report.as_uri())
        titles = page.locator("h2").all_inner_texts()
        assert titles == ["Crops: faces and crop boxes", "Pseudo-labels by priority", "Review decisions",
                          "Trained SINet beside the accepted masks"]
        assert page.locator("#crops figure").count() == photos
        labels = page.locator("#pseudo-labels figure").count()
        assert labels >= crops
        assert page.locator("#pseudo-labels .badge.accepted").count() == crops
        assert page.locator("#review table").count() >= 2
        captions = " ".join(page.locator("#models figcaption").all_inner_texts())
        assert captions.count("(before): IoU") == crops and captions.count("(after): IoU") == crops
        broken = page.evaluate("[...document.images].filter(i => !i.complete || i.naturalWidth === 0).length")
        assert broken == 0 and page.evaluate("document.images.length") == photos + labels + 4 * crops
        browser.close()
