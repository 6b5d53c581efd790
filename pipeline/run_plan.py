"""The run's config (TOML) and the steps it becomes.

A config names where outputs go, the human-labelled datasets to import, the teacher (a given checkpoint or
one to train), the photo sources and the options of every stage. Paths are relative to the config file's
folder; ``${VAR}`` is replaced from the environment, with ``SINET_SHARED`` defaulting to the project's sibling
``../shared``. Option tables are passed to the stage commands as they are (``time-budget = 30`` becomes
``--time-budget 30``), so every stage option is available without the orchestrator knowing it.

Photo sources come in two kinds:

- **labelled** (``masks = FOLDER``): human-made full-body masks; ``crop-baidu`` crops photo and mask, and the
  crops are reviewed (they are checked for framing; their masks are the people's);
- **unlabelled** (``masks_from = "teacher"`` or a SINet checkpoint): a model masks the whole photos only so
  that ``crop-baidu`` can choose and frame the faces; the crops are then pseudo-labelled by the teacher, and
  those masks (with their quality signals and priority) are reviewed.
"""

from __future__ import annotations

import os
import string
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pipeline
from pipeline import manifest as mf
from pipeline.run import RunError, Step, WaitingForReview, command, options_argv

PROJECT = Path(pipeline.__file__).resolve().parents[1]
"""The project folder (``SINET_SHARED`` defaults to its sibling ``shared``)."""

DATASET_KINDS = ("eg1800", "folder")


@dataclass
class Dataset:
    """A human-labelled dataset imported as a manifest (``eg1800`` layout, or ``images`` + ``masks`` folders)."""

    name: str
    kind: str
    path: Path
    masks: Path | None = None


@dataclass
class Source:
    """Photos to turn into reviewed training data.

    Args:
        name: short name; outputs go to ``<out>/<name>/``.
        images: folder of photos (``None`` with ``demo``: the photos that ship inside installed packages).
        masks: folder of human-made masks with the photos' stems (a labelled source).
        masks_from: ``teacher``, or a SINet checkpoint, that masks whole photos for cropping (unlabelled).
        demo: write the packaged demo photos (:mod:`pipeline.demo_data`) and use them.
    """

    name: str
    images: Path | None
    masks: Path | None = None
    masks_from: str | None = None
    demo: bool = False


@dataclass
class RunConfig:
    """Everything ``pipeline run`` needs; see ``configs/*.toml`` for commented examples."""

    path: Path
    out: Path
    threads: int | None = None
    datasets: list[Dataset] = field(default_factory=list)
    teacher: Path | None = None
    teacher_train: list[str] = field(default_factory=list)
    teacher_options: dict[str, Any] = field(default_factory=dict)
    sources: list[Source] = field(default_factory=list)
    crop_options: dict[str, Any] = field(default_factory=dict)
    label_options: dict[str, Any] = field(default_factory=dict)
    auto_accept: float | None = None
    accept_unscored: bool = True
    sinet_train: list[str] = field(default_factory=list)
    sinet_val: str = "curated"
    sinet_val_split: str = "val"
    baseline: bool = False
    sinet_options: dict[str, Any] = field(default_factory=dict)
    eval_options: dict[str, Any] = field(default_factory=dict)

    @property
    def review_db(self) -> Path:
        return self.out / "review.sqlite"

    @property
    def curated(self) -> Path:
        return self.out / "curated.csv"

    def models(self) -> list[str]:
        """SINet runs: ``sinet-plus`` (datasets + curated data) and, with ``baseline``, ``sinet-base``."""
        return (["sinet-base"] if self.baseline else []) + ["sinet-plus"]


def _expand(value: str, folder: Path) -> Path:
    variables = {"SINET_SHARED": str(PROJECT.parent / "shared"), **os.environ}
    try:
        text = string.Template(value).substitute(variables)
    except (KeyError, ValueError) as error:
        raise RunError(f"path {value!r}: unknown variable {error}") from None
    path = Path(text).expanduser()
    return path if path.is_absolute() else (folder / path).resolve()


def _table(data: dict, key: str) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise RunError(f"[{key}] must be a table")
    return value


