"""Training throughput of both SINet stages on real EG1800 photos through the real DataLoader and augmentation.

Prints images/s per stage (median over interleaved rounds) from :func:`sinet.train.training_throughput`: full
optimizer steps (forward, class-weighted boundary loss, backward, Adam) on batches of 36 (stage 1) and 24
(stage 2). Target: >= 30 img/s in stage 2 with 2 threads; the authors' code does ~21.6 (stage 2) and ~25.7
(stage 1) on this machine on random tensors.

    .venv/bin/pipeline manifest import-eg1800 ../shared/data/eg1800 --out manifests/eg1800.csv
    .venv/bin/python bench/train_throughput.py --manifest manifests/eg1800.csv --threads 2 --workers 1
"""

from __future__ import annotations

import argparse
import os
import statistics

from sinet.train import training_throughput


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default="manifests/eg1800.csv", help="manifest whose train split is used")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the training step")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers")
    parser.add_argument("--batches", type=int, default=6, help="timed batches per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median reported)")
    parser.add_argument("--compile", action="store_true", help="also measure with torch.compile")
    args = parser.parse_args()

    variants = [(stage, compiled) for compiled in ([False, True] if args.compile else [False]) for stage in (1, 2)]
    figures: dict[tuple[int, bool], list[float]] = {variant: [] for variant in variants}
    for _ in range(args.rounds):
        for stage, compiled in variants:
            figures[(stage, compiled)].append(training_throughput(
                args.manifest, stage, batches=args.batches, workers=args.workers, threads=args.threads,
                compile=compiled))
    load = os.getloadavg()[0]
    print(f"training throughput, {args.threads} threads, {args.workers} workers, {args.batches} batches x "
          f"{args.rounds} rounds, load average {load:.1f} on {os.cpu_count()} cores")
    for (stage, compiled), values in figures.items():
        print(f"stage {stage}{' compiled' if compiled else ''}: {statistics.median(values):.1f} img/s "
              f"(rounds: {', '.join(f'{v:.1f}' for v in values)})")


if __name__ == "__main__":
    main()
