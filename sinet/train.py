"""Two-stage SINet training with the official recipe (spec §3), resumable after a kill, bit-for-bit.

Stage 1 trains :class:`~sinet.model.SINetEncoder` on labels nearest-downsampled ×8 (batch 36, 5×5 band);
stage 2 trains :class:`~sinet.model.SINet` whose encoder starts from the best stage-1 state (batch 24, 15×15
band). Each stage: Adam with coupled L2 decay in three parameter groups, MultiStepLR at E/2 and E − E/6
(γ 0.5) stepped *before* each epoch as the official code does, class-weighted CE + 0.5 · band CE, validation
every epoch with the official metric, model selection from epoch 0.6·E on.

Determinism: the epoch's order comes from ``(seed, stage, epoch)`` and every sample's augmentation from
``(seed, stage, epoch, index)`` (:class:`~sinet.data.EpochSampler`), so the DataLoader's worker count and the
point where a run was killed do not change the batches. ``last.pt`` holds everything needed to continue
(model, optimizer, scheduler, scaler, RNG states, stage, epoch, step within the epoch, running sums, history)
and is written atomically at the end of every epoch and every ``checkpoint_every`` steps.

Files in the run folder: ``last.pt`` (resume), ``stage1_best.pt`` and ``best.pt`` (our checkpoint format,
``sinet eval --weights`` reads them), ``metrics.csv``, ``curves.png``, ``config.json``, ``skipped.csv``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import signal
import statistics
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader

from sinet.checkpoint import load_checkpoint, save_checkpoint
from sinet.data import EpochSampler, SegmentationDataset, manifest_samples, scan_samples
from sinet.evaluate import EvalItem
from sinet.loss import STAGE1_BAND_KERNEL, STAGE2_BAND_KERNEL, BoundaryAwareLoss, class_weights
from sinet.metrics import ScoreBoard
from sinet.model import SINet, SINetEncoder
from sinet.preprocess import PRESETS, Preprocessing
from sinet.transforms import STAGE1_LABEL_STRIDE, AugmentationConfig, eval_transform, sample_seed, train_transform
from sinet_plus.errors import PathError, UserError
from sinet_plus.files import atomic_path, write_text_atomic
from sinet_plus.imageio import ImageReadError
from sinet_plus.torch_utils import autocast, pick_device

console = Console(stderr=True)

KILL_HOOK = "SINET_TRAIN_KILL_AFTER_STEP"
"""Test hook: when set to n, the trainer SIGKILLs itself right after its n-th optimizer step of the run
(counted over both stages, after any checkpoint due at that step), exactly like an external ``kill -9``."""

STATE_FILE, STAGE1_BEST, BEST = "last.pt", "stage1_best.pt", "best.pt"
PROGRESS_SECONDS = 60
"""A progress line within an epoch at most this often (epochs take minutes on a CPU)."""


@dataclass
class TrainConfig:
    """Every option of a run; defaults are the official values (spec §3) where the code has one.

    Args:
        manifests: training manifests (rows of ``split``, accepted, with masks).
        out: run folder.
        val_manifests: manifests holding the validation rows (default: ``manifests``).
        split: training split; val_split: validation split (model selection).
        stages: which stages to run, ``(1, 2)`` normally; ``(2,)`` with ``encoder`` starts from a given
            stage-1 checkpoint.
        encoder: stage-1 checkpoint initialising stage 2 when stage 1 is not run.
        init: full SINet checkpoint initialising stage 2 instead (fine-tuning, or a warm restart of an earlier
            run with a new schedule); needs ``stages == (2,)``.
        stage1_epochs, stage2_epochs: epochs E of each stage (300 and 300).
        stage1_batch, stage2_batch: batch sizes (36 and 24).
        lr: Adam learning rate (5e-4, the official json; the paper's 7.5e-3 is a typo).
        betas, eps: Adam's (0.9, 0.999) and 1e-8.
        conv_weight_decay: L2 on non-depthwise conv weights (2e-4).
        depthwise_weight_decay: L2 on depthwise conv weights (0).
        other_weight_decay: L2 on every 1-D/2-D parameter: BN, PReLU, SE FC (2e-6).
        lr_gamma: LR factor at each milestone (0.5).
        lr_milestones: milestones as fractions of E (E/2 and E − E/6).
        boundary_weight: λ of the band term (0.5).
        stage1_band, stage2_band: band kernels (5 on 28² labels, 15 on 224²).
        class_weighting: ERFNet class weights 1/ln(1.10 + p_c) from the training labels (official: on).
        select_from: model selection considers epochs after this fraction of E (0.6).
        size: square input side (224; multiple of 32).
        preprocessing: name of the :data:`~sinet.preprocess.PRESETS` normalisation stored in checkpoints.
        augmentation: PortraitNet augmentation settings (its ``size`` follows ``size``).
        seed: run seed (model init, order, augmentation).
        workers: DataLoader worker processes (results do not depend on it); None = :func:`auto_workers`.
        threads: torch CPU threads (None = torch's default).
        device: ``auto`` (CUDA, then MPS, then CPU) or a torch device string.
        amp: mixed precision on CUDA (ignored elsewhere).
        compile: ``torch.compile`` the training forward/backward (full batches; a smaller last batch runs
            eagerly on the same weights). Here it costs ~4 min per stage and makes CPU steps ~1.5x faster.
        checkpoint_every: also write ``last.pt`` every this many steps within an epoch (0 = at epoch ends).
        time_budget: minutes for the whole run: each stage's E is cut to what its budget allows, judged from
            the epochs done so far, until the first LR milestone fixes it (None = run every epoch).
        stage1_share: share of ``time_budget`` given to stage 1.
        cache_gb: keep up to this many GB of decoded training photos in memory (0 = decode every time); the
            results do not depend on it.
    """

    manifests: list[str]
    out: str
    val_manifests: list[str] | None = None
    split: str = "train"
    val_split: str = "val"
    stages: tuple[int, ...] = (1, 2)
    encoder: str | None = None
    init: str | None = None
    stage1_epochs: int = 300
    stage2_epochs: int = 300
    stage1_batch: int = 36
    stage2_batch: int = 24
    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    conv_weight_decay: float = 2e-4
    depthwise_weight_decay: float = 0.0
    other_weight_decay: float = 2e-6
    lr_gamma: float = 0.5
    lr_milestones: tuple[float, ...] = (0.5, 5 / 6)
    boundary_weight: float = 0.5
    stage1_band: int = STAGE1_BAND_KERNEL
    stage2_band: int = STAGE2_BAND_KERNEL
    class_weighting: bool = True
    select_from: float = 0.6
    size: int = 224
    preprocessing: str = "imagenet"
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    seed: int = 0
    workers: int | None = None
    threads: int | None = None
    device: str = "auto"
    amp: bool = True
    compile: bool = False
    checkpoint_every: int = 0
    time_budget: float | None = None
    stage1_share: float = 0.4
    cache_gb: float = 4.0

    RUNTIME = ("workers", "threads", "device", "out", "cache_gb")
    """Options a resumed run may change (None keeps the saved value). Workers never change results; the
    thread count changes float summation order, so a bit-identical resume needs the same ``threads``."""

    def epochs(self, stage: int) -> int:
        return self.stage1_epochs if stage == 1 else self.stage2_epochs

    def batch(self, stage: int) -> int:
        return self.stage1_batch if stage == 1 else self.stage2_batch

    def band(self, stage: int) -> int:
        return self.stage1_band if stage == 1 else self.stage2_band

    @property
    def cache_bytes(self) -> int:
        """:attr:`cache_gb` in bytes."""
        return int(self.cache_gb * 2**30)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        data = dict(data)
        data["augmentation"] = AugmentationConfig(**{k: tuple(v) if isinstance(v, list) else v
                                                     for k, v in data["augmentation"].items()})
        for key in ("betas", "lr_milestones", "stages"):
            data[key] = tuple(data[key])
        return cls(**data)


# ---- the pieces: optimizer groups, schedule, one step, validation ----

def parameter_groups(model: nn.Module, conv: float, depthwise: float, other: float) -> list[dict]:
    """Adam parameter groups with the official weight decays (spec §3.2).

    Args:
        model: the model to train.
        conv: decay of conv weights that mix channels.
        depthwise: decay of depthwise conv weights (one input channel per group).
        other: decay of every other parameter (BN, PReLU, SE linear weights and biases, conv biases).
    """
    groups: dict[str, list[nn.Parameter]] = {"conv": [], "depthwise": [], "other": []}
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if isinstance(module, nn.Conv2d) and name == "weight":
                groups["depthwise" if parameter.shape[1] == 1 else "conv"].append(parameter)
            else:
                groups["other"].append(parameter)
    decays = {"conv": conv, "depthwise": depthwise, "other": other}
    return [{"params": params, "weight_decay": decays[name], "name": name}
            for name, params in groups.items() if params]


def milestones(epochs: int, fractions: Sequence[float]) -> list[int]:
    """MultiStepLR milestones ``round(E · f)``: E/2 and E − E/6 (150 and 250 at E = 300) by default."""
    return [round(epochs * f) for f in fractions]


def make_optimizer(model: nn.Module, config: TrainConfig, epochs: int
                   ) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.MultiStepLR]:
    """Adam (coupled L2, as the official code) over :func:`parameter_groups`, and its MultiStepLR."""
    optimizer = torch.optim.Adam(parameter_groups(model, config.conv_weight_decay, config.depthwise_weight_decay,
                                                  config.other_weight_decay),
                                 lr=config.lr, betas=config.betas, eps=config.eps)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones(epochs, config.lr_milestones),
                                                     gamma=config.lr_gamma)
    return optimizer, scheduler


def step_schedule(scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
    """Advance the LR schedule at the start of an epoch, as the official code does (so E/2 − 1 epochs at
    the full rate); PyTorch's warning about stepping before the optimizer is expected here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        scheduler.step()


def train_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, criterion: BoundaryAwareLoss,
               optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, device: torch.device
               ) -> tuple[float, float]:
    """One optimizer step; returns the two loss terms (whole image, band) of the batch."""
    images = images.to(device, non_blocking=True)
    labels = labels.to(device, non_blocking=True)
    with autocast(device):
        logits = model(images)
    whole, band = criterion.terms(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(whole + criterion.boundary_weight * band).backward()
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
    def load(cls, items: Sequence[EvalItem], preprocessing: Preprocessing, label_stride: int) -> ValidationSet:
        dataset = SegmentationDataset(items, eval_transform(preprocessing.size[0]), preprocessing, label_stride)
        ids, images, labels, skipped = [], [], [], []
        for index, item in enumerate(items):
            try:
                image, label = dataset[index]
            except ImageReadError as error:
                skipped.append((item.key, str(error)))
                continue
            ids.append(item.key)
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


# ---- the run ----

@dataclass
class Distributed:
    """Process rank and count under ``torchrun`` (rank 0 of 1 otherwise)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, device_type: str) -> Distributed:
        """Join the process group when ``torchrun``'s variables say there is more than one process."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
        return cls(dist.get_rank(), world_size, int(os.environ.get("LOCAL_RANK", "0")))

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every process."""
        if self.world_size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def _rng_states() -> dict:
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss]}


def _restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(_tuples(states["python"]))
    kind, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))


def _tuples(value: Any) -> Any:
    """Lists back to tuples (``random.setstate`` insists on tuples)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def auto_workers(device: torch.device, requested: int | None = None) -> int:
    """DataLoader workers: ``requested``, or when None, on a CPU only the cores the training step leaves free.

    With the decoded photos in memory a sample costs ~2 ms of one core; a worker process competing with the
    step's OpenMP threads for the same cores stalls them at every barrier (2 cores here: 23.7 img/s with one
    worker against 28.7 with none). On an accelerator the host's cores are free for loading.

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


def _init_worker(_: int) -> None:
    """Keep DataLoader workers single-threaded: the cores belong to the training step."""
    import cv2

    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def build_model(stage: int, seed: int) -> nn.Module:
    """A freshly initialised model of ``stage`` (PyTorch default init, seeded per stage)."""
    torch.manual_seed(sample_seed(seed, stage))
    return SINetEncoder() if stage == 1 else SINet()


class Trainer:
    """Runs (or resumes) the two stages of :class:`TrainConfig` in its ``out`` folder.

    Args:
        config: the run's options.
        resume: continue from ``out/last.pt`` (its options win, apart from :attr:`TrainConfig.RUNTIME` given
            as not None).
    """

    def __init__(self, config: TrainConfig, resume: bool = False):
        self.out = Path(config.out)
        state = None
        if resume:
            state = load_checkpoint(self.out / STATE_FILE)
            saved = TrainConfig.from_dict(state["extra"]["config"])
            config = dataclasses.replace(saved, **{k: getattr(config, k) for k in TrainConfig.RUNTIME
                                                   if getattr(config, k) is not None})
        self.config = config
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
        self._prepare_data(state)
        self.state = state["extra"] if state else self._fresh_state()
        self._enter_stage(self.state["stage"], state["state_dict"] if state else None)
        if state:
            _restore_rng_states(self.state["rng"])

    # -- set-up --

    def _prepare_data(self, state: dict | None) -> None:
        config = self.config
        samples = manifest_samples(config.manifests, config.split)
        if state is None:
            scan = scan_samples(samples)
            self.skipped = [{"id": i, "split": config.split, "reason": r} for i, r in scan.problems]
            self.pixel_counts = scan.pixel_counts.tolist()
        else:
            self.skipped = state["extra"]["skipped"]
            self.pixel_counts = state["extra"]["pixel_counts"]
        dropped = {row["id"] for row in self.skipped if row["split"] == config.split}
        self.samples = [s for s in samples if s.key not in dropped]
        if not self.samples:
            raise UserError(f"no readable accepted rows with masks in split {config.split!r} of "
                             f"{', '.join(map(str, config.manifests))}")
        self.val_items = manifest_samples(config.val_manifests or config.manifests, config.val_split)
        self.weights = class_weights(self.pixel_counts) if config.class_weighting else None
        self.decoded: dict = {}  # decoded training pairs, filled once and shared by both stages' datasets

    def _fresh_state(self) -> dict:
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.out / "config.json", json.dumps(self.config.to_dict(), indent=2) + "\n")
        return {"config": self.config.to_dict(), "stage": self.config.stages[0], "epoch": 0, "step": 0,
                "global_step": 0, "planned_epochs": self.config.epochs(self.config.stages[0]),
                "stage_seconds": 0.0, "run_seconds": 0.0, "epoch_seconds": [], "sums": _zero_sums(),
                "history": [], "best": {}, "skipped": self.skipped, "pixel_counts": self.pixel_counts,
                "class_weights": None if self.weights is None else self.weights.tolist()}

    def _enter_stage(self, stage: int, state_dict: dict | None) -> None:
        """Build the stage's model, loss, data and optimizer; load ``state_dict`` and optimizer state if resuming."""
        config = self.config
        self.stage = stage
        stride = STAGE1_LABEL_STRIDE if stage == 1 else 1
        model = build_model(stage, config.seed)
        if state_dict is not None:
            model.load_state_dict(state_dict)
        elif stage == 2 and config.init:
            model.load_state_dict(self._checkpoint_weights(Path(config.init), "SINet"))
        elif stage == 2:
            model.encoder.load_state_dict(self._stage1_encoder())
        self.raw_model = model.to(self.device)
        self.model = model
        if self.dist.world_size > 1:
            self.model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.compiled = torch.compile(self.model, dynamic=False) if config.compile else self.model
        self.criterion = BoundaryAwareLoss(config.band(stage), config.boundary_weight, self.weights).to(self.device)
        self.train_set = SegmentationDataset(self.samples, train_transform(self.augmentation), self.preprocessing,
                                             stride, decoded=self.decoded)
        self.train_set.preload(config.cache_bytes)
        self.val_set = ValidationSet.load(self.val_items, self.preprocessing, stride) if self.dist.main else None
        if self.val_set is not None:
            known = {row["id"] for row in self.skipped}
            self.skipped += [{"id": i, "split": config.val_split, "reason": r}
                             for i, r in self.val_set.skipped if i not in known]
        self.optimizer, self.scheduler = make_optimizer(self.raw_model, config, self.state["planned_epochs"])
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.amp and self.device.type == "cuda")
        if state_dict is not None and "optimizer" in self.state:
            self.optimizer.load_state_dict(self.state["optimizer"])
            self.scheduler.load_state_dict(self.state["scheduler"])
            self.scaler.load_state_dict(self.state["scaler"])

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
        self.state.update(optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                          scaler=self.scaler.state_dict(), rng=_rng_states(), skipped=self.skipped)
        save_checkpoint(self.out / STATE_FILE, self.raw_model, self.preprocessing, self.state)

    def _write_reports(self) -> None:
        if not self.dist.main:
            return
        with atomic_path(self.out / "metrics.csv") as tmp:
            pd.DataFrame(self.state["history"]).to_csv(tmp, index=False)
        with atomic_path(self.out / "skipped.csv") as tmp:
            pd.DataFrame(self.skipped, columns=["id", "split", "reason"]).to_csv(tmp, index=False)
        plot_curves(self.state["history"], self.out / "curves.png")

    # -- the loop --

    def run(self) -> dict:
        """Train the remaining epochs of every stage; returns the best validation scores of each stage."""
        stages = self.config.stages
        while True:
            while self.state["epoch"] < self.state["planned_epochs"]:
                self._run_epoch()
            position = stages.index(self.stage)
            if position + 1 == len(stages):
                break
            self.state.update(stage=stages[position + 1], epoch=0, step=0, stage_seconds=0.0, epoch_seconds=[],
                              sums=_zero_sums(),
                              planned_epochs=self.config.epochs(stages[position + 1]))
            for key in ("optimizer", "scheduler", "scaler"):
                self.state.pop(key, None)
            self.dist.barrier()
            self._enter_stage(self.state["stage"], None)
            self._save_state()
        if self.dist.world_size > 1:
            dist.destroy_process_group()
        return self.state["best"]

    def _run_epoch(self) -> None:
        config, state = self.config, self.state
        stage, epoch, batch = self.stage, state["epoch"], config.batch(self.stage)
        if state["step"] == 0:
            step_schedule(self.scheduler)
        sampler = EpochSampler(len(self.train_set), config.seed, stage, epoch, start=state["step"] * batch,
                               rank=self.dist.rank, world_size=self.dist.world_size)
        loader = DataLoader(self.train_set, batch_size=batch, sampler=sampler,
                            num_workers=auto_workers(self.device, config.workers),
                            worker_init_fn=_init_worker, pin_memory=self.device.type == "cuda",
                            persistent_workers=False)
        self.model.train()
        kill_after = int(os.environ.get(KILL_HOOK, "0"))
        steps = state["step"] + len(loader)
        started = last_report = time.perf_counter()
        for images, labels in loader:
            model = self.compiled if len(labels) == batch else self.model
            whole, band = train_step(model, images, labels, self.criterion, self.optimizer, self.scaler,
                                     self.device)
            sums = state["sums"]
            sums["loss"] += whole * len(labels)
            sums["band_loss"] += band * len(labels)
            sums["images"] += len(labels)
            state["step"] += 1
            state["global_step"] += 1
            if config.checkpoint_every and state["step"] % config.checkpoint_every == 0:
                self._bank_time(started)
                started = time.perf_counter()
                self._save_state()
            if self.dist.main and time.perf_counter() - last_report > PROGRESS_SECONDS:
                last_report = time.perf_counter()
                console.print(f"stage {stage} epoch {epoch + 1} step {state['step']}/{steps}  "
                              f"loss {sums['loss'] / sums['images']:.4f}", soft_wrap=True)
            if kill_after and state["global_step"] == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
        self._bank_time(started)
        self._finish_epoch()

    def _bank_time(self, started: float) -> None:
        seconds = time.perf_counter() - started
        for key in ("stage_seconds", "run_seconds"):
            self.state[key] += seconds
        self.state["sums"]["seconds"] += seconds

    def _finish_epoch(self) -> None:
        config, state, stage = self.config, self.state, self.stage
        epoch = state["epoch"]
        started = time.perf_counter()
        scores = validate(self.raw_model, self.val_set, self.criterion, self.device) \
            if self.dist.main and len(self.val_set) else {}
        sums = state["sums"]
        row = {"stage": stage, "epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"],
               "train_loss": sums["loss"] / max(1, sums["images"]),
               "train_band_loss": sums["band_loss"] / max(1, sums["images"]),
               **{f"val_{k}": v for k, v in scores.items() if k != "images"},
               "train_seconds": sums["seconds"],
               "images_per_second": sums["images"] * self.dist.world_size / max(sums["seconds"], 1e-9)}
        state["history"].append(row)
        self._bank_time(started)
        state["epoch_seconds"].append(sums["seconds"])
        state.update(epoch=epoch + 1, step=0, sums=_zero_sums())
        # Select against the revised plan: a budget that ends the stage now makes this epoch selectable.
        self._plan_epochs()
        best = state["best"].get(str(stage))
        selectable = epoch + 1 > config.select_from * state["planned_epochs"]
        improved = selectable and (not scores or best is None or scores["iou"] > best["iou"])
        row["selected"] = improved
        if improved and self.dist.main:
            best = {"epoch": epoch + 1, "iou": scores.get("iou", float("nan")), **row}
            state["best"][str(stage)] = best
            save_checkpoint(self.out / (STAGE1_BEST if stage == 1 else BEST), self.raw_model, self.preprocessing,
                            {"stage": stage, "epoch": epoch + 1, "val": scores, "config": config.to_dict()})
        self._save_state()
        self._write_reports()
        if self.dist.main:
            console.print(_epoch_line(row, state["planned_epochs"]), soft_wrap=True)

    def _plan_epochs(self) -> None:
        """Under a time budget, fit E to what the stage's share leaves at the median pace of the epochs after
        the first (which carries start-up costs, e.g. compilation). The plan is made after epoch 2 and revised
        after every epoch until the scheduler reaches the first LR milestone, then fixed."""
        config, state = self.config, self.state
        next_step = state["epoch"] + 1  # the scheduler's count after the next epoch's step
        if (config.time_budget is None or state["epoch"] < 2
                or next_step >= min(self.scheduler.milestones, default=math.inf)):
            return
        budget = config.time_budget * 60
        if state["stage"] == config.stages[0] and len(config.stages) > 1:
            budget *= config.stage1_share
        else:
            budget -= state["run_seconds"] - state["stage_seconds"]
        pace = statistics.median(state["epoch_seconds"][1:])  # the first epoch carries start-up costs
        fits = int((budget - state["stage_seconds"]) // pace)
        planned = self.dist.broadcast(max(state["epoch"], min(config.epochs(self.stage), state["epoch"] + fits)))
        if planned != state["planned_epochs"]:
            state["planned_epochs"] = planned
            self.scheduler.milestones = Counter(max(m, next_step) for m in milestones(planned, config.lr_milestones))


def _zero_sums() -> dict:
    return {"loss": 0.0, "band_loss": 0.0, "images": 0, "seconds": 0.0}


def _epoch_line(row: dict, planned: int) -> str:
    val = f"val IoU {row['val_iou']:.2f} mIoU {row['val_miou']:.2f} BF1 {row['val_boundary_f1']:.2f}" \
        if "val_iou" in row else "no val"
    return (f"stage {row['stage']} epoch {row['epoch']}/{planned}  lr {row['lr']:.2e}  loss {row['train_loss']:.4f} "
            f"(band {row['train_band_loss']:.4f})  {val}  {row['images_per_second']:.1f} img/s"
            + ("  *best*" if row["selected"] else ""))


def plot_curves(history: list[dict], path: str | os.PathLike) -> None:
    """PNG of the training/validation loss and the validation IoU per epoch, stage 1 then stage 2."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = pd.DataFrame(history)
    if frame.empty:
        return
    frame["x"] = range(1, len(frame) + 1)
    figure, (losses, scores) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    for stage, rows in frame.groupby("stage"):
        losses.plot(rows["x"], rows["train_loss"], label=f"stage {stage} train (whole image)")
        if "val_loss" in rows:
            losses.plot(rows["x"], rows["val_loss"], "--", label=f"stage {stage} val (whole image)")
        if "val_iou" in rows:
            scores.plot(rows["x"], rows["val_iou"], label=f"stage {stage} val IoU (official)")
            chosen = rows[rows["selected"].astype(bool)]
            scores.scatter(chosen["x"], chosen["val_iou"], s=12)
    for axis in (losses, scores):
        for x in frame["x"][frame["stage"].diff().fillna(0) != 0]:
            axis.axvline(x - 0.5, color="gray", linewidth=0.8)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    losses.set_ylabel("loss")
    losses.set_yscale("log")
    scores.set_ylabel("IoU x100 (stage 1 at 28x28)")
    scores.set_xlabel("epoch (stage 1, then stage 2)")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110)
    plt.close(figure)


def train(config: TrainConfig, resume: bool = False) -> dict:
    """Run (or resume) training; returns the best validation scores of each stage."""
    return Trainer(config, resume).run()


def training_throughput(manifest: str | os.PathLike, stage: int, batches: int = 10, workers: int | None = None,
                        batch_size: int | None = None, threads: int | None = 2, split: str = "train",
                        compile: bool = False) -> float:
    """Training images per second of ``stage`` on real photos through the real DataLoader and augmentation.

    For ``sinet bench`` and ``bench/train_throughput.py``. Times ``batches`` full optimizer steps (loss,
    backward, Adam) after one warm-up batch, with the official batch size of the stage unless given.

    Args:
        manifest: a manifest whose ``split`` rows (accepted, with masks) supply the photos.
        stage: 1 (encoder on 28² labels) or 2 (full SINet at 224²).
        batches: timed batches.
        workers: DataLoader workers (None: :func:`auto_workers` chooses).
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
                        num_workers=auto_workers(torch.device("cpu"), workers), worker_init_fn=_init_worker)
    device = torch.device("cpu")
    model = build_model(stage, 0)
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
