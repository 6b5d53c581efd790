"""Fine-tune the DeepLabV3+ teacher on manifests of real masks.

Rows with a mask and a status other than ``rejected`` are used: split ``train`` to learn, split ``val`` for the
metric (mean per-photo IoU at the photo's size, unknown pixels ignored, the same inference path as
``pipeline pseudo-label``). The checkpoint at ``--out`` is rewritten atomically after every epoch and when the
time budget runs out, with the optimizer state, so ``--resume`` continues where a run stopped.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch.utils.data import DataLoader, Dataset

from pipeline.teacher.checkpoint import load_teacher, read_checkpoint, save_checkpoint
from pipeline.teacher.inference import Predictor, resize_for_model
from pipeline.teacher.model import TeacherConfig, build_model
from sinet.metrics import foreground_iou
from sinet_plus import manifest as mf
from sinet_plus.errors import UserError
from sinet_plus.files import file_hash
from sinet_plus.imageio import IGNORE, ImageReadError, read_image, read_mask, read_pair
from sinet_plus.processes import DiesWithParent
from sinet_plus.stage import console
from sinet_plus.torch_utils import autocast, pick_device, seed_everything

if TYPE_CHECKING:
    import albumentations as A

log = logging.getLogger(__name__)

ENCODER_WEIGHTS = ("none", "imagenet")
"""Where a new encoder starts: random initialisation, or ImageNet weights (from the cache or the hub)."""


@dataclass
class TrainOptions:
    """What ``pipeline train-teacher`` was asked to do.

    Args:
        manifests: manifests of photos with real masks (split ``train`` and ``val`` rows are used).
        out: checkpoint to write (also the resume point).
        encoder: smp encoder name.
        encoder_weights: ``imagenet`` or ``none`` (ignored with ``init``).
        init: start from this teacher checkpoint's weights (same encoder) instead.
        resume: continue the run stored in ``out`` (epoch, optimizer, schedule).
        input_size: training crops are ``input_size`` squared; the photo's long side is scaled to it.
        batch_size: crops per step.
        epochs: passes over the training rows; the learning rate follows a cosine over all of them.
        lr: peak AdamW learning rate.
        workers: DataLoader processes that read and augment photos.
        device: ``auto``, ``cpu``, ``cuda``...
        seed: for shuffling, augmentation and initialisation.
        max_minutes: stop (and save) after this much training time (0 = no limit); the cosine learning rate
            then follows whichever of steps and time is further along, so it anneals within the budget.
        max_steps: stop (and save) after this many optimizer steps in this run; 0 = no limit.
        val_limit: validate on at most this many val rows (0 = all).
        val_split: the ``split`` value of the validation rows (e.g. ``holdout``: photos kept out of training
            that are not the reported val set).
        decoder_channels: width of the DeepLabV3+ decoder.
        cpu_bf16: bf16 autocast on CPUs that run bf16 natively (faster there; docs/teacher.md).
    """

    manifests: Sequence[Path]
    out: Path
    encoder: str = "se_resnext50_32x4d"
    encoder_weights: str = "none"
    init: Path | None = None
    resume: bool = False
    input_size: int = 512
    batch_size: int = 8
    epochs: int = 20
    lr: float = 1e-3
    workers: int = 2
    device: str = "auto"
    seed: int = 0
    max_minutes: float = 0.0
    max_steps: int = 0
    val_limit: int = 0
    val_split: str = "val"
    decoder_channels: int = 256
    cpu_bf16: bool = True

    def __post_init__(self):
        if self.encoder_weights not in ENCODER_WEIGHTS:
            raise UserError(f"encoder_weights must be one of {', '.join(ENCODER_WEIGHTS)}, "
                            f"not {self.encoder_weights!r}")


def split_rows(paths: Sequence[Path], val_split: str = "val") -> tuple[mf.Manifest, mf.Manifest]:
    """Training and ``val_split`` rows from the manifests: rows with a mask, not rejected."""
    combined = mf.concat([mf.load(p) for p in paths], root=Path.cwd(), prefix_ids=False)
    usable = combined.frame[(combined.frame["mask"] != "") & (combined.frame["status"] != "rejected")]
    usable = mf.Manifest(usable.reset_index(drop=True), combined.root)
    return mf.select(usable, split="train"), mf.select(usable, split=val_split)


def data_hash(rows: mf.Manifest) -> str:
    """SHA-256 (16 hex) over the sorted ids, splits and the bytes of every photo and mask."""
    digest = hashlib.sha256()
    ordered = mf.Manifest(rows.frame.sort_values("id").reset_index(drop=True), rows.root)
    for sample_id, split, image, mask in zip(ordered.frame["id"], ordered.frame["split"], ordered.paths("image"),
                                             ordered.paths("mask")):
        digest.update(f"{sample_id}\0{split}\0".encode())
        for path in (image, mask):
            digest.update(file_hash(path).encode() if path is not None and path.is_file() else b"missing")
    return digest.hexdigest()[:16]


def train_augmentation(input_size: int) -> A.Compose:
    """Long side to ``input_size``, pad to a square (unknown mask), mirror, scale/shift/rotate, colour."""
    import albumentations as A  # here, not at the top: `pipeline --help` reads TrainOptions without loading it

    return A.Compose([
        A.LongestMaxSize(max_size=input_size),
        A.PadIfNeeded(min_height=input_size, min_width=input_size, border_mode=cv2.BORDER_CONSTANT,
                      fill=0, fill_mask=IGNORE),
        A.HorizontalFlip(),
        A.Affine(scale=(0.75, 1.25), translate_percent=(-0.1, 0.1), rotate=(-15, 15), border_mode=cv2.BORDER_CONSTANT,
                 fill=0, fill_mask=IGNORE, p=0.7),
        A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.03, p=0.8),
    ])


class MaskDataset(Dataset):
    """Augmented (photo, mask) crops; an unreadable pair yields its error message instead, for the log."""

    def __init__(self, rows: mf.Manifest, augment: A.Compose, config: TeacherConfig):
        self.images, self.masks = rows.paths("image"), rows.paths("mask")
        self.augment = augment
        self.mean = np.array(config.mean, np.float32) * 255
        self.std = np.array(config.std, np.float32) * 255

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor] | str:
        try:
            image, mask = read_pair(self.images[index], self.masks[index], unknown_value=128)
        except ImageReadError as error:
            return str(error)
        sample = self.augment(image=image, mask=mask)
        image = (sample["image"].astype(np.float32) - self.mean) / self.std
        return torch.from_numpy(image.transpose(2, 0, 1).copy()), torch.from_numpy(sample["mask"])


def collate_readable(samples: list) -> tuple[torch.Tensor | None, torch.Tensor | None, list[str]]:
    """Stack the readable samples; return the unreadable ones' messages beside them."""
    good = [s for s in samples if not isinstance(s, str)]
    errors = [s for s in samples if isinstance(s, str)]
    if not good:
        return None, None, errors
    return torch.stack([s[0] for s in good]), torch.stack([s[1] for s in good]), errors


