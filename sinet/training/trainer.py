"""The trainer: runs (or resumes) the stages of a :class:`~sinet.training.config.TrainConfig` in its ``out`` folder.

Files in the run folder: ``last.pt`` (the resume point: weights plus :class:`~sinet.training.state.TrainState`),
``stage1_best.pt`` and ``best.pt`` (the selected epochs, which ``sinet eval --weights`` reads), ``averaged.pt``
(with ``average_epochs``: the mean of the last epochs' weights), ``config.json``, ``metrics.csv``, ``curves.png``,
``skipped.csv``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader

from sinet.checkpoint import load_checkpoint, save_checkpoint
from sinet.data import EpochSampler, SegmentationDataset, manifest_samples, scan_samples, source_groups, teacher_maps
from sinet.loss import BoundaryAwareLoss, class_weights
from sinet.preprocess import PRESETS
from sinet.recipe import STAGE1_LABEL_STRIDE
from sinet.training.averaging import add_to_average, averaged_model
from sinet.training.config import TrainConfig
from sinet.training.distributed import Distributed
from sinet.training.optim import make_optimizer, milestones, plan_epochs, stage_budget, step_schedule
from sinet.training.report import epoch_line, write_reports
from sinet.training.state import EpochSums, TrainState, capture_rng, restore_rng
from sinet.training.steps import (
    CompiledOrEager,
    ValidationSet,
    auto_workers,
    compiles,
    fresh_model,
    init_worker,
    train_step,
    validate,
)
from sinet.transforms import train_transform
from sinet_plus.errors import PathError, UserError
from sinet_plus.files import write_text_atomic
from sinet_plus.processes import DiesWithParent
from sinet_plus.torch_utils import pick_device

console = Console(stderr=True)

STATE_FILE, STAGE1_BEST, BEST, AVERAGED = "last.pt", "stage1_best.pt", "best.pt", "averaged.pt"
PROGRESS_SECONDS = 60
"""A progress line within an epoch at most this often (epochs take minutes on a CPU)."""


class Trainer:
    """Runs (or resumes) the two stages of :class:`TrainConfig` in its ``out`` folder.

    Args:
        config: the run's options.
        resume: continue from ``out/last.pt`` (its options win, apart from :attr:`TrainConfig.RUNTIME` given
            as not None).
        after_step: called with the state after every optimizer step (after any checkpoint due at that step);
            tests use it to kill the run at a chosen step.
    """

    def __init__(self, config: TrainConfig, resume: bool = False,
                 after_step: Callable[[TrainState], None] | None = None):
        self.out = Path(config.out)
        checkpoint = None
        if resume:
            checkpoint = load_checkpoint(self.out / STATE_FILE)
            saved = TrainConfig.from_dict(checkpoint["extra"]["config"])
            config = dataclasses.replace(saved, **{k: getattr(config, k) for k in TrainConfig.RUNTIME
                                                   if getattr(config, k) is not None})
        self.config, self.after_step = config, after_step
        if config.threads:
            torch.set_num_threads(config.threads)
        torch.set_flush_denormal(True)
        self.device = pick_device(config.device)
        self.dist = Distributed.from_environment(self.device.type)
        if self.dist.world_size > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        self.preprocessing = dataclasses.replace(PRESETS[config.preprocessing], size=(config.size, config.size))
        self.augmentation = dataclasses.replace(config.augmentation, size=config.size)
        saved_state = TrainState.from_dict(checkpoint["extra"]) if checkpoint else None
        self._prepare_data(saved_state)
        self.state = saved_state or self._fresh_state()
        self._enter_stage(checkpoint["state_dict"] if checkpoint else None)
        if saved_state:
            restore_rng(saved_state.rng)

    # -- set-up --

    def _prepare_data(self, saved: TrainState | None) -> None:
        config = self.config
        samples = manifest_samples(config.manifests, config.split)
        sources = ", ".join(map(str, config.manifests))
        if config.distill_weight:
            maps = teacher_maps(config.teacher_maps or [])
            samples = [dataclasses.replace(s, soft=maps.get(s.key, s.soft)) for s in samples]
            if not any(s.soft for s in samples):
                raise UserError(f"--distill-weight needs teacher maps, but no training row of {sources} has a "
                                "soft_mask (give --teacher-maps)")
        else:
            samples = [dataclasses.replace(s, soft=None) for s in samples]
        if saved is None:
            scan = scan_samples(samples)
            self.skipped = [{"id": i, "split": config.split, "reason": r} for i, r in scan.problems]
            self.pixel_counts = scan.pixel_counts.tolist()
        else:
            self.skipped, self.pixel_counts = saved.skipped, saved.pixel_counts
        dropped = {row["id"] for row in self.skipped if row["split"] == config.split}
        self.samples = [s for s in samples if s.key not in dropped]
        if not self.samples:
            raise UserError(f"no readable accepted rows with masks in split {config.split!r} of {sources}")
        self.groups = None
        if config.source_shares:
            try:
                self.groups = source_groups(self.samples, config.source_shares)
            except ValueError as error:
                raise UserError(f"--source-share: {error} (training rows of {sources})") from None
            console.print("each epoch's samples by source: " + ", ".join(
                f"{self.samples[rows[0]].source} {share:.0%} ({len(rows)} rows)" for rows, share in self.groups))
        if config.class_weighting and not sum(self.pixel_counts):
            raise UserError(f"no labelled pixel in the masks of split {config.split!r} of {sources}: class "
                            "weights need some (or train with --no-class-weighting)")
        self.val_samples = manifest_samples(config.val_manifests or config.manifests, config.val_split)
        self.weights = class_weights(self.pixel_counts) if config.class_weighting else None
        self.decoded: dict = {}  # decoded training pairs, filled once and shared by both stages' datasets

    def _fresh_state(self) -> TrainState:
        config = self.config
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.out / "config.json", json.dumps(config.to_dict(), indent=2) + "\n")
        first = config.stages[0]
        return TrainState(config=config.to_dict(), stage=first, planned_epochs=config.epochs(first),
                          skipped=self.skipped, pixel_counts=self.pixel_counts,
                          class_weights=None if self.weights is None else self.weights.tolist())

    def _enter_stage(self, state_dict: dict | None) -> None:
        """Build the stage's model, loss, data and optimizer; load ``state_dict`` and optimizer state if resuming."""
        config, stage = self.config, self.state.stage
        stride = STAGE1_LABEL_STRIDE if stage == 1 else 1
        model = fresh_model(stage, config.seed)
        if state_dict is not None:
            model.load_state_dict(state_dict)
        elif stage == 2 and config.init:
            model.load_state_dict(self._checkpoint_weights(Path(config.init), "SINet"))
        elif stage == 2:
            model.encoder.load_state_dict(self._stage1_encoder())
        self.raw_model = self.model = model.to(self.device)
        if self.dist.world_size > 1:
            self.model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.criterion = BoundaryAwareLoss(config.band(stage), config.boundary_weight, self.weights).to(self.device)
        self.train_set = SegmentationDataset(self.samples, train_transform(self.augmentation), self.preprocessing,
                                             stride, decoded=self.decoded, soft_targets=config.distill_weight > 0)
        self.train_set.preload(config.cache_bytes)
        steps = (self.state.planned_epochs - self.state.epoch) * (config.epoch_size or len(self.train_set)) // (
            config.batch(stage) * self.dist.world_size)
        self.compiled = CompiledOrEager(self.model) if compiles(config, steps, stage_budget(config, self.state),
                                                                 self.device) else self.model
        self.val_set = ValidationSet.load(self.val_samples, self.preprocessing, stride) if self.dist.main else None
        if self.val_set is not None:
            known = {row["id"] for row in self.skipped}
            self.skipped += [{"id": i, "split": config.val_split, "reason": r}
                             for i, r in self.val_set.skipped if i not in known]
        self.optimizer, self.scheduler = make_optimizer(self.raw_model, config, self.state.planned_epochs)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.amp and self.device.type == "cuda")
        if state_dict is not None and self.state.optimizer is not None:
            self.optimizer.load_state_dict(self.state.optimizer)
            self.scheduler.load_state_dict(self.state.scheduler)
            self.scaler.load_state_dict(self.state.scaler)

    def _stage1_encoder(self) -> dict:
        path = self.out / STAGE1_BEST if 1 in self.config.stages else Path(self.config.encoder or "")
        if not path.is_file():
            raise PathError(path, "stage 2 needs a stage-1 checkpoint (run stage 1, or give --encoder or --init)")
        return self._checkpoint_weights(path, "SINetEncoder")

    @staticmethod
    def _checkpoint_weights(path: Path, arch: str) -> dict:
        """The state dict of our checkpoint ``path``, which must hold an ``arch`` model."""
        checkpoint = load_checkpoint(path)
        if checkpoint["arch"] != arch:
            raise PathError(path, f"a {arch} checkpoint is needed, found {checkpoint['arch']}")
        return checkpoint["state_dict"]

    # -- saving --

    def _save_state(self) -> None:
        if not self.dist.main:
            return
        state = self.state
        state.optimizer, state.scheduler = self.optimizer.state_dict(), self.scheduler.state_dict()
        state.scaler, state.rng, state.skipped = self.scaler.state_dict(), capture_rng(), self.skipped
        save_checkpoint(self.out / STATE_FILE, self.raw_model, self.preprocessing, state.to_dict())

    # -- the loop --

    def run(self) -> dict:
        """Train the remaining epochs of every stage; returns the best validation scores of each stage."""
        stages = self.config.stages
        while True:
            while self.state.epoch < self.state.planned_epochs:
                self._run_epoch()
            position = stages.index(self.state.stage)
            if position + 1 == len(stages):
                break
            self.state.start_stage(stages[position + 1], self.config.epochs(stages[position + 1]))
            self.dist.barrier()
            self._enter_stage(None)
            self._save_state()
        if self.config.average_epochs and "averaged" not in self.state.best and self.dist.main:
            self._finish_average()
        self.dist.close()
        return self.state.best

    def _run_epoch(self) -> None:
        config, state = self.config, self.state
        stage, epoch, batch = state.stage, state.epoch, config.batch(state.stage)
        if state.step == 0:
            step_schedule(self.scheduler)
        loader = self._loader(self._sampler(stage, epoch, start=state.step * batch))
        self.model.train()
        steps = state.step + len(loader)
        started = last_report = time.perf_counter()
        for images, labels, *teacher in loader:
            model = self.compiled if len(labels) == batch else self.model
            whole, band = train_step(model, images, labels, self.criterion, self.optimizer, self.scaler,
                                     self.device, *teacher, distill_weight=config.distill_weight)
            sums = state.sums
            sums.loss += whole * len(labels)
            sums.band_loss += band * len(labels)
            sums.images += len(labels)
            state.step += 1
            state.global_step += 1
            if config.checkpoint_every and state.step % config.checkpoint_every == 0:
                self._bank_time(started)
                started = time.perf_counter()
                self._save_state()
            if self.dist.main and time.perf_counter() - last_report > PROGRESS_SECONDS:
                last_report = time.perf_counter()
                console.print(f"stage {stage} epoch {epoch + 1} step {state.step}/{steps}  "
                              f"loss {sums.loss / sums.images:.4f}", soft_wrap=True)
            if self.after_step is not None:
                self.after_step(state)
        self._bank_time(started)
        self._finish_epoch()

    def _sampler(self, stage: int, epoch: int, start: int = 0, shard: bool = True) -> EpochSampler:
        """Keys of ``epoch`` of ``stage`` from ``start`` (this process's share under DDP when ``shard``), with the
        run's epoch size and source shares."""
        config, (rank, world) = self.config, (self.dist.rank, self.dist.world_size) if shard else (0, 1)
        return EpochSampler(len(self.train_set), config.seed, stage, epoch, start=start, rank=rank, world_size=world,
                            epoch_size=config.epoch_size, groups=self.groups)

    def _loader(self, sampler: EpochSampler) -> DataLoader:
        """Training batches of the stage in progress in ``sampler``'s order."""
        return DataLoader(self.train_set, batch_size=self.config.batch(self.state.stage), sampler=sampler,
                          num_workers=auto_workers(self.device, self.config.workers),
                          worker_init_fn=DiesWithParent(init_worker),
                          pin_memory=self.device.type == "cuda", persistent_workers=False)

    def _bank_time(self, started: float) -> None:
        seconds = time.perf_counter() - started
        self.state.stage_seconds += seconds
        self.state.run_seconds += seconds
        self.state.sums.seconds += seconds

    def _finish_epoch(self) -> None:
        config, state = self.config, self.state
        stage, epoch, sums = state.stage, state.epoch, state.sums
        started = time.perf_counter()
        scores = validate(self.raw_model, self.val_set, self.criterion, self.device) \
            if self.dist.main and len(self.val_set) else {}
        row = {"stage": stage, "epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"],
               "train_loss": sums.loss / max(1, sums.images), "train_band_loss": sums.band_loss / max(1, sums.images),
               **{f"val_{k}": v for k, v in scores.items() if k != "images"},
               "train_seconds": sums.seconds,
               "images_per_second": sums.images * self.dist.world_size / max(sums.seconds, 1e-9),
               "load_average": os.getloadavg()[0]}  # how busy the machine was: speed figures need it
        state.history.append(row)
        self._bank_time(started)
        state.epoch_seconds.append(sums.seconds)
        state.epoch, state.step, state.sums = epoch + 1, 0, EpochSums()
        # Select against the revised plan: a budget that ends the stage now makes this epoch selectable.
        planned = self.dist.broadcast(plan_epochs(config, state, min(self.scheduler.milestones, default=math.inf)))
        if planned != state.planned_epochs:
            state.planned_epochs = planned
            self.scheduler.milestones = Counter(milestones(planned, config.lr_milestones, not_before=state.epoch + 1))
        best = state.best.get(str(stage))
        selectable = epoch + 1 > config.select_from * state.planned_epochs
        improved = selectable and (not scores or best is None or scores["iou"] > best["iou"])
        row["selected"] = improved
        if self._averages(epoch + 1):
            state.average = add_to_average(state.average, state.averaged_epochs, self.raw_model)
            state.averaged_epochs += 1
        if improved and self.dist.main:
            state.best[str(stage)] = {"epoch": epoch + 1, "iou": scores.get("iou", float("nan")), **row}
            save_checkpoint(self.out / (STAGE1_BEST if stage == 1 else BEST), self.raw_model, self.preprocessing,
                            {"stage": stage, "epoch": epoch + 1, "val": scores, "config": config.to_dict()})
        self._save_state()
        if self.dist.main:
            write_reports(self.out, state.history, self.skipped)
            console.print(epoch_line(row, state.planned_epochs), soft_wrap=True)

    def _averages(self, epoch: int) -> bool:
        """Whether the weights at the end of ``epoch`` (1-based) join the average."""
        config, state = self.config, self.state
        return (config.average_epochs > 0 and state.stage == config.stages[-1]
                and epoch > state.planned_epochs - config.average_epochs)

    def _finish_average(self) -> None:
        """Validate the mean of the averaged epochs' weights and write it to ``averaged.pt``."""
        config, state = self.config, self.state
        sampler = self._sampler(state.stage, state.planned_epochs, shard=False)  # the epoch after the last
        model = averaged_model(fresh_model(state.stage, config.seed), state.average, self._loader(sampler),
                               self.device)
        scores = validate(model, self.val_set, self.criterion, self.device) if len(self.val_set) else {}
        save_checkpoint(self.out / AVERAGED, model, self.preprocessing,
                        {"stage": state.stage, "averaged_epochs": state.averaged_epochs, "val": scores,
                         "config": config.to_dict()})
        state.best["averaged"] = {"epochs": state.averaged_epochs, "iou": float("nan"), **scores}
        self._save_state()
        console.print(f"mean of the last {state.averaged_epochs} epochs' weights: "
                      + (f"val IoU {scores['iou']:.2f}" if scores else "no val") + f"  -> {self.out / AVERAGED}")


def train(config: TrainConfig, resume: bool = False, after_step: Callable[[TrainState], None] | None = None) -> dict:
    """Run (or resume) training; returns the best validation scores of each stage (see :class:`Trainer`)."""
    return Trainer(config, resume, after_step).run()