def load_config(path: str | os.PathLike, auto_accept: float | None = None,
                teacher_override: Path | None = None) -> RunConfig:
    """Read and check a run config; ``auto_accept`` and ``teacher_override`` (from the command line) override
    the config's threshold and teacher (a given checkpoint replaces the teacher training)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise RunError(f"{path}: cannot read the config ({error})") from None
    folder = path.resolve().parent
    run = _table(data, "run")
    if "out" not in run:
        raise RunError(f"{path}: [run] needs out = FOLDER")
    config = RunConfig(path=path, out=_expand(run["out"], folder), threads=run.get("threads"))
    for name, spec in _table(data, "datasets").items():
        kind = spec.get("kind", "eg1800")
        if kind not in DATASET_KINDS:
            raise RunError(f"{path}: dataset {name}: kind must be one of {DATASET_KINDS}, not {kind!r}")
        config.datasets.append(Dataset(name, kind, _expand(spec["path"], folder),
                                       _expand(spec["masks"], folder) if "masks" in spec else None))
    teacher = _table(data, "teacher")
    config.teacher = _expand(teacher["checkpoint"], folder) if "checkpoint" in teacher else None
    if teacher_override is not None:
        config.teacher = teacher_override.resolve()
    config.teacher_train = list(teacher.get("train", []))
    config.teacher_options = dict(teacher.get("options", {}))
    for spec in data.get("sources", []):
        demo = bool(spec.get("demo", False))
        if not demo and "images" not in spec:
            raise RunError(f"{path}: source {spec.get('name')!r} needs images = FOLDER (or demo = true)")
        masks_from = spec.get("masks_from")
        if masks_from not in (None, "teacher"):
            masks_from = str(_expand(masks_from, folder))
        if (spec.get("masks") is None) == (masks_from is None):
            raise RunError(f"{path}: source {spec.get('name')!r} needs either masks = FOLDER (human-made) or "
                           "masks_from = 'teacher' / a SINet checkpoint")
        config.sources.append(Source(spec["name"], None if demo else _expand(spec["images"], folder),
                                     _expand(spec["masks"], folder) if spec.get("masks") else None,
                                     masks_from, demo))
    config.crop_options = _table(data, "crop")
    config.label_options = _table(data, "pseudo_label")
    review = _table(data, "review")
    config.auto_accept = auto_accept if auto_accept is not None else review.get("auto_accept")
    config.accept_unscored = bool(review.get("accept_unscored", True))
    sinet = _table(data, "sinet")
    config.sinet_train = list(sinet.get("train", []))
    config.sinet_val = sinet.get("val", "curated")
    config.sinet_val_split = sinet.get("val_split", "val")
    config.baseline = bool(sinet.get("baseline", False))
    config.sinet_options = dict(sinet.get("options", {}))
    config.eval_options = dict(sinet.get("eval", {}))
    check(config)
    return config


def check(config: RunConfig) -> None:
    """Refuse configs whose pieces do not fit together, before anything runs."""
    names = {d.name for d in config.datasets}
    for used in (*config.teacher_train, *config.sinet_train):
        if used not in names:
            raise RunError(f"{config.path}: dataset {used!r} is used but not defined under [datasets]")
    if config.sinet_val not in names | {"curated"}:
        raise RunError(f"{config.path}: [sinet] val = {config.sinet_val!r} is neither a dataset nor 'curated'")
    if config.teacher is None and not config.teacher_train:
        raise RunError(f"{config.path}: [teacher] needs checkpoint = FILE or train = [DATASETS]")
    if not config.sources:
        raise RunError(f"{config.path}: no [[sources]] of photos")
    if len({s.name for s in config.sources}) != len(config.sources):
        raise RunError(f"{config.path}: source names must be unique")
    if config.baseline and not config.sinet_train:
        raise RunError(f"{config.path}: baseline = true needs [sinet] train = [DATASETS] to train the baseline on")
    if config.auto_accept is not None and not 0 <= config.auto_accept <= 1:
        raise RunError(f"auto-accept threshold {config.auto_accept} is not a priority in [0, 1]")


# ---- steps ----

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
    from pipeline.review.queue import queue_manifests
    from pipeline.review.store import Store
    from pipeline.run_review import auto_accept, export_curated, undecided, verdicts_digest

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
                note = f"auto-accepted {accepted} (priority <= {config.auto_accept:g}); {left} left for people"
            waiting = undecided(store)
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
            curated = export_curated(store, config.curated)
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
    import json

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
