"""The ``sinet`` command: parses options and calls the trainer, evaluator, predictor, exporter and bench.

Commands are thin shells: they parse options, load the checkpoint through :mod:`sinet.checkpoint` and call the
pure cores (:mod:`sinet.evaluate`, :mod:`sinet.predict`, :mod:`sinet.export`, :mod:`sinet.bench`). Heavy
imports live inside the commands so ``sinet --help`` stays quick. How a command ends on an error is decided once,
in :mod:`sinet_plus.cli`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from sinet.training.config import TrainConfig
from sinet.weights import SINET
from sinet_plus.cli import new_app, version_option
from sinet_plus.errors import PathError, UserError

console = Console()
app = new_app("SINet: train, evaluate, predict, export and benchmark.")
Version = version_option("sinet")

TRAIN = TrainConfig(manifests=[], out="")
"""The defaults of ``sinet train``."""

WeightsOption = Annotated[Path, typer.Option("--weights", help="Official SINet.pth or a sinet-plus checkpoint "
                                                              "(default: the shipped SINet, sinet/weights/).")]


@app.callback()
def main(version: Version = None) -> None:
    """SINet commands."""


def _load(weights: Path, threads: int | None = None):
    """Load a checkpoint as ``(model, preprocessing, meta)``."""
    import torch

    from sinet.checkpoint import load_model

    if threads:
        torch.set_num_threads(threads)
    # The official weights produce subnormal floats (their inputs are of order 0.01); flushing them to zero
    # halves CPU latency and changes no label.
    torch.set_flush_denormal(True)
    return load_model(weights)


def _write_json(path: Path, payload: dict) -> None:
    from sinet_plus.files import write_text_atomic

    write_text_atomic(path, json.dumps(payload, indent=2) + "\n")
    console.print(f"wrote {path}")


def _score_table(title: str, rows: dict[str, dict]) -> Table:
    table = Table(title=title)
    for column in ("", "IoU (official)", "mIoU (2-class)", "boundary F1", "images"):
        table.add_column(column, justify="right")
    for name, scores in rows.items():
        table.add_row(name, f"{scores['iou']:.2f}", f"{scores['miou']:.2f}", f"{scores['boundary_f1']:.2f}",
                      str(scores["images"]))
    return table


# ---- train: the `sinet train` command (sinet/training/ owns its core) ----

def _source_shares(values: list[str] | None) -> list[tuple[str, float]] | None:
    """``SOURCE=SHARE`` values as pairs; a malformed one is a usage error naming it."""
    pairs = []
    for value in values or []:
        source, _, share = value.partition("=")
        try:
            pairs.append((source.strip(), float(share)))
        except ValueError:
            raise typer.BadParameter(f"{value!r} is not SOURCE=SHARE (e.g. baidu_crop=0.2)") from None
        if not source.strip():
            raise typer.BadParameter(f"{value!r} names no source (SOURCE=SHARE, e.g. baidu_crop=0.2)")
    return pairs or None


@app.command("train")
def train_command(
    out: Annotated[Path, typer.Option(help="Run folder: last.pt, stage1_best.pt, best.pt, metrics.csv, "
                                           "curves.png.")],
    manifest: Annotated[Optional[list[Path]], typer.Option(help="Training manifest(s); repeat to combine "
                                                                "(not needed with --resume).")] = None,
    val_manifest: Annotated[Optional[list[Path]], typer.Option(help="Validation manifest(s) "
                                                                    "(default: the training ones).")] = None,
    split: Annotated[str, typer.Option(help="Training split.")] = TRAIN.split,
    val_split: Annotated[str, typer.Option(help="Validation split (model selection).")] = TRAIN.val_split,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from last.pt.")] = False,
    stage: Annotated[Optional[list[int]], typer.Option(help="Stage(s) to run (repeat; default: "
                                                            f"{' then '.join(map(str, TRAIN.stages))}).")] = None,
    encoder: Annotated[Optional[Path], typer.Option(help="Stage-1 checkpoint for --stage 2 alone.")] = None,
    init: Annotated[Optional[Path], typer.Option(help="SINet checkpoint starting --stage 2 alone (fine-tuning "
                                                      "or a warm restart with a new schedule).")] = None,
    stage1_epochs: Annotated[int, typer.Option(help="Stage-1 epochs E.")] = TRAIN.stage1_epochs,
    stage2_epochs: Annotated[int, typer.Option(help="Stage-2 epochs E.")] = TRAIN.stage2_epochs,
    stage1_batch: Annotated[int, typer.Option(help="Stage-1 batch size.")] = TRAIN.stage1_batch,
    stage2_batch: Annotated[int, typer.Option(help="Stage-2 batch size.")] = TRAIN.stage2_batch,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = TRAIN.lr,
    lr_gamma: Annotated[float, typer.Option(help="LR factor at E/2 and E - E/6.")] = TRAIN.lr_gamma,
    conv_weight_decay: Annotated[float, typer.Option(help="L2 on conv weights.")] = TRAIN.conv_weight_decay,
    depthwise_weight_decay: Annotated[float, typer.Option(help="L2 on depthwise conv weights.")
                                      ] = TRAIN.depthwise_weight_decay,
    other_weight_decay: Annotated[float, typer.Option(help="L2 on BN, PReLU and SE parameters.")
                                  ] = TRAIN.other_weight_decay,
    boundary_weight: Annotated[float, typer.Option(help="Weight λ of the boundary-band CE.")] = TRAIN.boundary_weight,
    class_weighting: Annotated[bool, typer.Option(help="ERFNet class weights 1/ln(1.1 + p).")] = TRAIN.class_weighting,
    distill_weight: Annotated[float, typer.Option(help="Weight of a distillation term against the teacher "
                                                       "probabilities of the manifests' soft_mask column (0 = off)."
                                                  )] = TRAIN.distill_weight,
    teacher_maps: Annotated[Optional[list[Path]], typer.Option(help="Manifests whose soft_mask column gives the "
                                                                    "training rows teacher maps by id.")] = None,
    select_from: Annotated[float, typer.Option(help="Select the best epoch after this share of E.")
                           ] = TRAIN.select_from,
    average_epochs: Annotated[int, typer.Option(help="Also average the weights of the last N epochs into "
                                                     "averaged.pt (0 = off).")] = TRAIN.average_epochs,
    size: Annotated[int, typer.Option(help="Square input side (multiple of 32).")] = TRAIN.size,
    preprocessing: Annotated[str, typer.Option(help="Normalisation preset stored in checkpoints.")
                             ] = TRAIN.preprocessing,
    rotation: Annotated[float, typer.Option(help="Augmentation: rotations within ± this many degrees.")
                        ] = TRAIN.augmentation.rotation,
    seed: Annotated[int, typer.Option(help="Run seed.")] = TRAIN.seed,
    workers: Annotated[Optional[int], typer.Option(help="DataLoader worker processes (default: on a CPU, the "
                                                        "cores the training threads leave free).")] = TRAIN.workers,
    threads: Annotated[Optional[int], typer.Option(help="torch CPU threads (1 is fastest on a busy machine; "
                                                        "a resumed run keeps its own unless given).")] = TRAIN.threads,
    device: Annotated[str, typer.Option(help="auto (cuda, mps, cpu) or a torch device.")] = TRAIN.device,
    amp: Annotated[bool, typer.Option(help="Mixed precision on CUDA.")] = TRAIN.amp,
    compile: Annotated[Optional[bool], typer.Option(help="torch.compile the training step (minutes of compilation "
                                                         "for faster steps; default: in stages long enough to earn "
                                                         "it back, where it builds).")] = TRAIN.compile,
    checkpoint_every: Annotated[int, typer.Option(help="Also checkpoint every N steps (0 = epoch ends).")
                                ] = TRAIN.checkpoint_every,
    time_budget: Annotated[Optional[float], typer.Option(help="Minutes for the whole run; E of each stage is "
                                                              "cut to fit.")] = TRAIN.time_budget,
    stage1_share: Annotated[float, typer.Option(help="Share of --time-budget for stage 1.")] = TRAIN.stage1_share,
    cache_gb: Annotated[float, typer.Option(help="GB of decoded training photos kept in memory (0 = decode "
                                                 "each time; results do not change).")] = TRAIN.cache_gb,
    epoch_size: Annotated[Optional[int], typer.Option(help="Samples per epoch (default: every training sample "
                                                           "once); equal steps across training sets.")
                          ] = TRAIN.epoch_size,
    source_share: Annotated[Optional[list[str]], typer.Option(
        help="SOURCE=SHARE (repeatable): that share of each epoch's samples comes from the rows of that manifest "
             "source, e.g. baidu_crop=0.2; unlisted sources share the rest by size.", callback=_source_shares)
                            ] = None,
) -> None:
    """Two-stage training with the official recipe (encoder on 1/8 labels, then the full model)."""
    from sinet.training.trainer import train

    if not manifest and not resume:
        raise UserError("--manifest is required (unless --resume)")
    stages = tuple(stage or TRAIN.stages)
    if init and (encoder or stages != (2,)):
        raise UserError("--init starts stage 2 alone: give --stage 2 and no --encoder")
    config = TrainConfig(
        manifests=[str(m) for m in manifest or []], out=str(out),
        val_manifests=[str(m) for m in val_manifest] if val_manifest else None, split=split, val_split=val_split,
        stages=stages, encoder=str(encoder) if encoder else None, init=str(init) if init else None,
        stage1_epochs=stage1_epochs, stage2_epochs=stage2_epochs, stage1_batch=stage1_batch,
        stage2_batch=stage2_batch, lr=lr, lr_gamma=lr_gamma, conv_weight_decay=conv_weight_decay,
        depthwise_weight_decay=depthwise_weight_decay, other_weight_decay=other_weight_decay,
        boundary_weight=boundary_weight, distill_weight=distill_weight,
        teacher_maps=[str(m) for m in teacher_maps] if teacher_maps else None, class_weighting=class_weighting,
        select_from=select_from, average_epochs=average_epochs, size=size,
        preprocessing=preprocessing, augmentation=dataclasses.replace(TRAIN.augmentation, size=size, rotation=rotation),
        seed=seed, workers=workers, threads=threads, device=device, amp=amp, compile=compile,
        checkpoint_every=checkpoint_every, time_budget=time_budget, stage1_share=stage1_share, cache_gb=cache_gb,
        epoch_size=epoch_size, source_shares=dict(source_share) if source_share else TRAIN.source_shares)
    best = train(config, resume=resume)
    for stage_name, scores in best.items():
        if stage_name == "averaged":
            console.print(f"mean of the last {scores['epochs']} epochs: val IoU {scores['iou']:.2f}")
        else:
            console.print(f"stage {stage_name}: best val IoU {scores['iou']:.2f} at epoch {scores['epoch']}")
    console.print(f"best model: {out / 'best.pt'}")


@app.command("eval")
def eval_command(
    manifest: Annotated[Path, typer.Option(help="Manifest with image and mask columns.")],
    weights: WeightsOption = SINET,
    split: Annotated[str, typer.Option(help="Split to evaluate.")] = "val",
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the report here (JSON).")] = None,
    rotations: Annotated[bool, typer.Option("--rotations/--no-rotations",
                                            help="Add the rotation-robustness table (±25/45/75/90°).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the rotation angles.")] = 0,
    sheet: Annotated[Optional[Path], typer.Option(help="PNG sheet of the worst images "
                                                       "(default: beside --json, <name>_worst.png).")] = None,
    threads: Annotated[int, typer.Option(help="CPU threads for torch (1 is fastest on a busy machine).")] = 1,
) -> None:
    """Official metric (per-image foreground IoU), two-class mIoU and boundary F1, at 224 and at photo size."""
    from sinet.data import manifest_samples
    from sinet.evaluate import ROTATION_LIMITS, evaluate

    model, preprocessing, meta = _load(weights, threads)
    items = manifest_samples([manifest], split)
    if not items:
        raise PathError(manifest, f"no accepted rows with a mask in split {split!r}")
    if sheet is None and json_out is not None:
        sheet = json_out.with_name(f"{json_out.stem}_worst.png")
    report = evaluate(model, preprocessing, items, rotations=ROTATION_LIMITS if rotations else (), seed=seed,
                      sheet_path=sheet)
    report.update(weights=str(weights), source=meta["source"], arch=meta["arch"], manifest=str(manifest),
                  split=split, preprocessing=preprocessing.to_dict(), sheet=str(sheet) if sheet else None)
    size = "x".join(map(str, preprocessing.size))
    rows = {f"at {size}": report, "at photo size": report["full_resolution"]}
    rows.update({f"rotated ±{limit}°": scores for limit, scores in report["rotations"].items()})
    console.print(_score_table(f"{weights.name} on {manifest.name} [{split}]", rows))
    for skip in report["skipped"]:
        Console(stderr=True).print(f"[yellow]skipped:[/] {skip['reason']}")
    if json_out is not None:
        _write_json(json_out, report)


@app.command("predict")
def predict_command(
    source: Annotated[Path, typer.Argument(help="A photo or a folder of photos.")],
    out: Annotated[Path, typer.Option(help="Output folder: masks/, cutouts/, overlays/, manifest.csv.")],
    weights: WeightsOption = SINET,
    cutouts: Annotated[bool, typer.Option("--cutouts/--no-cutouts", help="Write RGBA cut-outs.")] = True,
    overlays: Annotated[bool, typer.Option("--overlays/--no-overlays", help="Write overlay JPEGs.")] = True,
    threads: Annotated[int, typer.Option(help="CPU threads for torch (1 is fastest on a busy machine).")] = 1,
) -> None:
    """Segment a photo or a folder: masks at the photo's size, soft-alpha cut-outs and overlays (resumable)."""
    from sinet.predict import PredictOutputs, predict_folder
    from sinet_plus.imageio import list_photos

    if not source.exists():
        raise PathError(source, "not found")
    photos = list_photos(source) if source.is_dir() else [source]
    if not photos:
        raise PathError(source, "no photos")
    model, preprocessing, _ = _load(weights, threads)
    predict_folder(model, preprocessing, photos, PredictOutputs(out, cutouts, overlays))


