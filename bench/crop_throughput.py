"""Throughput of `pipeline crop-baidu` on ../shared/data/fullbody: photos/s with 1 and 2 workers, and the share
of the stage's time spent beyond face detection.

Each configuration runs the whole stage (runner, journal, reads, MTCNN, crops, writes) on the same subset into
a fresh folder, interleaved over rounds, and the medians are compared (the machine is shared and noisy).
Configurations: 1 worker with 1 torch thread (the default), 2 workers with one thread each and, with
--two-threads, 1 worker with 2 threads (slow on a busy machine: the threads spin against the load). Timings
include starting the worker processes and loading MTCNN.
Targets: 2 workers >= 1.7x one; time beyond face detection <= 25%.

    .venv/bin/python bench/crop_throughput.py --photos 100 --rounds 3
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from pipeline import faces
from pipeline.crop.stage import CropSettings, crop_photo, run
from sinet_plus.imageio import read_image, read_mask, write_jpeg, write_mask

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


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished children (the pool's workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed_run(inputs: Path, out: Path, workers: int, threads: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one fresh run of the stage, worker start-up included."""
    shutil.rmtree(out, ignore_errors=True)
    cpu = cpu_seconds()
    seconds = run(inputs / "images", inputs / "masks", out, workers=workers, threads=threads).seconds
    return seconds, cpu_seconds() - cpu


def detection_share(inputs: Path, out: Path) -> tuple[float, float]:
    """Share of the stage's wall time and of its CPU time spent beyond face detection, in-process, one thread."""
    spent = {"wall": 0.0, "cpu": 0.0}
    detect = faces.FaceDetector.detect

    def timed_detect(self, image):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return detect(self, image)
        finally:
            spent["wall"] += time.perf_counter() - wall
            spent["cpu"] += time.process_time() - cpu

    faces.FaceDetector.detect = timed_detect
    shutil.rmtree(out, ignore_errors=True)
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        run(inputs / "images", inputs / "masks", out, workers=1, threads=1)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        faces.FaceDetector.detect = detect
    return 1 - spent["wall"] / wall, 1 - spent["cpu"] / cpu


def cpu_breakdown(inputs: Path, out: Path) -> dict[str, float]:
    """CPU milliseconds per photo of each step of process_photo, in-process with one thread."""
    torch.set_num_threads(1)
    detector, settings = faces.FaceDetector(), CropSettings()
    spent = dict.fromkeys(("read photo and mask", "face detection", "rules, crop and resize", "encode and write"), 0.0)
    photos = sorted((inputs / "images").iterdir())
    for photo in photos:
        steps = iter(spent)
        clock = time.process_time()

        def lap() -> None:
            nonlocal clock
            spent[next(steps)] += time.process_time() - clock
            clock = time.process_time()

        image, mask = read_image(photo), read_mask(inputs / "masks" / f"{photo.stem}.png", unknown_value=128)
        lap()
        found = detector.detect(image)
        lap()
        result = crop_photo(image, mask, found, settings)
        lap()
        for crop in result.crops:
            write_jpeg(out / "crop.jpg", crop.image)
            write_mask(out / "crop.png", crop.mask)
        lap()
    return {step: seconds * 1000 / len(photos) for step, seconds in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=100, help="Photos in the subset.")
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved rounds.")
    parser.add_argument("--two-threads", action="store_true", help="Also time 1 worker with 2 torch threads.")
    args = parser.parse_args()
    configurations = {"1 worker, 1 thread": (1, 1), "2 workers, 1 thread each": (2, 1)}
    if args.two_threads:
        configurations["1 worker, 2 threads"] = (1, 2)
    with tempfile.TemporaryDirectory(prefix="crop-bench-") as tmp:
        inputs = subset(Path(tmp) / "inputs", args.photos)
        start_up = subset(Path(tmp) / "start-up", 2)
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in configurations}
        start_ups: dict[str, list[float]] = {name: [] for name in configurations}
        wall_shares, cpu_shares = [], []
        for _ in range(args.rounds):
            for name, (workers, threads) in configurations.items():
                runs[name].append(timed_run(inputs, Path(tmp) / "out", workers, threads))
                start_ups[name].append(timed_run(start_up, Path(tmp) / "out", workers, threads)[0])
            wall_share, cpu_share = detection_share(inputs, Path(tmp) / "out")
            wall_shares.append(wall_share)
            cpu_shares.append(cpu_share)
        breakdown = cpu_breakdown(inputs, Path(tmp))
    print(f"\ncrop-baidu throughput on {args.photos} fullbody photos, {args.rounds} interleaved rounds")
    medians, steady = {}, {}
    for name, values in runs.items():
        rates = [args.photos / wall for wall, _ in values]
        start = statistics.median(start_ups[name])
        medians[name] = statistics.median(rates)
        steady[name] = statistics.median(args.photos / max(wall - start, 1e-9) for wall, _ in values)
        cpu = statistics.median(cpu for _, cpu in values) / args.photos
        print(f"  {name:26s} median {medians[name]:.2f} photos/s (runs: " + ", ".join(f"{r:.2f}" for r in rates)
              + f");  start-up {start:.1f} s, without it {steady[name]:.2f} photos/s;  CPU {cpu * 1000:.0f} ms/photo")
    one, two = "1 worker, 1 thread", "2 workers, 1 thread each"
    print(f"  2 workers / 1 worker: {medians[two] / medians[one]:.2f}x with start-up, "
          f"{steady[two] / steady[one]:.2f}x without   (target >= 1.7x)")
    print(f"  time beyond face detection (1 process, 1 thread, MTCNN loading included): median "
          f"{statistics.median(wall_shares):.1%} of the wall time (runs: " + ", ".join(f"{v:.1%}" for v in wall_shares)
          + f"), {statistics.median(cpu_shares):.1%} of the CPU time   (target <= 25%)")
    print("  CPU per photo by step (1 process, 1 thread): "
          + ", ".join(f"{step} {ms:.1f} ms" for step, ms in breakdown.items()))

if __name__ == "__main__":
    main()
