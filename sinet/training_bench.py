"""Training throughput on real photos: the training half of ``sinet bench`` and of ``bench/train_throughput.py``."""

from __future__ import annotations

import math
import os
import time

import torch
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
                        num_workers=auto_workers(torch.device("cpu"), workers), worker_init_fn=init_worker)
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
