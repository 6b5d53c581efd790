"""Command-line shell of this stage: ``pipeline train-teacher`` and ``pipeline pseudo-label``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from sinet_plus.errors import UserError


def register(app: typer.Typer) -> None:
    """Add this stage's commands to ``app``."""
    app.command("train-teacher")(train_teacher_command)
    app.command("pseudo-label")(pseudo_label_command)


def train_teacher_command(
    manifest: Annotated[list[Path], typer.Option(help="Manifest of photos with real masks (repeatable); split "
                                                      "'train' rows train, 'val' rows give the metric.")],
    out: Annotated[Path, typer.Option(help="Checkpoint to write after every epoch (also the --resume point).")],
    encoder: Annotated[str, typer.Option(help="Any segmentation_models_pytorch encoder.")] = "se_resnext50_32x4d",
    encoder_weights: Annotated[str, typer.Option(help="'imagenet' (cache or hub; fails fast offline) or 'none'.")
                               ] = "none",
    init: Annotated[Optional[Path], typer.Option(help="Start from this teacher checkpoint's weights.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run saved in --out.")] = False,
    input_size: Annotated[int, typer.Option(help="Training crop side; the photo's long side is scaled to it.")] = 512,
    batch_size: Annotated[int, typer.Option(help="Crops per optimizer step.")] = 8,
    epochs: Annotated[int, typer.Option(help="Passes over the training rows (cosine learning-rate schedule).")] = 20,
    lr: Annotated[float, typer.Option(help="Peak AdamW learning rate.")] = 1e-3,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes.")] = 2,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    max_minutes: Annotated[float, typer.Option(help="Stop and save after this many minutes (0 = no limit).")] = 0.0,
    max_steps: Annotated[int, typer.Option(help="Stop and save after this many steps in this run (0 = none).")] = 0,
    val_limit: Annotated[int, typer.Option(help="Validate on at most this many val rows (0 = all).")] = 0,
    val_split: Annotated[str, typer.Option(help="Split of the validation rows (e.g. holdout).")] = "val",
    decoder_channels: Annotated[int, typer.Option(help="DeepLabV3+ decoder width.")] = 256,
    cpu_bf16: Annotated[bool, typer.Option(help="bf16 autocast on CPUs with native bf16.")] = True,
) -> None:
    """Fine-tune the DeepLabV3+ teacher on manifests of real masks."""
    from pipeline.teacher.train import TrainOptions, train_teacher

    if encoder_weights not in ("imagenet", "none"):
        raise UserError(f"--encoder-weights must be 'imagenet' or 'none', not {encoder_weights!r}")
    options = TrainOptions(manifests=manifest, out=out, encoder=encoder, encoder_weights=encoder_weights, init=init,
                           resume=resume, input_size=input_size, batch_size=batch_size, epochs=epochs, lr=lr,
                           workers=workers, device=device, seed=seed, max_minutes=max_minutes, max_steps=max_steps,
                           val_limit=val_limit, val_split=val_split, decoder_channels=decoder_channels,
                           cpu_bf16=cpu_bf16)
    train_teacher(options)


def pseudo_label_command(
    images: Annotated[Path, typer.Argument(help="Folder of photos, or a manifest (e.g. crop-baidu's output).")],
    teacher: Annotated[Path, typer.Option(help="Teacher checkpoint from train-teacher.")],
    out: Annotated[Path, typer.Option(help="Output folder: masks/, soft/, manifest.csv, skipped.csv.")],
    long_side: Annotated[int, typer.Option(help="Photos are resized so their long side is this (multiple of 32).")
                         ] = 512,
    flip: Annotated[bool, typer.Option(help="Also predict the mirror image: flip test-time augmentation and the "
                                            "flip_agreement signal (about twice the model time).")] = True,
    faces: Annotated[bool, typer.Option(help="Run MTCNN for the face_in_mask signal.")] = True,
    soft: Annotated[bool, typer.Option(help="Also write soft-probability PNGs.")] = False,
    batch_size: Annotated[int, typer.Option(help="Photos per model call.")] = 8,
    workers: Annotated[int, typer.Option(help="Loader processes (local) or loading actors (ray).")] = 2,
    engine: Annotated[str, typer.Option(help="'local' (DataLoader) or 'ray' (Ray Data actor pool).")] = "local",
    actors: Annotated[int, typer.Option(help="Ray: model actors.")] = 1,
    gpus_per_actor: Annotated[Optional[float], typer.Option(help="Ray: GPUs per model actor (default: 1 where the "
                                                                 "cluster has GPUs, else 0).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
) -> None:
    """Predict a mask for every photo with quality signals and a review priority; resumable."""
    from pipeline.teacher.pseudo_label import LabelOptions, pseudo_label

    if engine not in ("local", "ray"):
        raise UserError(f"--engine must be 'local' or 'ray', not {engine!r}")
    options = LabelOptions(long_side=long_side, mirror=flip, faces=faces, soft=soft, batch_size=batch_size,
                           workers=workers, device=device)
    pseudo_label(images, teacher, out, options, engine=engine, actors=actors, gpus_per_actor=gpus_per_actor)