@app.command("export")
def export_command(
    onnx: Annotated[Path, typer.Option("--onnx", help="ONNX file to write.")],
    weights: WeightsOption = SINET,
    opset: Annotated[int, typer.Option(help="ONNX opset (11 up to the newest the installed torch writes).")] = 17,
    dynamic_batch: Annotated[bool, typer.Option(help="Make the batch dimension dynamic.")] = True,
    tolerance: Annotated[float, typer.Option(help="Largest allowed |torch - onnxruntime| logit difference.")] = 1e-3,
) -> None:
    """Export the fused graph to ONNX (preprocessing in the metadata) and check parity with onnxruntime."""
    from sinet.export import export_onnx, parity

    model, preprocessing, _ = _load(weights)
    export_onnx(model, preprocessing, onnx, opset=opset, dynamic_batch=dynamic_batch)
    difference, agreement = parity(model, preprocessing, onnx)
    console.print(f"wrote {onnx}; onnxruntime vs torch: max |Δlogit| {difference:.2e}, "
                  f"label agreement {100 * agreement:.3f} %")
    if difference > tolerance:
        raise UserError(f"parity check failed: {difference:.2e} > {tolerance:.0e}")


@app.command("bench")
def bench_command(
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the figures here (JSON).")] = None,
    weights: Annotated[Optional[Path], typer.Option(help="Checkpoint to time (default: random init; "
                                                         "speed does not depend on the weights).")] = None,
    threads: Annotated[int, typer.Option(help="CPU threads for every contender.")] = 2,
    rounds: Annotated[int, typer.Option(help="Interleaved rounds; each contender runs once per round.")] = 30,
    runs: Annotated[int, typer.Option(help="Forward passes per contender per round.")] = 10,
    seconds: Annotated[float, typer.Option(help="Time budget of the latency rounds.")] = 180.0,
    training_rounds: Annotated[int, typer.Option(help="Interleaved rounds of training steps (batch 24).")] = 3,
    compile_model: Annotated[bool, typer.Option("--compile/--no-compile",
                                                help="Include torch.compile (needs a C++ compiler).")] = True,
    wait_policy: Annotated[str, typer.Option(help="OpenMP (and onnxruntime) idle threads: 'default' (the "
                                                  "libraries' own: spin briefly, then sleep), 'passive' sleep, "
                                                  "'active' spin. 'passive' slows SINet on a quiet machine (a "
                                                  "sleeping thread is woken for each of ~200 small ops), spinning "
                                                  "slows it on a loaded one (docs/sinet.md).")] = "default",
    manifest: Annotated[Optional[Path], typer.Option(help="Manifest whose train split feeds a real-photo "
                                                          "training throughput of both stages.")] = None,
) -> None:
    """Params, MACs, batch-1 224x224 CPU latency of SINet's forms and training-step speed, against the authors'
    module (from ../shared/reference/official) and LR-ASPP."""
    import os
    import sys

    if wait_policy not in ("default", "passive", "active"):
        raise UserError(f"--wait-policy must be 'default', 'passive' or 'active', not {wait_policy!r}")
    if wait_policy != "default":
        if "torch" in sys.modules and os.environ.get("OMP_WAIT_POLICY", "").lower() != wait_policy:
            Console(stderr=True).print("[yellow]torch is already loaded: --wait-policy cannot take effect[/]")
        os.environ["OMP_WAIT_POLICY"] = wait_policy  # read by OpenMP when torch loads, i.e. on the next import
    from sinet.bench import run_bench

    model = _load(weights)[0] if weights else None
    report = run_bench(model, threads=threads, rounds=rounds, runs=runs, budget_seconds=seconds,
                       compile_model=compile_model, training_rounds=training_rounds, training_manifest=manifest,
                       spinning=wait_policy != "passive")
    table = Table(title=f"batch 1, 224x224, {threads} threads, median of {rounds} interleaved rounds")
    for column in ("contender", "params", "MMACs", "ms", "FPS", "x LR-ASPP", "x SINet eager"):
        table.add_column(column, justify="right")
    for name, row in report["latency"].items():
        table.add_row(name, f"{row['params']:,}", f"{row['mmacs']:.2f}", f"{row['ms']:.2f}", f"{row['fps']:.0f}",
                      f"{row['vs_lraspp']:.2f}", f"{row['vs_sinet_eager']:.2f}")
    console.print(table)
    console.print("training step, batch 24, images/s: " + ", ".join(
        f"{name} {speed:.1f}" for name, speed in report["training_forms"].items()))
    for stage, speed in report["training_real_photos"].items():
        console.print(f"training on real photos, {stage}: {speed:.1f} images/s")
    for part, reason in report["skipped"].items():
        Console(stderr=True).print(f"[yellow]left out, {part}:[/] {reason}")
    ratios = report["ratios"]
    summary = [f"SINet eager = {ratios['sinet_eager_vs_lraspp']:.2f}x LR-ASPP",
               f"fastest form ({report['fastest_form']}) {ratios['fastest_fps']:.0f} FPS, fp32 "
               f"({report['fastest_fp32_form']}) {ratios['fastest_fp32_fps']:.0f} FPS"]
    if "sinet_eager_vs_official_eager" in ratios:
        summary += [f"vs the authors' module: eager {ratios['sinet_eager_vs_official_eager']:.2f}x, onnxruntime "
                    f"{ratios['sinet_onnxruntime_vs_official_onnxruntime']:.2f}x, training step "
                    f"({report['training_fastest_form']}) {ratios['training_sinet_fastest_vs_official']:.2f}x"]
    console.print("; ".join(summary) + f". Load average {report['conditions']['load_average'][0]:.1f} on "
                  f"{report['conditions']['cpus']} CPUs.")
    if json_out is not None:
        _write_json(json_out, report)
