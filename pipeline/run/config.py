"""The run's config (TOML): where outputs go, the human-labelled datasets to import, the teacher (a given checkpoint
or one to train), the photo sources and the options of every stage.

Paths are relative to the config file's folder; ``${VAR}`` is replaced from the environment, with
``SINET_SHARED`` defaulting to the project's sibling ``../shared``. Option tables are passed to the stage commands
as they are (``time-budget = 30`` becomes ``--time-budget 30``), so every stage option is available without the
orchestrator knowing it; every other key must be one the orchestrator knows (a typo is refused with the key and
the file).

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
from pipeline.review.auto_accept import TEACHER_RULE
from pipeline.run.step import RunError

PROJECT = Path(pipeline.__file__).resolve().parents[1]
"""The project folder (``SINET_SHARED`` defaults to its sibling ``shared``)."""

DATASET_KINDS = ("eg1800", "folder")

KEYS = {"": ("run", "datasets", "teacher", "sources", "crop", "pseudo_label", "review", "sinet"),
        "run": ("out", "threads"),
        "datasets": ("kind", "path", "masks", "holdout"),
        "teacher": ("checkpoint", "train", "options"),
        "sources": ("name", "images", "masks", "masks_from", "demo"),
        "review": ("auto_accept", "accept_unscored"),
        "sinet": ("train", "val", "val_split", "options", "eval", "eval_on", "eval_split", "init", "base", "arms",
                  "seeds", "parallel")}
"""The keys a config may hold, by table; ``[crop]``, ``[pseudo_label]`` and the ``options`` tables hold stage
options, which the stage commands check themselves."""


@dataclass
class Dataset:
    """A human-labelled dataset imported as a manifest (``eg1800`` layout, or ``images`` + ``masks`` folders);
    ``holdout`` train rows of an EG1800 import move to split ``holdout`` (to select and calibrate on)."""

    name: str
    kind: str
    path: Path
    masks: Path | None = None
    holdout: int = 0


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
    auto_accept: float | str | None = None
    accept_unscored: bool = True
    sinet_train: list[str] = field(default_factory=list)
    sinet_val: str = "curated"
    sinet_val_split: str = "val"
    sinet_options: dict[str, Any] = field(default_factory=dict)
    eval_options: dict[str, Any] = field(default_factory=dict)
    eval_on: str | None = None
    eval_split: str = "val"
    init: Path | None = None
    base_options: dict[str, Any] | None = None
    arms: dict[str, list[str]] = field(default_factory=dict)
    arm_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    parallel: int = 2

    @property
    def review_db(self) -> Path:
        return self.out / "review.sqlite"

    @property
    def curated(self) -> Path:
        return self.out / "curated.csv"

    @property
    def report(self) -> Path:
        return self.out / "report.html"

    def models(self) -> list[str]:
        """SINet runs: ``sinet-plus`` (datasets + curated data), or with ``arms`` one ``<arm>-s<seed>`` per arm
        and seed (each from the common start)."""
        if not self.arms:
            return ["sinet-plus"]
        return [f"{arm}-s{seed}" for seed in self.seeds for arm in self.arms]


def _expand(value: str, folder: Path) -> Path:
    variables = {"SINET_SHARED": str(PROJECT.parent / "shared"), **os.environ}
    try:
        text = string.Template(value).substitute(variables)
    except (KeyError, ValueError) as error:
        raise RunError(f"path {value!r}: unknown variable {error}") from None
    path = Path(text).expanduser()
    return path if path.is_absolute() else (folder / path).resolve()


def _table(data: dict, key: str, path: Path) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise RunError(f"{path}: [{key}] must be a table")
    return value


def _known_keys(table: dict, kind: str, where: str, path: Path) -> dict:
    """``table`` itself, once every key in it is one of :data:`KEYS` ``[kind]`` (a typo would silently change
    nothing)."""
    unknown = [key for key in table if key not in KEYS[kind]]
    if unknown:
        raise RunError(f"{path}: unknown key {unknown[0]!r} in {where} (known: {', '.join(KEYS[kind])})")
    return table


def _rule(value: Any, path: Path) -> float | str | None:
    """The auto-accept rule: ``"teacher"`` (its calibrated rule), a priority threshold in [0, 1], or None."""
    if value is None or value == TEACHER_RULE:
        return value
    try:
        threshold = float(value)
    except (TypeError, ValueError):
        threshold = -1.0
    if not 0 <= threshold <= 1:
        raise RunError(f"{path}: auto-accept must be {TEACHER_RULE!r} (the teacher's calibrated rule) or a "
                       f"priority threshold in [0, 1], not {value!r}")
    return threshold


def load_config(path: str | os.PathLike, auto_accept: float | str | None = None,
                teacher_override: Path | None = None) -> RunConfig:
    """Read and check a run config; ``auto_accept`` and ``teacher_override`` (from the command line) override
    the config's threshold and teacher (a given checkpoint replaces the teacher training)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise RunError(f"{path}: cannot read the config ({error})") from None
    folder = path.resolve().parent
    _known_keys(data, "", "the top level", path)
    run = _known_keys(_table(data, "run", path), "run", "[run]", path)
    if "out" not in run:
        raise RunError(f"{path}: [run] needs out = FOLDER")
    config = RunConfig(path=path, out=_expand(run["out"], folder), threads=run.get("threads"))
    for name, spec in _table(data, "datasets", path).items():
        _known_keys(spec, "datasets", f"[datasets.{name}]", path)
        kind = spec.get("kind", "eg1800")
        if kind not in DATASET_KINDS:
            raise RunError(f"{path}: dataset {name}: kind must be one of {DATASET_KINDS}, not {kind!r}")
        config.datasets.append(Dataset(name, kind, _expand(spec["path"], folder),
                                       _expand(spec["masks"], folder) if "masks" in spec else None,
                                       int(spec.get("holdout", 0))))
    teacher = _known_keys(_table(data, "teacher", path), "teacher", "[teacher]", path)
    config.teacher = _expand(teacher["checkpoint"], folder) if "checkpoint" in teacher else None
    if teacher_override is not None:
        config.teacher = teacher_override.resolve()
    config.teacher_train = list(teacher.get("train", []))
    config.teacher_options = dict(teacher.get("options", {}))
    for spec in data.get("sources", []):
        _known_keys(spec, "sources", f"[[sources]] {spec.get('name')!r}", path)
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
    config.crop_options = _table(data, "crop", path)
    config.label_options = _table(data, "pseudo_label", path)
    review = _known_keys(_table(data, "review", path), "review", "[review]", path)
    config.auto_accept = _rule(auto_accept if auto_accept is not None else review.get("auto_accept"), path)
    config.accept_unscored = bool(review.get("accept_unscored", True))
    sinet = _known_keys(_table(data, "sinet", path), "sinet", "[sinet]", path)
    config.sinet_train = list(sinet.get("train", []))
    config.sinet_val = sinet.get("val", "curated")
    config.sinet_val_split = sinet.get("val_split", "val")
    config.sinet_options = dict(sinet.get("options", {}))
    config.eval_options = dict(sinet.get("eval", {}))
    config.eval_on = sinet.get("eval_on")
    config.eval_split = sinet.get("eval_split", "val")
    config.init = _expand(sinet["init"], folder) if "init" in sinet else None
    config.base_options = dict(sinet["base"]) if "base" in sinet else None
    for name, arm in sinet.get("arms", {}).items():
        config.arms[str(name)], config.arm_options[str(name)] = _arm(str(name), arm, path)
    config.seeds = [int(seed) for seed in sinet.get("seeds", config.seeds)]
    config.parallel = int(sinet.get("parallel", config.parallel))
    check(config)
    return config


