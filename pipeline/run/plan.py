"""The steps a run config becomes: import the datasets, train the teacher, crop and pseudo-label every photo
source, review, export, then train and evaluate SINet (see :mod:`pipeline.run`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pipeline.run.config import RunConfig, Source
from pipeline.run.step import RunError, Step, WaitingForReview
from sinet_plus import manifest as mf


def command(name: str) -> list[str]:
    """argv start of a console script of this installation (``pipeline`` or ``sinet``)."""
    script = Path(sys.executable).with_name(name)
    return [str(script)] if script.exists() else [name]


def options_argv(options: dict[str, Any]) -> list[str]:
    """Command-line options from a config table: ``{"time-budget": 30, "mirror": False}`` →
    ``--time-budget 30 --no-mirror``; lists repeat the option; ``True`` gives the bare flag."""
    argv: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, list):
            for item in value:
                argv += [flag, str(item)]
        else:
            argv += [flag, str(value)]
    return argv


def dataset_manifest(config: RunConfig, name: str) -> Path:
    return config.out / "data" / f"{name}.csv"


def teacher_path(config: RunConfig) -> Path:
    return config.teacher or config.out / "teacher" / "teacher.pt"


def _rows(path: Path) -> int:
    return len(mf.read_manifest(path)) if path.is_file() else 0


def dataset_steps(config: RunConfig) -> list[Step]:
    steps = []
    for dataset in config.datasets:
        out = dataset_manifest(config, dataset.name)
        if dataset.kind == "eg1800":
            argv = [*command("pipeline"), "manifest", "import-eg1800", str(dataset.path), "--out", str(out)]
        else:
            argv = [*command("pipeline"), "manifest", "import-folder", str(dataset.path), "--out", str(out),
                    "--source", dataset.name] + (["--masks", str(dataset.masks)] if dataset.masks else [])
        steps.append(Step(f"data-{dataset.name}", f"import {dataset.kind} dataset {dataset.name}", [out], argv,
                          inputs=[p for p in (dataset.path, dataset.masks) if p],
                          note=lambda out=out: f"{_rows(out)} rows"))
    return steps


def teacher_steps(config: RunConfig) -> list[Step]:
    if config.teacher is not None:
        return []
    out = teacher_path(config)
    argv = [*command("pipeline"), "train-teacher", "--out", str(out)]
    for name in config.teacher_train:
        argv += ["--manifest", str(dataset_manifest(config, name))]
    return [Step("teacher", "train the DeepLabV3+ teacher", [out], argv + options_argv(config.teacher_options),
                 after=tuple(f"data-{n}" for n in config.teacher_train), resume=("--resume", out))]


def source_steps(config: RunConfig, source: Source) -> tuple[list[Step], Path, str]:
    """Steps of one source; returns them, the manifest to review and the name of the step writing it."""
    from pipeline.demo_data import write_demo_photos

    folder = config.out / source.name
    teacher = teacher_path(config)
    teacher_after = () if config.teacher else ("teacher",)
    teacher_inputs = [config.teacher] if config.teacher else []
    steps: list[Step] = []
    images, images_after, images_inputs = source.images, (), [source.images] if source.images else []
    if source.demo:
        images = folder / "photos"
        steps.append(Step(f"{source.name}-photos", "write the demo photos that ship inside installed packages",
                          [images], action=lambda: f"{len(write_demo_photos(images))} photos in {images}"))
        images_after, images_inputs = (steps[-1].name,), []
    masks, masks_after, masks_inputs = source.masks, (), [source.masks] if source.masks else []
    if source.masks_from is not None:
        out = folder / "photo-masks"
        masks, masks_after = out / "masks", (f"{source.name}-masks",)
        if source.masks_from == "teacher":
            argv = [*command("pipeline"), "pseudo-label", str(images), "--teacher", str(teacher), "--out", str(out),
                    *options_argv({**config.label_options, "faces": False})]
            title, after, masks_inputs = "teacher masks the whole photos (for cropping)", teacher_after, teacher_inputs
        else:
            argv = [*command("sinet"), "predict", str(images), "--weights", source.masks_from, "--out", str(out),
                    "--no-cutouts", "--no-overlays"]
            title, after, masks_inputs = "SINet masks the whole photos (for cropping)", (), [Path(source.masks_from)]
        steps.append(Step(f"{source.name}-masks", title, [out / "manifest.csv"], argv, inputs=images_inputs +
                          masks_inputs, after=images_after + after, owns=[out]))
    crops = folder / "crops"
    steps.append(Step(f"{source.name}-crop", "crop-baidu: 3:4 portraits around the faces", [crops / "manifest.csv"],
                      [*command("pipeline"), "crop-baidu", str(images), str(masks), "--out", str(crops),
                       "--preview", str(folder / "crops-sheet.png"), *options_argv(config.crop_options)],
                      inputs=images_inputs + ([] if source.masks_from else masks_inputs),
                      after=images_after + masks_after, owns=[crops, folder / "crops-sheet.png"],
                      note=lambda: f"{_rows(crops / 'manifest.csv')} crops"))
    if source.masks is not None:
        return steps, crops / "manifest.csv", steps[-1].name
    labels = folder / "pseudo"
    steps.append(Step(f"{source.name}-label", "pseudo-label the crops with the teacher", [labels / "manifest.csv"],
                      [*command("pipeline"), "pseudo-label", str(crops / "manifest.csv"), "--teacher", str(teacher),
                       "--out", str(labels), *options_argv(config.label_options)],
                      inputs=teacher_inputs, after=(steps[-1].name, *teacher_after), owns=[labels],
                      note=lambda: f"{_rows(labels / 'manifest.csv')} masks"))
    return steps, labels / "manifest.csv", steps[-1].name


def review_steps(config: RunConfig, manifests: list[Path], after: tuple[str, ...]) -> list[Step]:
    from pipeline.review.auto_accept import auto_accept
    from pipeline.review.export import export_manifest, verdicts_digest
    from pipeline.review.queue import queue_manifests
    from pipeline.review.store import Store

    db = config.review_db

    def queue() -> str:
        with Store(db, create=True) as store:
            added, known, problems = queue_manifests(store, manifests, root=config.out)
        return f"{added} new items, {known} already queued" + (f", {len(problems)} problems" if problems else "")

    def review() -> str:
        with Store(db) as store:
            note = ""
            if config.auto_accept is not None:
                accepted, left = auto_accept(store, config.auto_accept, config.accept_unscored)
                note = f"auto-accepted {accepted} (priority <= {config.auto_accept:g}); {left} left for people"
            waiting = len(store.undecided())
        if waiting and config.auto_accept is None:
            raise WaitingForReview(f"{waiting} items wait for review: `pipeline review --db {db}`, then rerun "
                                   f"`pipeline run {config.path}` (or add --auto-accept THRESHOLD)")
        return note or "every item decided"

    def verdicts() -> str:
        if not db.is_file():
            return ""
        with Store(db) as store:
            return verdicts_digest(store)

    def export() -> str:
        with Store(db) as store:
            curated, _ = export_manifest(store, config.curated, split="train")  # the split sinet train reads
        mf.write_manifest(curated, config.curated)
        counts = curated.frame["reviewer"].value_counts().to_dict() if len(curated) else {}
        if len(curated) == 0:
            raise RunError("no item was accepted: nothing to train on")
        return f"{len(curated)} accepted rows ({', '.join(f'{n} by {who}' for who, n in counts.items())})"

    return [Step("queue", "queue the generated masks for review", [db], action=queue, after=after, owns=[]),
            Step("review", "human review" if config.auto_accept is None else "unattended auto-accept", [db],
                 # a review that stopped to wait stays "running", so it is checked again on every run
                 action=review, after=("queue",), owns=[], state=lambda: (config.auto_accept, config.accept_unscored)),
            # after the queue, not the review step: the export (hence the training) reruns exactly when the
            # verdicts it exports change, whoever made them
            Step("export", "export the accepted items as a training manifest", [config.curated], action=export,
                 after=("queue",), state=lambda: (config.auto_accept, config.accept_unscored, verdicts()))]


def sinet_steps(config: RunConfig) -> list[Step]:
    val = config.curated if config.sinet_val == "curated" else dataset_manifest(config, config.sinet_val)
    val_after = ("export",) if config.sinet_val == "curated" else (f"data-{config.sinet_val}",)
    base = [dataset_manifest(config, name) for name in config.sinet_train]
    base_after = tuple(f"data-{name}" for name in config.sinet_train)
    trainings, evaluations = [], []
    for model in config.models():
        out = config.out / model
        manifests = base + ([config.curated] if model == "sinet-plus" else [])
        after = base_after + (("export",) if model == "sinet-plus" else ()) + val_after
        argv = [*command("sinet"), "train", "--out", str(out), "--val-manifest", str(val),
                "--val-split", config.sinet_val_split]
        for manifest in manifests:
            argv += ["--manifest", str(manifest)]
        title = "train SINet on " + " + ".join(config.sinet_train + (["curated"] if model == "sinet-plus" else []))
        trainings.append(Step(model, title, [out / "best.pt"], argv + options_argv(config.sinet_options),
                              after=tuple(dict.fromkeys(after)), owns=[out], resume=("--resume", out / "last.pt"),
                              group="sinet-train"))
        report = out / "eval.json"
        evaluations.append(Step(f"{model}-eval", f"evaluate {model} on {config.sinet_val} [{config.sinet_val_split}]",
                                [report], [*command("sinet"), "eval", "--weights", str(out / "best.pt"),
                                           "--manifest", str(val), "--split", config.sinet_val_split,
                                           "--json", str(report), *options_argv(config.eval_options)],
                                after=(model, *val_after), owns=[report], group="sinet-eval",
                                note=lambda r=report: score_note(r)))
    return trainings + evaluations


def score_note(report: Path) -> str:
    """``IoU 91.2, mIoU 93.0, boundary F1 80.1`` from a ``sinet eval`` JSON report."""
    try:
        scores = json.loads(report.read_text())
        return f"IoU {scores['iou']:.2f}, mIoU {scores['miou']:.2f}, boundary F1 {scores['boundary_f1']:.2f}"
    except (OSError, ValueError, KeyError):
        return ""


def plan(config: RunConfig, stop_after: str | None = None) -> list[Step]:
    """Every step of the run in order, up to and including ``stop_after`` when given."""
    steps = dataset_steps(config) + teacher_steps(config)
    manifests, writers = [], []
    for source in config.sources:
        source_part, manifest, writer = source_steps(config, source)
        steps += source_part
        manifests.append(manifest)
        writers.append(writer)
    steps += review_steps(config, manifests, tuple(writers)) + sinet_steps(config)
    names = [step.name for step in steps]
    if stop_after is None:
        return steps
    if stop_after not in names:
        raise RunError(f"--stop-after {stop_after}: no such step (steps: {', '.join(names)})")
    return steps[:names.index(stop_after) + 1]
