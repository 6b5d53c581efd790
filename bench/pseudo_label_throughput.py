"""pseudo-label images/s against the bare model forward at the same batch and input size (target >= 0.9x).

Rounds alternate, in one process: the bare forward (``Predictor.probabilities`` on a ready tensor of the
photos' model shape: no reading, no MTCNN, no resizing back, no signals, no PNGs), then the whole stage on the
local engine, then on the Ray engine (``start_local_ray(num_cpus=...)`` once, before timing; actor start-up is
timed in "overall"; "steady" counts the batches between the first and the last, so start-up and the local
engine's one-batch overlap at the end are left out — for Ray still an upper bound, as outputs reach the driver in
blocks). Each stage round writes to a fresh folder. Ratios are to the bare forward of the same round, then the
median over rounds. Run it with and without ``--no-mirror``: with the mirror pass the bare forward also runs on the
mirrored batch.

    OMP_NUM_THREADS=1 .venv/bin/python bench/pseudo_label_throughput.py --teacher runs/teacher/mnv2-256.pt
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.ray_engine import start_local_ray
from pipeline.teacher.checkpoint import load_teacher
from pipeline.teacher.inference import Predictor, resize_for_model
from pipeline.teacher.pseudo_label import Labeler, LabelOptions, plan_items, run_local, run_on_ray
from sinet_plus.imageio import list_photos, read_image
from sinet_plus.stage import run_stage

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def photo_folder(source: Path, count: int, folder: Path) -> Path:
    """Symlinks to the first ``count`` photos of ``source`` (nothing is copied)."""
    folder.mkdir(parents=True, exist_ok=True)
    for photo in list_photos(source)[:count]:
        link = folder / photo.name
        if not link.exists():
            link.symlink_to(photo)
    return folder


def bare_forward(predictor: Predictor, photos: list[Path], long_side: int, batch_size: int, mirror: bool) -> float:
    """Images per second of the model alone on batches shaped like the photos' model inputs."""
    resized = [resize_for_model(read_image(p), long_side) for p in photos]
    batches = [predictor.batch_tensor(resized[i:i + batch_size]) for i in range(0, len(resized), batch_size)]
    predictor.probabilities(batches[0], mirror)  # warm-up: first call of a shape builds kernels
    started = time.perf_counter()
    for batch in batches:
        predictor.probabilities(batch, mirror)
    return len(photos) / (time.perf_counter() - started)


def stage(folder: Path, teacher: Path, out: Path, options: LabelOptions, engine: str) -> tuple[float, float]:
    """Images per second of the whole stage: overall (model loading / actor start-up included) and steady
    (the middle batches: between the first batch's outcomes and the last but one batch's)."""
    shutil.rmtree(out, ignore_errors=True)
    items = plan_items(folder)
    stamps: list[float] = []
    started = time.perf_counter()
    if engine == "ray":
        outcomes = run_on_ray(teacher, out, items, options)
    else:
        outcomes = run_local(Labeler(teacher, out, options), items, options)

    def execute(pending):
        for outcome in outcomes:
            stamps.append(time.perf_counter())
            yield outcome

    run_stage(f"pseudo-label ({engine})", items, execute, out)
    overall = len(items) / (stamps[-1] - started)
    batch = options.batch_size
    if len(stamps) < 3 * batch:
        return overall, overall
    # photos of the middle batches over the time they took: the first batch carries start-up, and with the local
    # engine's overlap each batch's outcomes arrive one forward late, so the last batch is left out as well
    steady = (len(stamps) - 2 * batch) / (stamps[-batch - 1] - stamps[batch - 1])
    return overall, steady


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path, required=True)
    parser.add_argument("--photos", type=Path, default=DATA / "eg1800" / "images")
    parser.add_argument("--count", type=int, default=48)
    parser.add_argument("--long-side", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-mirror", dest="mirror", action="store_false")
    parser.add_argument("--engines", default="local,ray")
    parser.add_argument("--ray-cpus", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/pl_throughput"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = photo_folder(args.photos, args.count, args.out / "photos")
    photos = list_photos(folder)
    teacher = load_teacher(args.teacher)
    predictor = Predictor(teacher.model, teacher.config, torch.device("cpu"))
    options = LabelOptions(long_side=args.long_side, mirror=args.mirror, batch_size=args.batch_size,
                           workers=args.workers, device="cpu")
    engines = args.engines.split(",")
    if "ray" in engines:
        start_local_ray(num_cpus=args.ray_cpus)
    speeds: dict[str, list[float]] = {"bare": []}
    ratios: dict[str, list[float]] = {}
    for round_index in range(args.rounds):
        for engine in engines:
            bare = bare_forward(predictor, photos, args.long_side, args.batch_size, args.mirror)
            overall, steady = stage(folder, args.teacher, args.out / f"{engine}-{round_index}", options, engine)
            speeds["bare"].append(bare)
            for kind, speed in (("overall", overall), ("steady", steady)):
                speeds.setdefault(f"{engine} {kind}", []).append(speed)
                ratios.setdefault(f"{engine} {kind}", []).append(speed / bare)
            print(f"round {round_index + 1} {engine}: bare forward {bare:.3f} img/s, stage {overall:.3f} img/s "
                  f"overall, {steady:.3f} img/s steady; ratios {overall / bare:.2f}, {steady / bare:.2f}", flush=True)
    shape = resize_for_model(np.zeros((800, 600, 3), np.uint8), args.long_side).shape[:2]
    print(f"\n{len(photos)} photos, batch {args.batch_size}, model input {shape[0]}x{shape[1]} "
          f"({teacher.config.encoder}), mirror {'on' if args.mirror else 'off'}, {args.threads} torch thread(s), "
          f"{args.workers} loader(s), {args.rounds} rounds")
    for name, values in speeds.items():
        ratio = (f", median ratio to the bare forward of its round {statistics.median(ratios[name]):.2f} "
                 "(target >= 0.9)" if name in ratios else "")
        print(f"  {name:>14}: median {statistics.median(values):.3f} img/s{ratio}")

if __name__ == "__main__":
    main()