def segmentation_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy plus soft Dice over known pixels (``IGNORE`` pixels count for nothing)."""
    known = (mask != IGNORE).float()
    target = (mask == 1).float()
    logits = logits[:, 0].float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    bce = (bce * known).sum() / known.sum().clamp(min=1)
    prob = torch.sigmoid(logits) * known
    dice = 1 - (2 * (prob * target).sum() + 1) / (prob.sum() + (target * known).sum() + 1)
    return bce + dice


class _ValPhotos(Dataset):
    def __init__(self, rows: mf.Manifest, long_side: int):
        self.images, self.masks, self.long_side = rows.paths("image"), rows.paths("mask"), long_side

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = read_image(self.images[index])
        return resize_for_model(image, self.long_side), image.shape[:2], read_mask(self.masks[index], unknown_value=128)


def _columns(batch: list[tuple]) -> list[tuple]:
    return list(zip(*batch))


def score_teacher(predictor: Predictor, rows: mf.Manifest, long_side: int, batch_size: int = 8,
                  workers: int = 0) -> dict[str, float]:
    """Mean per-photo IoU (SINet's official metric of the mask ``p > 0.5``, unknown pixels ignored) and the share
    of photos below 0.90, of the predictor on ``rows``.

    Args:
        predictor: the teacher ready for batches.
        rows: photos with masks.
        long_side: photos are resized so their long side is this.
        batch_size: photos per model call.
        workers: DataLoader processes reading the photos.
    """
    loader = DataLoader(_ValPhotos(rows, long_side), batch_size=batch_size, num_workers=workers,
                        collate_fn=_columns, worker_init_fn=DiesWithParent())
    ious = []
    for resized, sizes, masks in loader:
        for prediction, mask in zip(predictor.predict(resized, sizes, mirror=False), masks):
            ious.append(foreground_iou(prediction.prob > 0.5, mask))
    return {"iou": float(np.mean(ious)) if ious else float("nan"),
            "below_0.90": float(np.mean(np.array(ious) < 0.9)) if ious else float("nan"), "photos": len(ious)}


def _initial_model(options: TrainOptions, config: TeacherConfig) -> torch.nn.Module:
    if options.init is not None:
        teacher = load_teacher(options.init)
        if teacher.config.encoder != config.encoder:
            raise UserError(f"--init {options.init} has encoder {teacher.config.encoder!r}, "
                             f"not {config.encoder!r}")
        config.encoder_weights = f"init:{teacher.hash}"
        return teacher.model.train()
    config.encoder_weights = options.encoder_weights
    return build_model(config, imagenet=options.encoder_weights == "imagenet")


def cosine_lr(peak: float, progress_share: float) -> float:
    """Cosine decay from ``peak`` to 2% of it as training progresses from 0 to 1."""
    return peak * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(max(progress_share, 0.0), 1.0))))


def train_teacher(options: TrainOptions) -> dict:
    """Train (or resume) and write the checkpoint; returns the final validation metrics."""
    seed_everything(options.seed)
    device = pick_device(options.device)
    train_rows, val_rows = split_rows(options.manifests, options.val_split)
    if not len(train_rows):
        raise UserError("no training rows: the manifests need rows with split 'train' and a mask")
    if options.val_limit and len(val_rows) > options.val_limit:
        val_rows = mf.Manifest(val_rows.frame.iloc[:options.val_limit], val_rows.root)
    config = TeacherConfig(encoder=options.encoder, input_size=options.input_size,
                           decoder_channels=options.decoder_channels)
    state = read_checkpoint(options.out) if options.resume and options.out.exists() else None
    if state is not None:
        config = TeacherConfig.from_dict(state["config"])
        model = build_model(config)
        model.load_state_dict(state["state_dict"])
    else:
        model = _initial_model(options, config)
    model.to(device).train()
    rows_hash = data_hash(mf.concat([train_rows, val_rows], root=train_rows.root))
    loader = DataLoader(MaskDataset(train_rows, train_augmentation(config.input_size), config),
                        batch_size=options.batch_size, shuffle=True, drop_last=len(train_rows) > options.batch_size,
                        num_workers=options.workers, collate_fn=collate_readable, worker_init_fn=DiesWithParent(),
                        persistent_workers=options.workers > 0, pin_memory=device.type == "cuda")
    total_steps = max(1, options.epochs * len(loader))
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and not torch.cuda.is_bf16_supported())
    epoch, step, minutes_before = 0, 0, 0.0
    if state is not None:
        train_state = state["train"]
        optimizer.load_state_dict(train_state["optimizer"])
        epoch, step = int(train_state["epoch"]), int(train_state["step"])
        minutes_before = float(train_state.get("minutes", 0.0))
        console.print(f"resuming {options.out} at epoch {epoch}, step {step}")
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    start, run_steps, stopped = time.perf_counter(), 0, False
    skipped: list[str] = list(state["train"].get("skipped", [])) if state is not None else []
    metrics: dict = dict(state["val"]) if state is not None else {}

    def checkpoint(completed_epochs: int) -> None:
        nonlocal metrics
        if len(val_rows):
            metrics = score_teacher(Predictor(model.eval(), config, device), val_rows, config.input_size,
                                    workers=min(options.workers, 1))
            model.train()
        metrics.update(epoch=completed_epochs, step=step, minutes=round((time.perf_counter() - start) / 60, 2))
        save_checkpoint(options.out, model, config, rows_hash, metrics,
                        {"epoch": completed_epochs, "step": step, "optimizer": optimizer.state_dict(),
                         "minutes": minutes_before + (time.perf_counter() - start) / 60, "skipped": list(skipped)})
        console.print(f"epoch {completed_epochs}/{options.epochs} step {step}: val {_format(metrics)} -> {options.out}")

    with Progress(TextColumn("[bold]train-teacher[/] {task.fields[info]}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console) as progress:
        task = progress.add_task("steps", total=total_steps, completed=min(step, total_steps), info="")
        while epoch < options.epochs and not stopped:
            for images, masks, errors in loader:
                for error in errors:
                    if error not in skipped:
                        skipped.append(error)
                        log.warning("skipped unreadable training pair: %s", error)
                if images is None:
                    continue
                images, masks = images.to(device, non_blocking=True), masks.to(device, non_blocking=True)
                if device.type == "cuda":
                    images = images.contiguous(memory_format=torch.channels_last)
                progress_share = step / total_steps
                if options.max_minutes:
                    progress_share = max(progress_share, (minutes_before + (time.perf_counter() - start) / 60)
                                         / options.max_minutes)
                for group in optimizer.param_groups:
                    group["lr"] = cosine_lr(options.lr, progress_share)
                with autocast(device, options.cpu_bf16):
                    loss = segmentation_loss(model(images), masks)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                step, run_steps = step + 1, run_steps + 1
                info = f"epoch {epoch + 1} loss {loss.item():.3f} lr {optimizer.param_groups[0]['lr']:.2e}"
                progress.update(task, advance=1, info=info)
                if not console.is_terminal and step % 25 == 0:  # logs to a file get a line now and then
                    console.print(f"step {step}/{total_steps} {info} ({time.perf_counter() - start:.0f} s)")
                if ((options.max_steps and run_steps >= options.max_steps) or
                        (options.max_minutes and progress_share >= 1)):
                    stopped = True
                    break
            if not stopped:
                epoch += 1
            checkpoint(epoch)
    return metrics


def _format(metrics: dict) -> str:
    return ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
