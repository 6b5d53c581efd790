"""Training speed: the training half of ``sinet bench`` and of ``bench/train_throughput.py``.

:func:`training_throughput` times whole steps on real photos through the real DataLoader and augmentation;
:func:`training_contenders` and :func:`training_speed` time the step alone (one fixed batch) for our model and
the authors' module side by side, interleaved in one process.
"""

from __future__ import annotations

import copy
import math
import os
import random
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader

from sinet.data import EpochSampler, SegmentationDataset, manifest_samples
from sinet.loss import BoundaryAwareLoss, class_weights
from sinet.preprocess import PRESETS
from sinet.recipe import STAGE1_LABEL_STRIDE
from sinet.training.config import TrainConfig
from sinet.training.optim import make_optimizer
from sinet.training.steps import auto_workers, fresh_model, init_worker, train_step
from sinet.transforms import train_transform
from sinet_plus.errors import UserError
from sinet_plus.processes import DiesWithParent

console = Console(stderr=True)


def training_throughput(manifest: str | os.PathLike, stage: int, batches: int = 10, workers: int | None = None,
                        batch_size: int | None = None, threads: int | None = 2, split: str = "train",
                        compile: bool = False) -> float:
    """Training images per second of ``stage`` on real photos through the real DataLoader and augmentation.

    Times ``batches`` full optimizer steps (loss, backward, Adam) after one warm-up batch, with the official batch
    size of the stage unless given.

    Args:
        manifest: a manifest whose ``split`` rows (accepted, with masks) supply the photos.
        stage: 1 (encoder on 28² labels) or 2 (full SINet at 224²).
        batches: timed batches.
        workers: DataLoader workers (None: :func:`~sinet.training.steps.auto_workers` chooses).
        batch_size: batch size (default 36 in stage 1, 24 in stage 2).
        threads: torch threads of the training step (None = leave torch's setting).
        split: split to draw photos from.
        compile: ``torch.compile`` the model first (the compilation, in the warm-up batch, is not timed).
    """
    config = TrainConfig(manifests=[str(manifest)], out="", workers=workers)
    batch = batch_size or config.batch(stage)
    if threads:
        torch.set_num_threads(threads)
    samples = manifest_samples([manifest], split)
    if not samples:
        raise UserError(f"{manifest}: no accepted rows with masks in split {split!r}")
    samples = (samples * math.ceil((batches + 1) * batch / len(samples)))[:(batches + 1) * batch]
    dataset = SegmentationDataset(samples, train_transform(config.augmentation), PRESETS[config.preprocessing],
                                  STAGE1_LABEL_STRIDE if stage == 1 else 1)
    dataset.preload(config.cache_bytes)
    loader = DataLoader(dataset, batch_size=batch, sampler=EpochSampler(len(dataset), 0, stage, 0),
                        num_workers=auto_workers(torch.device("cpu"), workers),
                        worker_init_fn=DiesWithParent(init_worker))
    device = torch.device("cpu")
    model = fresh_model(stage, 0)
    criterion = BoundaryAwareLoss(config.band(stage), config.boundary_weight, class_weights([3, 1]))
    optimizer, _ = make_optimizer(model, config, config.epochs(stage))
    model = torch.compile(model, dynamic=False) if compile else model
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    batches_iter = iter(loader)
    train_step(model, *next(batches_iter), criterion, optimizer, scaler, device)
    started, images = time.perf_counter(), 0
    for images_batch, labels in batches_iter:
        train_step(model, images_batch, labels, criterion, optimizer, scaler, device)
        images += len(labels)
    return images / (time.perf_counter() - started)


def structured_labels(batch: int, size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """Random 0/1 masks made of smooth blobs (so the boundary band is as thin as on photos), ``(batch, H, W)``.

    Args:
        batch: number of masks.
        size: ``(height, width)``.
        seed: random seed.
    """
    coarse = torch.rand(batch, 1, 7, 7, generator=torch.Generator().manual_seed(seed))
    return (F.interpolate(coarse, size=size, mode="bilinear") > 0.5).long()[:, 0]


def training_contenders(official: nn.Module | None, batch: int, size: tuple[int, int], compile_model: bool
                        ) -> dict[str, Callable[[], object]]:
    """One stage-2 training step (forward, boundary-aware loss, backward, Adam) of each model, on the same batch.

    Every contender runs the trainer's own step, loss and optimizer settings; only the model differs.

    Args:
        official: the authors' module (None: left out).
        batch: images per step.
        size: ``(height, width)`` of the images.
        compile_model: include our model through ``torch.compile`` (compiled here, not timed).
    """
    config = TrainConfig(manifests=[], out="")
    images, labels = torch.randn(batch, 3, *size), structured_labels(batch, size)
    criterion = BoundaryAwareLoss(config.band(2), config.boundary_weight, class_weights([3, 1]))
    scaler, device = torch.amp.GradScaler("cpu", enabled=False), torch.device("cpu")

    def step(model: nn.Module) -> Callable[[], object]:
        optimizer, _ = make_optimizer(model.train(), config, config.epochs(2))
        return lambda: train_step(model, images, labels, criterion, optimizer, scaler, device)

    contenders = {"sinet eager": step(fresh_model(2, 0))}
    if official is not None:
        contenders["official"] = step(copy.deepcopy(official))
    if compile_model:
        compiled = step(torch.compile(fresh_model(2, 0), dynamic=False))
        try:
            compiled()  # compiles now (a minute or more), so a failure drops this contender instead of the bench
            contenders["sinet compile"] = compiled
        except Exception as error:  # inductor raises many types (compiler missing, codegen failure)
            console.print(f"[yellow]torch.compile unavailable for training, left out:[/] {type(error).__name__}")
    return contenders


def training_speed(contenders: dict[str, Callable[[], object]], batch: int, rounds: int, steps: int
                   ) -> dict[str, float]:
    """Images per second of each training contender: median over interleaved rounds of ``steps`` steps.

    Args:
        contenders: name → callable doing one training step.
        batch: images per step.
        rounds: interleaved rounds.
        steps: timed steps per contender per round (after one untimed warm-up step each).
    """
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for run in contenders.values():
        run()
    order = list(contenders)
    shuffle = random.Random(0).shuffle
    for _ in range(rounds):
        shuffle(order)
        for name in order:
            begin = time.perf_counter()
            for _ in range(steps):
                contenders[name]()
            samples[name].append(steps * batch / (time.perf_counter() - begin))
    return {name: statistics.median(values) for name, values in samples.items()}
