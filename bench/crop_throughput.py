"""Throughput of `pipeline crop-baidu` on ../shared/data/fullbody: photos/s with 1 and 2 workers, and the share
of the stage's time spent beyond face detection.

Each configuration runs the whole stage (runner, journal, reads, MTCNN, crops, writes) on the same subset into
a fresh folder, interleaved over rounds, and the medians are compared (the machine is shared and noisy).
Configurations: 1 worker with torch's default threads (what `--workers 1` does), 1 worker with one thread, and
2 workers (one thread each). Timings include starting the worker processes and loading MTCNN.
Targets: 2 workers >= 1.7x one; time beyond face detection <= 25%.

    .venv/bin/python bench/crop_throughput.py --photos 100 --rounds 3
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from pipeline.crop import faces
from pipeline.crop.stage import run

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fullbody"


def subset(folder: Path, count: int) -> Path:
    """A folder of symlinks to ``count`` photos and masks spread over the whole set."""
    photos = sorted((DATA / "images").glob("*.jpg"))
    step = max(1, len(photos) // count)
    chosen = photos[::step][:count]
    for kind in ("images", "masks"):
        (folder / kind).mkdir(parents=True)
    for photo in chosen:
        (folder / "images" / photo.name).symlink_to(photo)
        mask = DATA / "masks" / f"{photo.stem}.png"
        (folder / "masks" / mask.name).symlink_to(mask)
    return folder


def timed_run(inputs: Path, out: Path, workers: int, threads: int | None) -> float:
    """Photos per second of one fresh run of the stage."""
    shutil.rmtree(out, ignore_errors=True)
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        summary = run(inputs / "images", inputs / "masks", out, workers=workers)
    finally:
        torch.set_num_threads(previous)
    return summary.items_per_second


def detection_share(inputs: Path, out: Path) -> tuple[float, float]:
    """(seconds in face detection, seconds of the whole stage) for one in-process, one-thread run."""
    spent = [0.0]
    detect = faces.FaceDetector.detect

    def timed_detect(self, image):
        start = time.perf_counter()
        try:
            return detect(self, image)
        finally:
            spent[0] += time.perf_counter() - start

    faces.FaceDetector.detect = timed_detect
    shutil.rmtree(out, ignore_errors=True)
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        run(inputs / "images", inputs / "masks", out, workers=1)
        total = time.perf_counter() - start
    finally:
        faces.FaceDetector.detect = detect
    return spent[0], total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=100, help="Photos in the subset.")
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved rounds.")
    args = parser.parse_args()
    configurations = {"1 worker, default threads": (1, None), "1 worker, 1 thread": (1, 1),
                      "2 workers, 1 thread each": (2, None)}
    with tempfile.TemporaryDirectory(prefix="crop-bench-") as tmp:
        inputs = subset(Path(tmp) / "inputs", args.photos)
        rates: dict[str, list[float]] = {name: [] for name in configurations}
        detect_seconds, stage_seconds = [], []
        for _ in range(args.rounds):
            for name, (workers, threads) in configurations.items():
                rates[name].append(timed_run(inputs, Path(tmp) / "out", workers, threads))
            detected, total = detection_share(inputs, Path(tmp) / "out")
            detect_seconds.append(detected)
            stage_seconds.append(total)
    print(f"\ncrop-baidu throughput on {args.photos} fullbody photos, {args.rounds} interleaved rounds "
          f"(torch default threads here: {torch.get_num_threads()})")
    medians = {name: statistics.median(values) for name, values in rates.items()}
    for name, values in rates.items():
        print(f"  {name:28s} median {medians[name]:.2f} photos/s   runs: " + ", ".join(f"{v:.2f}" for v in values))
    two = medians["2 workers, 1 thread each"]
    print(f"  2 workers / 1 worker (default threads): {two / medians['1 worker, default threads']:.2f}x;"
          f"  / 1 worker (1 thread): {two / medians['1 worker, 1 thread']:.2f}x   (target >= 1.7x)")
    shares = [1 - d / t for d, t in zip(detect_seconds, stage_seconds)]
    print(f"  time beyond face detection (1 process, 1 thread): median {statistics.median(shares):.1%} "
          f"of the stage's wall time; runs: " + ", ".join(f"{s:.1%}" for s in shares) + "   (target <= 25%)")
    print(f"  face detection per photo: median {statistics.median(detect_seconds) / args.photos * 1000:.0f} ms")


if __name__ == "__main__":
    main()
