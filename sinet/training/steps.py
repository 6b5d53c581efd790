"""The pieces of an epoch: a fresh model per stage, one optimizer step, validation, and the DataLoader's workers."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from rich.console import Console
from torch import nn

from sinet.data import Sample, SegmentationDataset
from sinet.loss import BoundaryAwareLoss, distillation_loss
from sinet.metrics import ScoreBoard
from sinet.model import SINet, SINetEncoder
from sinet.preprocess import Preprocessing
from sinet.training.config import TrainConfig
from sinet.transforms import eval_transform, sample_seed
from sinet_plus.imageio import ImageReadError
from sinet_plus.torch_utils import autocast

console = Console(stderr=True)


def fresh_model(stage: int, seed: int) -> nn.Module:
    """A freshly initialised model of ``stage``: the encoder alone in stage 1, the whole SINet in stage 2
    (PyTorch's default init, seeded per stage)."""
    torch.manual_seed(sample_seed(seed, stage))
    return SINetEncoder() if stage == 1 else SINet()


COMPILE_MIN_STEPS, COMPILE_MIN_SECONDS = 1000, 1200
"""When ``compile`` is None, a stage compiles if it plans at least this many full-batch steps and, under a time
budget, may take at least this many seconds: compiling takes minutes and saves a fraction of a second per step
(docs/training.md), so short runs are faster without it."""


def compiles(config: TrainConfig, steps: int, budget_seconds: float | None, device: torch.device) -> bool:
    """Whether a stage trains through ``torch.compile``: ``config.compile`` when given, else where it pays.

    Args:
        config: the run's options.
        steps: full-batch optimizer steps the stage plans (epochs × steps per epoch).
        budget_seconds: the stage's share of the time budget (:func:`~sinet.training.optim.stage_budget`).
        device: where the training step runs (inductor builds for CPUs and CUDA).
    """
    if config.compile is not None:
        return config.compile
    return (device.type in ("cpu", "cuda") and steps >= COMPILE_MIN_STEPS
            and (budget_seconds is None or budget_seconds >= COMPILE_MIN_SECONDS))


class CompiledOrEager:
    """``torch.compile(model)`` for training steps, falling back for good to ``model`` itself when the first
    compilation fails (no C++ compiler, an operator inductor cannot build); training then goes on eagerly.

    Args:
        model: the model (or its DDP wrapper) to run.
    """

    def __init__(self, model: nn.Module):
        self.model, self.compiled, self.built = model, torch.compile(model, dynamic=False), False

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.built:
            return self.compiled(images)
        try:
            logits = self.compiled(images)
        except Exception as error:  # inductor raises many types; nothing has run yet when compiling fails
            console.print(f"[yellow]torch.compile failed, training eagerly:[/] {type(error).__name__}: {error}")
            self.compiled = self.model
            logits = self.model(images)
        self.built = True
        return logits


def train_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, criterion: BoundaryAwareLoss,
               optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, device: torch.device,
               teacher: torch.Tensor | None = None, distill_weight: float = 0.0) -> tuple[float, float]:
    """One optimizer step; returns the two loss terms (whole image, band) of the batch.

    With ``teacher`` (per-pixel person probabilities, -1 where a sample has none) the step also minimises
    ``distill_weight`` times :func:`~sinet.loss.distillation_loss`.
    """
    images = images.to(device, non_blocking=True)
    labels = labels.to(device, non_blocking=True)
    with autocast(device):
        logits = model(images)
    whole, band = criterion.terms(logits, labels)
    loss = whole + criterion.boundary_weight * band
    if teacher is not None and distill_weight:
        loss = loss + distill_weight * distillation_loss(logits, teacher.to(device, non_blocking=True), labels)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return whole.item(), band.item()


@dataclass
class ValidationSet:
    """Validation photos stretch-resized and normalised once, kept in memory (they never change).

    Args:
        ids: sample ids.
        images: (N, 3, S, S) normalised inputs.
        labels: (N, S/stride, S/stride) labels.
        skipped: ``(id, reason)`` of unreadable pairs.
    """

    ids: list[str]
    images: torch.Tensor
    labels: torch.Tensor
    skipped: list[tuple[str, str]]

    @classmethod
    def load(cls, samples: Sequence[Sample], preprocessing: Preprocessing, label_stride: int) -> ValidationSet:
        dataset = SegmentationDataset(samples, eval_transform(preprocessing.size[0]), preprocessing, label_stride)
        ids, images, labels, skipped = [], [], [], []
        for index, sample in enumerate(samples):
            try:
                image, label = dataset[index]
            except ImageReadError as error:
                skipped.append((sample.key, str(error)))
                continue
            ids.append(sample.key)
            images.append(image)
            labels.append(label)
        side = preprocessing.size[0] // label_stride
        return cls(ids, torch.stack(images) if images else torch.empty(0, 3, *preprocessing.size),
                   torch.stack(labels) if labels else torch.empty(0, side, side, dtype=torch.long), skipped)

    def __len__(self) -> int:
        return len(self.ids)


@torch.inference_mode()
def validate(model: nn.Module, data: ValidationSet, criterion: BoundaryAwareLoss, device: torch.device,
             batch_size: int = 32) -> dict[str, float]:
    """Loss terms (``loss`` whole image, ``band_loss``) and the official figures (``iou``: per-image foreground
    IoU; ``miou``; ``boundary_f1``; ×100) at the stage's label resolution (28² and a 5×5 band in stage 1)."""
    was_training = model.training
    model.eval()
    board, whole, band = ScoreBoard(band_kernel=criterion.band_kernel), 0.0, 0.0
    for start in range(0, len(data), batch_size):
        images = data.images[start:start + batch_size].to(device)
        labels = data.labels[start:start + batch_size].to(device)
        with autocast(device):
            logits = model(images)
        terms = criterion.terms(logits, labels)
        whole += terms[0].item() * len(labels)
        band += terms[1].item() * len(labels)
        for key, pred, gt in zip(data.ids[start:], logits.argmax(1).cpu().numpy(), labels.cpu().numpy()):
            board.add(key, pred, gt)
    model.train(was_training)
    count = max(1, len(data))
    return {"loss": whole / count, "band_loss": band / count, **board.summary()}


def auto_workers(device: torch.device, requested: int | None = None) -> int:
    """DataLoader workers: ``requested``, or when None, on a CPU only the cores the training step leaves free.

    With the decoded photos in memory a sample is cheap, and a worker process competing with the step's OpenMP
    threads for the same cores stalls them at every barrier (docs/training.md has the measurement). On an
    accelerator the host's cores are free for loading.

    Args:
        device: where the training step runs.
        requested: the workers asked for (None = choose).
    """
    if requested is not None:
        return requested
    cores = os.cpu_count() or 1
    if device.type == "cpu":
        return max(0, cores - torch.get_num_threads())
    return min(4, cores)


def init_worker(_: int) -> None:
    """Keep DataLoader workers single-threaded: the cores belong to the training step."""
    import cv2

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
