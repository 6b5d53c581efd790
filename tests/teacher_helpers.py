"""Shared set-up for the teacher and pseudo-label tests: a tiny teacher trained on a few real EG1800 photos."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import app
from sinet_plus import manifest as mf

TINY = ["--encoder", "mobilenet_v2", "--input-size", "96", "--batch-size", "4", "--workers", "0", "--device", "cpu"]
"""Options for a teacher that trains in seconds: the smallest smp encoder we use, 96 px crops."""

TRAIN_STEMS = ["00001", "00003", "00004", "00006", "00007", "00008"]
VAL_STEMS = ["00002", "00005"]


def invoke(*args: str):
    """Run ``pipeline ARGS`` in this process; return typer's result (exit_code, output)."""
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def small_manifest(eg1800_dir: Path, out: Path) -> Path:
    """A manifest of a few real EG1800 photos: six train rows and two val rows."""
    rows = [{"id": f"eg1800/{stem}", "image": os.path.relpath(eg1800_dir / "images" / f"{stem}.jpg", out.parent),
             "mask": os.path.relpath(eg1800_dir / "masks" / f"{stem}.png", out.parent), "source": "eg1800",
             "split": split, "status": "accepted"}
            for stems, split in ((TRAIN_STEMS, "train"), (VAL_STEMS, "val")) for stem in stems]
    mf.write_manifest(mf.new_rows(rows), out)
    return out


def bad_photo_folder(eg1800_dir: Path, folder: Path) -> dict[str, str]:
    """Real photos plus the awkward cases; returns the expected skip reason per stem ('' = labelled)."""
    folder.mkdir(parents=True, exist_ok=True)
    source = eg1800_dir / "images"
    expected = {}
    for stem in ("00002", "00005", "00357"):  # 00357 is a grayscale JPEG in the dataset
        (folder / f"{stem}.jpg").write_bytes((source / f"{stem}.jpg").read_bytes())
        expected[stem] = ""
    photo = Image.open(source / "00009.jpg").convert("RGB")
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.full((photo.height, photo.width), 200, np.uint8)))
    rgba.save(folder / "rgba.png")
    photo.resize((1800, 2400)).save(folder / "huge.jpg", quality=80)
    photo.resize((40, 52)).save(folder / "small.png")
    expected.update(rgba="", huge="", small="")
    photo.resize((6, 8)).save(folder / "tiny.png")
    expected["tiny"] = "too_small"
    (folder / "corrupt.jpg").write_bytes(b"not a jpeg at all" * 20)
    expected["corrupt"] = "unreadable"
    data = (source / "00010.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    expected["truncated"] = "unreadable"
    return expected
