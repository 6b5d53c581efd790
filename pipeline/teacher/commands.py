"""Command-line shell of this stage: ``pipeline train-teacher``, ``pipeline pseudo-label``, ``pipeline build-teacher``.

Every option's default is read from the stage's options dataclass (:class:`TrainOptions`, :class:`LabelOptions`),
and every flag is named after its field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.teacher.pseudo_label import ENGINES, LabelOptions, pseudo_label
from pipeline.teacher.train import ENCODER_WEIGHTS, TrainOptions, train_teacher
from sinet.weights import TEACHER
from sinet_plus.errors import UserError

TRAIN = TrainOptions(manifests=[], out=Path())
LABEL = LabelOptions()


def register(app: typer.Typer) -> None:
    """Add this stage's commands to ``app``."""
    app.command("train-teacher")(train_teacher_command)
    app.command("pseudo-label")(pseudo_label_command)
    app.command("build-teacher")(build_teacher_command)


def train_teacher_command(
    manifest: Annotated[list[Path], typer.Option(help="Manifest of photos with real masks (repeatable); split "
                                                      "'train' rows train, 'val' rows give the metric.")],
    out: Annotated[Path, typer.Option(help="Checkpoint to write after every epoch (also the --resume point).")],
    encoder: Annotated[str, typer.Option(help="Any segmentation_models_pytorch encoder.")] = TRAIN.encoder,
    encoder_weights: Annotated[str, typer.Option(help=f"{' or '.join(ENCODER_WEIGHTS)}: 'imagenet' from the cache "
                                                      "or the hub (fails fast offline).")] = TRAIN.encoder_weights,
    init: Annotated[Optional[Path], typer.Option(help="Start from this teacher checkpoint's weights.")] = TRAIN.init,
    resume: Annotated[bool, typer.Option(help="Continue the run saved in --out.")] = TRAIN.resume,
    input_size: Annotated[int, typer.Option(help="Training crop side; the photo's long side is scaled to it.")
                          ] = TRAIN.input_size,
    batch_size: Annotated[int, typer.Option(help="Crops per optimizer step.")] = TRAIN.batch_size,
    epochs: Annotated[int, typer.Option(help="Passes over the training rows (cosine learning-rate schedule).")
                      ] = TRAIN.epochs,
    lr: Annotated[float, typer.Option(help="Peak AdamW learning rate.")] = TRAIN.lr,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes.")] = TRAIN.workers,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = TRAIN.device,
    seed: Annotated[int, typer.Option(help="Random seed.")] = TRAIN.seed,
    max_minutes: Annotated[float, typer.Option(help="Stop and save after this many minutes (0 = no limit).")
                           ] = TRAIN.max_minutes,
    max_steps: Annotated[int, typer.Option(help="Stop and save after this many steps in this run (0 = none).")
                         ] = TRAIN.max_steps,
    val_limit: Annotated[int, typer.Option(help="Validate on at most this many val rows (0 = all).")
                         ] = TRAIN.val_limit,
    val_split: Annotated[str, typer.Option(help="Split of the validation rows (e.g. holdout).")] = TRAIN.val_split,
    decoder_channels: Annotated[int, typer.Option(help="DeepLabV3+ decoder width.")] = TRAIN.decoder_channels,
    cpu_bf16: Annotated[bool, typer.Option(help="bf16 autocast on CPUs with native bf16.")] = TRAIN.cpu_bf16,
) -> None:
    """Fine-tune the DeepLabV3+ teacher on manifests of real masks."""
    train_teacher(TrainOptions(
        manifests=manifest, out=out, encoder=encoder, encoder_weights=encoder_weights, init=init, resume=resume,
        input_size=input_size, batch_size=batch_size, epochs=epochs, lr=lr, workers=workers, device=device,
        seed=seed, max_minutes=max_minutes, max_steps=max_steps, val_limit=val_limit, val_split=val_split,
        decoder_channels=decoder_channels, cpu_bf16=cpu_bf16))


