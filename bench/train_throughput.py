"""Training throughput of both SINet stages on real EG1800 photos through the real DataLoader and augmentation.

Prints images/s per stage (median over interleaved rounds) from :func:`sinet.training_bench.training_throughput`:
full optimizer steps (forward, class-weighted boundary loss, backward, Adam) on batches of 36 (stage 1) and 24
(stage 2). Next to it, the same steps on random tensors (no decoding, no augmentation: how the authors' figures
were taken), so the ratio says what the data pipeline costs even when the machine is busy. Target: >= 30 img/s in
stage 2 with 2 threads; the authors' code does ~21.6 (stage 2) and ~25.7 (stage 1) here on random tensors.

    .venv/bin/pipeline manifest import-eg1800 ../shared/data/eg1800 --out manifests/eg1800.csv
    .venv/bin/python bench/train_throughput.py --manifest manifests/eg1800.csv --threads 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from sinet.loss import BoundaryAwareLoss, class_weights
from sinet.training.config import TrainConfig
from sinet.training.optim import make_optimizer
from sinet.training.steps import fresh_model, train_step
from sinet.training_bench import training_throughput


def random_tensor_throughput(stage: int, batches: int, threads: int) -> float:
    """Images/s of the same training step on random inputs and labels (the authors' way of timing)."""
    torch.set_num_threads(threads)
    config = TrainConfig(manifests=[], out="")
    batch, side = config.batch(stage), 224 // (8 if stage == 1 else 1)
    model = fresh_model(stage, 0)
    optimizer, _ = make_optimizer(model, config, config.epochs(stage))
    criterion = BoundaryAwareLoss(config.band(stage), config.boundary_weight, class_weights([3, 1]))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    images, labels = torch.randn(batch, 3, 224, 224), torch.randint(0, 2, (batch, side, side))
    train_step(model, images, labels, criterion, optimizer, scaler, torch.device("cpu"))
    started = time.perf_counter()
    for _ in range(batches):
        train_step(model, images, labels, criterion, optimizer, scaler, torch.device("cpu"))
    return batches * batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default="manifests/eg1800.csv", help="manifest whose train split is used")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the training step")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: the trainer's "
                                                                 "choice, the cores the step leaves free)")
    parser.add_argument("--batches", type=int, default=6, help="timed batches per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median reported)")
    parser.add_argument("--compile", action="store_true", help="also measure with torch.compile")
    args = parser.parse_args()

    variants = [(stage, kind) for stage in (1, 2)
                for kind in ("real", "random tensors") + (("real, compiled",) if args.compile else ())]
    figures: dict[tuple[int, str], list[float]] = {variant: [] for variant in variants}
    for _ in range(args.rounds):
        for stage, kind in variants:
            figures[(stage, kind)].append(
                random_tensor_throughput(stage, args.batches, args.threads) if kind == "random tensors" else
                training_throughput(args.manifest, stage, batches=args.batches, workers=args.workers,
                                    threads=args.threads, compile=kind.endswith("compiled")))
    load = os.getloadavg()[0]
    workers = "auto" if args.workers is None else args.workers
    print(f"training throughput, {args.threads} threads, {workers} workers, {args.batches} batches x "
          f"{args.rounds} rounds, load average {load:.1f} on {os.cpu_count()} cores")
    for (stage, kind), values in figures.items():
        ratio = statistics.median(values) / statistics.median(figures[(stage, "random tensors")])
        print(f"stage {stage} {kind}: {statistics.median(values):.1f} img/s, {ratio:.2f}x random tensors "
              f"(rounds: {', '.join(f'{v:.1f}' for v in values)})")


if __name__ == "__main__":
    main()
