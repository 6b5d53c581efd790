"""Training throughput of both SINet stages on real EG1800 photos through the real DataLoader and augmentation.

Prints images/s per stage (median over interleaved rounds) from :func:`sinet.training_bench.training_throughput`:
full optimizer steps (forward, class-weighted boundary loss, backward, Adam) on batches of 36 (stage 1) and 24
(stage 2), eager and through ``torch.compile`` (what a long ``sinet train`` runs by default). Next to them, the
eager step on random tensors (no decoding, no augmentation: how the authors' figures were taken), the reference
the real-photo figures are divided by.

``--ddp`` instead compares, on random tensors, one process with ``--threads`` threads against that many
single-threaded processes in DistributedDataParallel over Gloo (what ``torchrun --nproc-per-node N sinet train``
runs; the batch stays per process, as in the trainer).

    .venv/bin/pipeline manifest import-eg1800 ../shared/data/eg1800 --out manifests/eg1800.csv
    .venv/bin/python bench/train_throughput.py --manifest manifests/eg1800.csv --threads 2
    .venv/bin/python bench/train_throughput.py --ddp --threads 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sinet.loss import BoundaryAwareLoss, class_weights
from sinet.training.config import TrainConfig
from sinet.training.optim import make_optimizer
from sinet.training.steps import fresh_model, train_step
from sinet.training_bench import structured_labels, training_throughput

SIDE = 224


def random_tensor_throughput(stage: int, batches: int, threads: int, rank: int = 0, world_size: int = 1) -> float:
    """Images/s of the eager training step on random inputs and blob labels (the authors' way of timing).

    Args:
        stage: 1 or 2.
        batches: timed steps (after one untimed).
        threads: torch threads of this process.
        rank: this process's rank in an initialised Gloo group of ``world_size`` (DDP when > 1).
        world_size: processes training together; the images/s counts all of them.
    """
    torch.set_num_threads(threads)
    config = TrainConfig(manifests=[], out="")
    batch, side = config.batch(stage), SIDE // (8 if stage == 1 else 1)
    model = fresh_model(stage, 0)
    optimizer, _ = make_optimizer(model, config, config.epochs(stage))
    if world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    criterion = BoundaryAwareLoss(config.band(stage), config.boundary_weight, class_weights([3, 1]))
    scaler, device = torch.amp.GradScaler("cpu", enabled=False), torch.device("cpu")
    images, labels = torch.randn(batch, 3, SIDE, SIDE), structured_labels(batch, (side, side), seed=rank)
    train_step(model, images, labels, criterion, optimizer, scaler, device)
    if world_size > 1:
        dist.barrier()
    started = time.perf_counter()
    for _ in range(batches):
        train_step(model, images, labels, criterion, optimizer, scaler, device)
    if world_size > 1:
        dist.barrier()
    return batches * batch * world_size / (time.perf_counter() - started)


def _ddp_worker(rank: int, world_size: int, stage: int, batches: int, port: int, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        speed = random_tensor_throughput(stage, batches, 1, rank, world_size)
        if rank == 0:
            results.put(speed)
    finally:
        dist.destroy_process_group()


def ddp_throughput(stage: int, batches: int, processes: int, port: int = 29571) -> float:
    """Images/s of ``processes`` single-threaded DDP (Gloo) processes training together on random tensors."""
    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    mp.start_processes(_ddp_worker, (processes, stage, batches, port, results), nprocs=processes,
                       start_method="spawn")
    return results.get()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default="manifests/eg1800.csv", help="manifest whose train split is used")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the training step")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: the trainer's "
                                                                 "choice, the cores the step leaves free)")
    parser.add_argument("--batches", type=int, default=6, help="timed batches per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (median reported)")
    parser.add_argument("--no-compile", dest="compile", action="store_false",
                        help="leave out the compiled real-photo steps (each round compiles anew: minutes)")
    parser.add_argument("--ddp", action="store_true", help="compare 1 process x THREADS threads with THREADS "
                                                           "single-threaded DDP processes instead")
    args = parser.parse_args()

    if args.ddp:
        kinds = ("1 process", f"{args.threads} DDP processes")
    else:
        kinds = ("random tensors", "real") + (("real, compiled",) if args.compile else ())
    variants = [(stage, kind) for stage in (1, 2) for kind in kinds]
    figures: dict[tuple[int, str], list[float]] = {variant: [] for variant in variants}
    for _ in range(args.rounds):
        for stage, kind in variants:
            if kind in ("random tensors", "1 process"):
                speed = random_tensor_throughput(stage, args.batches, args.threads)
            elif kind.endswith("DDP processes"):
                speed = ddp_throughput(stage, args.batches, args.threads)
            else:
                speed = training_throughput(args.manifest, stage, batches=args.batches, workers=args.workers,
                                            threads=args.threads, compile=kind.endswith("compiled"))
            figures[(stage, kind)].append(speed)
    workers = "auto" if args.workers is None else args.workers
    print(f"training throughput, {args.threads} threads, {workers} workers, {args.batches} batches x "
          f"{args.rounds} rounds, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for (stage, kind), values in figures.items():
        ratio = statistics.median(values) / statistics.median(figures[(stage, kinds[0])])
        print(f"stage {stage} {kind}: {statistics.median(values):.1f} img/s, {ratio:.2f}x {kinds[0]} "
              f"(rounds: {', '.join(f'{v:.1f}' for v in values)})")


if __name__ == "__main__":
    main()