ARM_FIXED_OPTIONS = ("out", "manifest", "val-manifest", "val-split", "stage", "init", "seed", "resume",
                     "stage1-epochs", "stage2-epochs", "epoch-size", "stage1-batch", "stage2-batch", "time-budget")
"""sinet train options an arm may not set itself: the run sets them, or they fix the common start, the selection
photos and the number of optimizer steps."""


def _arm(name: str, value: Any, path: Path) -> tuple[list[str], dict[str, Any]]:
    """An arm's sources and its own sinet train options: ``["a"]`` or ``{ sources = ["a"], options = {...} }``."""
    if isinstance(value, list):
        return [str(source) for source in value], {}
    if isinstance(value, dict) and set(value) <= {"sources", "options"} and isinstance(value.get("sources", []), list):
        return [str(source) for source in value.get("sources", [])], dict(value.get("options", {}))
    raise RunError(f"{path}: arm {name!r} must be [source names] or {{ sources = [...], options = {{...}} }}")


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
    if config.eval_on is not None and config.eval_on not in names:
        raise RunError(f"{config.path}: [sinet] eval_on = {config.eval_on!r} is not a dataset")
    sources = {s.name for s in config.sources}
    common_options = {key.replace("_", "-") for key in config.sinet_options}
    for arm, used in config.arms.items():
        unknown = [name for name in used if name not in sources]
        if unknown:
            raise RunError(f"{config.path}: arm {arm!r} uses {unknown[0]!r}, which is not a [[sources]] name")
        keys = [key.replace("_", "-") for key in config.arm_options.get(arm, {})]
        fixed = [key for key in keys if key in ARM_FIXED_OPTIONS]
        if fixed:
            raise RunError(f"{config.path}: arm {arm!r} sets {fixed[0]!r}: the arms share their start and number of "
                           f"optimizer steps (the run, or [sinet] options, sets {', '.join(ARM_FIXED_OPTIONS)})")
        common = [key for key in keys if key in common_options]
        if common:
            raise RunError(f"{config.path}: arm {arm!r} sets {common[0]!r}, which [sinet] options already sets: "
                           "an arm adds options, it does not override the common ones")
    if config.arms and (config.init is None) == (config.base_options is None):
        raise RunError(f"{config.path}: arms start from one common checkpoint: give [sinet] init = FILE or "
                       "base = {{options}} (to train it), not both")
    if config.arms and not config.sinet_train:
        raise RunError(f"{config.path}: arms need [sinet] train = [DATASETS] that every arm trains on")