def pseudo_label_command(
    images: Annotated[Path, typer.Argument(help="Folder of photos, or a manifest (e.g. crop-baidu's output).")],
    out: Annotated[Path, typer.Option(help="Output folder: masks/, soft/, manifest.csv, skipped.csv.")],
    teacher: Annotated[Optional[Path], typer.Option(
        help="Teacher: a train-teacher or sinet train checkpoint, or a build-teacher ensemble (default: the "
             "shipped teacher).")] = None,
    long_side: Annotated[Optional[int], typer.Option(help="DeepLabV3+ members predict at this long side (multiple "
                                                          "of 32) instead of the teacher's own test-time sizes.")
                         ] = LABEL.long_side,
    mirror: Annotated[bool, typer.Option(help="Also predict the mirror image: flip test-time augmentation and the "
                                              "flip_agreement signal (a second forward pass).")] = LABEL.mirror,
    faces: Annotated[bool, typer.Option(help="Run MTCNN for the face_in_mask signal.")] = LABEL.faces,
    check_masks: Annotated[bool, typer.Option(
        "--check-masks/--ignore-masks", help="Check the masks manifest rows come with (human-made) against the "
                                             "teacher's, or ignore them (machine-made) and label those rows anew.")
                           ] = LABEL.check_masks,
    soft: Annotated[bool, typer.Option(help="Also write soft-probability PNGs.")] = LABEL.soft,
    batch_size: Annotated[int, typer.Option(help="Photos per model call.")] = LABEL.batch_size,
    workers: Annotated[int, typer.Option(help="Loader processes (local) or loading actors (ray).")] = LABEL.workers,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = LABEL.device,
    engine: Annotated[str, typer.Option(help=f"{' or '.join(ENGINES)}: DataLoader processes, or a Ray Data actor "
                                             "pool.")] = LABEL.engine,
    actors: Annotated[int, typer.Option(help="Ray: model actors.")] = LABEL.actors,
    gpus_per_actor: Annotated[Optional[float], typer.Option(help="Ray: GPUs per model actor (default: 1 where the "
                                                                 "cluster has GPUs, else 0).")] = LABEL.gpus_per_actor,
) -> None:
    """Predict a mask for every photo with quality signals and a review priority; resumable."""
    pseudo_label(images, teacher or TEACHER, out, LabelOptions(
        long_side=long_side, mirror=mirror, faces=faces, check_masks=check_masks, soft=soft, batch_size=batch_size,
        workers=workers, device=device, engine=engine, actors=actors, gpus_per_actor=gpus_per_actor))


def build_teacher_command(
    member: Annotated[list[Path], typer.Option(
        help="Member checkpoint (repeatable): a train-teacher (DeepLabV3+) or sinet train (SINet) checkpoint; "
             "FILE@S1,S2 predicts at these sizes (long side for DeepLabV3+, square side for SINet).")],
    calibrate: Annotated[list[Path], typer.Option(
        help="Manifest(s) holding the calibration rows: photos with human masks that no member was trained on.")],
    out: Annotated[Path, typer.Option(help="Ensemble file to write.")],
    split: Annotated[str, typer.Option(help="Split of the calibration rows (never the reported val set).")
                     ] = "holdout",
    target_precision: Annotated[float, typer.Option(
        help="Share of auto-accepted calibration masks that must reach IoU 0.90.")] = 0.97,
    card: Annotated[Optional[Path], typer.Option(help="JSON file of provenance (data, budgets) for the card.")
                    ] = None,
) -> None:
    """Assemble teachers into one ensemble file calibrated on held-out photos: vote weights, priority rule and
    the auto-accept rule, with the evidence in its card."""
    import json

    from pipeline.teacher.calibrate import build_teacher
    from pipeline.teacher.ensemble import member_from_file

    specs = []
    for spec in member:
        path, _, sizes = str(spec).partition("@")
        try:
            specs.append(member_from_file(path, sizes=[int(s) for s in sizes.split(",") if s]))
        except ValueError:
            raise UserError(f"--member {spec}: sizes must be integers, as in FILE@320,384") from None
    provenance = json.loads(card.read_text()) if card else {}
    evidence = build_teacher(specs, [str(p) for p in calibrate], split, str(out), target_precision, provenance)
    typer.echo(json.dumps(evidence, indent=2))
