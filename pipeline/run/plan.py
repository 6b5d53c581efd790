"""The steps a run config becomes: import the datasets, train the teacher, crop and pseudo-label every photo
source, review, export, then train and evaluate SINet (see :mod:`pipeline.run`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pipeline.report import ReportInputs
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
            argv += ["--holdout", str(dataset.holdout)] if dataset.holdout else []
        else:
            argv = [*command("pipeline"), "manifest", "import-folder", str(dataset.path), "--out", str(out),
                    "--source", dataset.name] + (["--masks", str(dataset.masks)] if dataset.masks else [])
        steps.append(Step(f"data-{dataset.name}", f"import {dataset.kind} dataset {dataset.name}", [out], argv,
                          inputs=[p for p in (dataset.path, dataset.masks) if p],
                          note=lambda out=out: f"{_rows(out)} rows"))
    return steps


WHOLE_PHOTO_SIDE = 800
"""Long side at which the teacher masks whole photos for cropping: teachers trained on portrait crops see a
full-body person at their training scale only when the photo is not shrunk to their input size (see
docs/run.md)."""


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
                    *options_argv({**config.label_options, "faces": False, "long-side": WHOLE_PHOTO_SIDE})]
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
        checked = folder / "checked"
        steps.append(Step(f"{source.name}-check", "the teacher checks the crops' human-made masks",
                          [checked / "manifest.csv"],
                          [*command("pipeline"), "pseudo-label", str(crops / "manifest.csv"), "--teacher",
                           str(teacher), "--out", str(checked), *options_argv(config.label_options)],
                          inputs=teacher_inputs, after=(steps[-1].name, *teacher_after), owns=[checked],
                          note=lambda: _accepted_note(checked / "manifest.csv")))
        return steps, checked / "manifest.csv", steps[-1].name
    labels = folder / "pseudo"
    # the crops carry a machine's whole-photo mask, a framing aid: the teacher labels them anew
    steps.append(Step(f"{source.name}-label", "pseudo-label the crops with the teacher", [labels / "manifest.csv"],
                      [*command("pipeline"), "pseudo-label", str(crops / "manifest.csv"), "--teacher", str(teacher),
                       "--out", str(labels), "--ignore-masks", *options_argv(config.label_options)],
                      inputs=teacher_inputs, after=(steps[-1].name, *teacher_after), owns=[labels],
                      note=lambda: _accepted_note(labels / "manifest.csv")))
    return steps, labels / "manifest.csv", steps[-1].name


def review_steps(config: RunConfig, manifests: list[Path], after: tuple[str, ...]) -> list[Step]:
    from pipeline.review.auto_accept import TEACHER_RULE, auto_accept
    from pipeline.review.export import export_manifest, verdicts_digest
    from pipeline.review.queue import queue_manifests
    from pipeline.review.store import Store

    db = config.review_db

    def queue() -> str:
        with Store(db, create=True) as store:
            added, known, problems, _ = queue_manifests(store, manifests, root=config.out)
        return f"{added} new items, {known} already queued" + (f", {len(problems)} problems" if problems else "")

    def review() -> str:
        with Store(db) as store:
            note = ""
            if config.auto_accept is not None:
                accepted, left = auto_accept(store, config.auto_accept, config.accept_unscored)
                rule = ("the teacher's calibrated rule" if config.auto_accept == TEACHER_RULE
                        else f"priority <= {config.auto_accept:g}")
                note = f"auto-accepted {accepted} ({rule}); {left} left for people"
            waiting = len(store.undecided())
        if waiting and config.auto_accept is None:
            raise WaitingForReview(f"{waiting} items wait for review: `pipeline review --db {db}`, then rerun "
                                   f"`pipeline run {config.path}` (or add --auto-accept teacher)")
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


def sinet_steps(config: RunConfig, reviewed: dict[str, Path]) -> list[Step]:
    """Train and evaluate SINet: one model on the datasets plus every accepted item, or, with arms, a common
    start (given, or trained as ``sinet-base``) fine-tuned once per arm and seed on the datasets plus the items
    accepted from the arm's sources, every run with the same options (plus the arm's own) and number of optimizer
    steps.

    Args:
        config: the run config.
        reviewed: each source's reviewed manifest (the arms pick their accepted items by it).
    """
    val = config.curated if config.sinet_val == "curated" else dataset_manifest(config, config.sinet_val)
    val_after = ("export",) if config.sinet_val == "curated" else (f"data-{config.sinet_val}",)
    scored = dataset_manifest(config, config.eval_on) if config.eval_on else val
    scored_split = config.eval_split if config.eval_on else config.sinet_val_split
    scored_after = (f"data-{config.eval_on}",) if config.eval_on else val_after
    datasets = [dataset_manifest(config, name) for name in config.sinet_train]
    datasets_after = tuple(f"data-{name}" for name in config.sinet_train)
    selection = ["--val-manifest", str(val), "--val-split", config.sinet_val_split]

    def train(name: str, title: str, manifests: list[Path], after: tuple[str, ...], options: dict[str, Any],
              extra: list[str], group: str | None, inputs: list[Path] | None = None) -> Step:
        out = config.out / name
        argv = [*command("sinet"), "train", "--out", str(out), *selection, *extra]
        for manifest in manifests:
            argv += ["--manifest", str(manifest)]
        return Step(name, title, [out / "best.pt"], argv + options_argv(options), after=tuple(dict.fromkeys(after)),
                    inputs=inputs or [], owns=[out], resume=("--resume", out / "last.pt"), group=group)

    def evaluate(name: str, group: str = "sinet-eval") -> Step:
        report = config.out / name / "eval.json"
        where = f"{config.eval_on or config.sinet_val} [{scored_split}]"
        return Step(f"{name}-eval", f"evaluate {name} on {where}", [report],
                    [*command("sinet"), "eval", "--weights", str(config.out / name / "best.pt"), "--manifest",
                     str(scored), "--split", scored_split, "--json", str(report), *options_argv(config.eval_options)],
                    after=(name, *scored_after), owns=[report], group=group, note=lambda: score_note(report))

    if not config.arms:
        data = " + ".join(config.sinet_train + ["curated"])
        title, start = f"train SINet on {data}", []
        if config.init:
            title, start = f"fine-tune {config.init.name} on {data}", ["--stage", "2", "--init", str(config.init)]
        model = train("sinet-plus", title, datasets + [config.curated], datasets_after + ("export",) + val_after,
                      config.sinet_options, start, None)
        return [model, evaluate(model.name)]
    steps: list[Step] = []
    start, start_after = config.init, ()
    if start is None:
        base = train("sinet-base", "train the common start on " + " + ".join(config.sinet_train), datasets,
                     datasets_after + val_after, config.base_options or {}, [], None)
        steps += [base, evaluate(base.name)]
        start, start_after = config.out / base.name / "best.pt", (base.name,)
    for arm, sources in config.arms.items():
        steps.append(arm_data_step(config, arm, sources, reviewed))
    trainings = []
    for index, model in enumerate(config.models()):
        arm, seed = model.rsplit("-s", 1)
        title = f"fine-tune on {' + '.join(config.sinet_train + config.arms[arm])}, seed {seed}"
        extra = [arm_manifest(config, arm)] if config.arms[arm] else []
        # an arm's trainings depend on its accepted items' content, not on the whole review: a change in another
        # arm's source leaves them current
        options = {**config.sinet_options, **config.arm_options.get(arm, {})}
        trainings.append(train(model, title, datasets + extra, datasets_after + start_after + val_after,
                               options, ["--stage", "2", "--init", str(start), "--seed", seed],
                               f"sinet-train-{index // max(1, config.parallel)}", inputs=extra))
    pairs = max(1, config.parallel)
    return steps + trainings + [evaluate(step.name, f"sinet-eval-{index // pairs}")
                                for index, step in enumerate(trainings)]


def arm_manifest(config: RunConfig, arm: str) -> Path:
    return config.out / "arms" / f"{arm}.csv"


def arm_data_step(config: RunConfig, arm: str, sources: list[str], reviewed: dict[str, Path]) -> Step:
    """The accepted items of an arm's sources: the curated rows whose ids come from those sources' reviewed
    manifests (none for the datasets-only arm)."""
    out = arm_manifest(config, arm)

    def write() -> str:
        ids = {str(i) for name in sources for i in mf.read_manifest(reviewed[name]).frame["id"]}
        curated = mf.read_manifest(config.curated)
        rows = mf.Manifest(curated.frame[curated.frame["id"].isin(ids)].reset_index(drop=True), curated.root)
        mf.write_manifest(rows, out)
        return f"{len(rows)} accepted rows from {', '.join(sources) or 'no source'}"

    return Step(f"{arm}-data", f"the accepted items of arm {arm}", [out], action=write, after=("export",),
                state=lambda: sources)


def shown_models(config: RunConfig) -> dict[str, Path]:
    """Title → checkpoint of the SINets whose masks the report shows: the checkpoint the fine-tuning starts from
    (given, or the arms' trained common start), then each trained model."""
    start = {}
    if config.init is not None:
        start = {f"{config.init.stem} (before)": config.init}
    elif config.arms:
        start = {"sinet-base (common start)": config.out / "sinet-base" / "best.pt"}
    after = " (after)" if start else ""
    return start | {model + after: config.out / model / "best.pt" for model in config.models()}


def report_inputs(config: RunConfig) -> ReportInputs:
    """What the run report shows, from where this run's steps write it."""
    return ReportInputs(title=f"pipeline run {config.path.name}",
                        crops=[config.out / s.name / "crops" / "manifest.csv" for s in config.sources],
                        labels=[config.out / s.name / ("checked" if s.masks else "pseudo") / "manifest.csv"
                                for s in config.sources],
                        review_db=config.review_db, curated=config.curated, models=shown_models(config))


def _accepted_note(manifest: Path) -> str:
    """``812 masks, 430 auto-accepted by the teacher's rule`` for a pseudo-label or check output."""
    if not manifest.is_file():
        return ""
    frame = mf.read_manifest(manifest).frame
    if "auto_accept" not in frame:
        return f"{len(frame)} masks"
    accepted = frame["auto_accept"].astype(str).str.lower().eq("true").sum()
    return f"{len(frame)} masks, {accepted} pass the teacher's auto-accept rule"


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
    reviewed, writers = {}, []
    for source in config.sources:
        source_part, manifest, writer = source_steps(config, source)
        steps += source_part
        reviewed[source.name] = manifest
        writers.append(writer)
    steps += review_steps(config, list(reviewed.values()), tuple(writers)) + sinet_steps(config, reviewed)
    names = [step.name for step in steps]
    if stop_after is None:
        return steps
    if stop_after not in names:
        raise RunError(f"--stop-after {stop_after}: no such step (steps: {', '.join(names)})")
    return steps[:names.index(stop_after) + 1]
