"""The resumable state of a run: everything ``last.pt`` holds besides the weights, as one typed object.

:meth:`TrainState.to_dict` gives the plain dict stored under the checkpoint's ``extra`` key (only types that
``torch.load(weights_only=True)`` accepts), with the same keys the trainer has always written, so a ``last.pt``
written by an earlier version resumes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch


@dataclass
class EpochSums:
    """Running sums of the epoch in progress (the metrics row is their means).

    Args:
        loss: whole-image loss times images.
        band_loss: boundary-band loss times images.
        images: images trained on.
        seconds: training seconds.
    """

    loss: float = 0.0
    band_loss: float = 0.0
    images: int = 0
    seconds: float = 0.0


@dataclass
class TrainState:
    """Where a run stands.

    Args:
        config: the run's :class:`~sinet.training.config.TrainConfig` as a dict.
        stage: the stage in progress (1 or 2).
        planned_epochs: the epochs E this stage will run (the time budget may cut it).
        skipped: ``{"id", "split", "reason"}`` of unreadable pairs, left out of training and validation.
        pixel_counts: label pixels per class over the training labels (for the class weights).
        class_weights: the loss's class weights (None without class weighting).
        epoch: epochs finished in this stage.
        step: optimizer steps finished in this epoch.
        global_step: optimizer steps finished in the run, both stages.
        stage_seconds: seconds spent on this stage.
        run_seconds: seconds spent on the run.
        epoch_seconds: seconds of each finished epoch of this stage (the pace of the time budget).
        sums: running sums of the epoch in progress.
        history: one metrics row per finished epoch, both stages (``metrics.csv``).
        best: the selected epoch's row per stage (keys ``"1"``, ``"2"``).
        optimizer: the optimizer's ``state_dict`` (None before the first save of a stage).
        scheduler: the LR scheduler's ``state_dict``.
        scaler: the AMP gradient scaler's ``state_dict``.
        rng: Python, NumPy and torch RNG states (:func:`capture_rng`).
        average: the mean of the weights at the epoch ends averaged so far (``average_epochs``; None before).
        averaged_epochs: how many epoch ends ``average`` holds.
    """

    config: dict[str, Any]
    stage: int
    planned_epochs: int
    skipped: list[dict] = field(default_factory=list)
    pixel_counts: list[int] = field(default_factory=list)
    class_weights: list[float] | None = None
    epoch: int = 0
    step: int = 0
    global_step: int = 0
    stage_seconds: float = 0.0
    run_seconds: float = 0.0
    epoch_seconds: list[float] = field(default_factory=list)
    sums: EpochSums = field(default_factory=EpochSums)
    history: list[dict] = field(default_factory=list)
    best: dict[str, dict] = field(default_factory=dict)
    optimizer: dict | None = None
    scheduler: dict | None = None
    scaler: dict | None = None
    rng: dict | None = None
    average: dict | None = None
    averaged_epochs: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's ``extra`` dict (fields by name; ``sums`` as a dict)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["sums"] = {f.name: getattr(self.sums, f.name) for f in fields(EpochSums)}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        """The state :meth:`to_dict` (or an earlier trainer) wrote."""
        return cls(**{**data, "sums": EpochSums(**data["sums"])})

    def start_stage(self, stage: int, planned_epochs: int) -> None:
        """Reset the per-stage counters for ``stage``; the optimizer state of the last one is dropped."""
        self.stage, self.planned_epochs = stage, planned_epochs
        self.epoch, self.step, self.stage_seconds, self.epoch_seconds, self.sums = 0, 0, 0.0, [], EpochSums()
        self.optimizer = self.scheduler = self.scaler = None


def capture_rng() -> dict:
    """Python's, NumPy's and torch's global RNG states, in types a ``weights_only`` checkpoint accepts."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss]}


def restore_rng(states: dict) -> None:
    """Put back the RNG states :func:`capture_rng` took."""
    torch.set_rng_state(states["torch"])
    random.setstate(_tuples(states["python"]))
    kind, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))


def _tuples(value: Any) -> Any:
    """Lists back to tuples (``random.setstate`` insists on tuples)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value
