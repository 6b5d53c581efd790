"""Write the SINet vs SINet+ report (docs/experiment.md + PNG charts) from a finished ``make experiment`` run.

    python bench/experiment.py runs/experiment --docs docs
    python bench/experiment.py runs/experiment --more runs/share --arms eg1800,crops,crops-share20 \
        --plot docs/share-study.png     # only the chart, of chosen arms from several folders

Reads what ``pipeline run configs/experiment.toml`` wrote: one folder per arm and seed (``<arm>-s<seed>/``:
``eval.json`` on EG1800 val with per-photo scores and the rotation table, ``metrics.csv``, ``config.json``), the
arms' training data (``arms/<arm>.csv``), the per-source stage manifests and ``.run/*.json`` (step times).

Statistics: every arm starts from the same checkpoint and makes the same number of optimizer steps; the first
arm (no curated data) is the baseline. An arm's gain is the mean over val photos of (its seed-mean IoU minus
the baseline's seed-mean IoU). Its 95 % interval comes from a paired bootstrap that resamples the val photos
(the same photos for both arms) and, independently per arm, the seeds: so it covers both the photos' and the
seeds' variation. The headline claims a gain or a loss only where the interval excludes zero.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from sinet.data import epoch_shares  # noqa: E402
from sinet_plus import manifest as mf  # noqa: E402
from sinet_plus.files import atomic_path, write_text_atomic  # noqa: E402

RUN_NAME = re.compile(r"^(?P<arm>.+)-s(?P<seed>\d+)$")
ROTATIONS = ("25", "45", "75", "90")
PAPER = ("paper: SINet 94.81 → SINet+ 95.29 IoU after 600 epochs; "
         "the authors' SINet+ weights score 94.89 here through our code")
BOOTSTRAP_ROUNDS = 10000


def load_runs(run: Path, *more: Path) -> pd.DataFrame:
    """One row per arm and seed (of ``run`` and any ``more`` folders): scores on val (224, photo size, rotations),
    training figures, per-photo IoU."""
    rows = []
    for folder in sorted(folder for parent in (run, *more) for folder in parent.iterdir()):
        match = RUN_NAME.match(folder.name)
        if not match or not (folder / "eval.json").is_file():
            continue
        report = json.loads((folder / "eval.json").read_text())
        metrics = pd.read_csv(folder / "metrics.csv")
        config = json.loads((folder / "config.json").read_text())
        best = metrics[metrics["selected"].astype(bool)].iloc[-1]
        rows.append({
            "arm": match["arm"], "seed": int(match["seed"]), "iou": report["iou"], "miou": report["miou"],
            "boundary_f1": report["boundary_f1"], "iou_photo_size": report["full_resolution"]["iou"],
            **{f"iou_rot{limit}": report["rotations"][limit]["iou"] for limit in ROTATIONS
               if limit in report.get("rotations", {})},
            "selected_epoch": int(best["epoch"]), "selection_iou": float(best["val_iou"]),
            "epochs": len(metrics), "steps": int(np.ceil(config["epoch_size"] / config["stage2_batch"])) * len(metrics)
            if config.get("epoch_size") else None,
            "train_minutes": metrics["train_seconds"].sum() / 60,
            "images_per_second": float(np.median(metrics["images_per_second"])),
            "load": float(metrics["load_average"].median()) if "load_average" in metrics else float("nan"),
            "config": config,
            "per_photo": {p["id"]: p["iou"] for p in report["per_image"]}})
    if not rows:
        raise SystemExit(f"{run}: no finished <arm>-s<seed>/eval.json to report on")
    return pd.DataFrame(rows)


def per_photo_matrix(runs: pd.DataFrame, arm: str, photos: list[str]) -> np.ndarray:
    """Seeds x photos IoU of one arm."""
    return np.array([[row["per_photo"][p] for p in photos] for _, row in runs[runs["arm"] == arm].iterrows()])


def arm_gains(runs: pd.DataFrame, arms: list[str]) -> dict[str, tuple[float, float, float]]:
    """Each arm's gain over the first (the baseline) with its interval (:func:`bootstrap_gain`)."""
    photos = sorted(runs.iloc[0]["per_photo"])
    base = per_photo_matrix(runs, arms[0], photos)
    return {arm: bootstrap_gain(per_photo_matrix(runs, arm, photos), base) for arm in arms[1:]}


def bootstrap_gain(arm: np.ndarray, base: np.ndarray, rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0
                   ) -> tuple[float, float, float]:
    """Gain (mean over photos of seed-mean differences) and its 95 % paired bootstrap interval.

    Args:
        arm: seeds x photos IoU of the arm.
        base: seeds x photos IoU of the baseline (same photo order).
        rounds: bootstrap resamples.
        seed: seed of the resampling.
    """
    rng = np.random.default_rng(seed)
    gain = float(arm.mean(0).mean() - base.mean(0).mean())
    photos = arm.shape[1]
    values = np.empty(rounds)
    for index in range(rounds):
        pick = rng.integers(0, photos, photos)
        arm_seeds = rng.integers(0, len(arm), len(arm))
        base_seeds = rng.integers(0, len(base), len(base))
        values[index] = arm[arm_seeds][:, pick].mean() - base[base_seeds][:, pick].mean()
    low, high = np.percentile(values, [2.5, 97.5])
    return gain, float(low), float(high)


def verdict(name: str, base: str, gain: float, low: float, high: float) -> str:
    """What the interval supports, in words."""
    interval = f"{gain:+.2f} IoU (95 % interval {low:+.2f} to {high:+.2f})"
    if low > 0:
        return f"**{name} improves on {base}: {interval}.**"
    if high < 0:
        return f"**{name} does worse than {base}: {interval}.**"
    return f"**{name} against {base}: no difference the interval can support, {interval}.**"


def data_rows(run: Path, runs: pd.DataFrame, arms: list[str]) -> pd.DataFrame:
    """Per arm: its training rows (the datasets' train rows plus the accepted items), and the datasets' share of
    the samples (by row count, or by the run's ``--source-share``): with equal optimizer steps, an arm with more
    rows sees each dataset photo less often."""
    sources = functools.cache(lambda path: mf.read_manifest(path).frame.query("split == 'train'")["source"])
    rows = []
    for arm in arms:
        extra = mf.read_manifest(run / "arms" / f"{arm}.csv").frame if (run / "arms" / f"{arm}.csv").is_file() \
            else pd.DataFrame(columns=["source", "reviewer"])
        config = runs.loc[runs["arm"] == arm, "config"].iloc[0]
        datasets = pd.concat([sources(m) for m in config["manifests"] if Path(m).parent.name != "arms"])
        counts = pd.concat([datasets, extra["source"]]).value_counts().to_dict()
        share = epoch_shares(counts, config.get("source_shares") or {})
        rows.append({"arm": arm, "dataset train rows": len(datasets), "accepted items added": len(extra),
                     "by source": ", ".join(f"{n} {s}" for s, n in extra["source"].value_counts().items()) or "—",
                     "datasets' share of the samples": f"{sum(share[s] for s in set(datasets)):.0%}"})
    return pd.DataFrame(rows)


def source_rows(run: Path) -> pd.DataFrame:
    """Per photo source: photos, crops, masks checked or made, and how many the teacher's rule accepted."""
    rows = []
    for folder in sorted(p for p in run.iterdir() if (p / "crops" / "manifest.csv").is_file()):
        crops = mf.read_manifest(folder / "crops" / "manifest.csv").frame
        reviewed = next((folder / name / "manifest.csv" for name in ("checked", "pseudo")
                         if (folder / name / "manifest.csv").is_file()), None)
        frame = mf.read_manifest(reviewed).frame if reviewed else crops.iloc[:0]
        accepted = frame["auto_accept"].astype(str).str.lower().eq("true").sum() if "auto_accept" in frame else 0
        rows.append({"source": folder.name, "photos with a crop": crops["origin_stem"].nunique() if len(crops) else 0,
                     "crops": len(crops), "masks": "human, checked by the teacher" if reviewed and
                     reviewed.parent.name == "checked" else "teacher", "auto-accepted": int(accepted)})
    return pd.DataFrame(rows)


def table(frame: pd.DataFrame) -> str:
    """A markdown table (no extra dependency)."""
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join("" if v != v else str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def machine_line() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").is_file() else ""
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    simd = "AVX-512 with bf16" if "avx512_bf16" in flags else "AVX-512" if "avx512f" in flags else "AVX2"
    return f"{model} ({simd}), {os.cpu_count()} cores, no GPU"


def plot(runs: pd.DataFrame, arms: list[str], gains: dict[str, tuple], path: Path) -> None:
    """Left: each seed's val IoU per arm, the mean, and the gain's interval; right: IoU against rotation."""
    figure, (scores, rotated) = plt.subplots(1, 2, figsize=(12, 4.5))
    for index, arm in enumerate(arms):
        values = runs.loc[runs["arm"] == arm, "iou"]
        scores.scatter([index] * len(values), values, color="C0", s=18)
        scores.hlines(values.mean(), index - 0.25, index + 0.25, color="C1")
        if arm in gains:
            scores.annotate(f"{gains[arm][0]:+.2f}\n[{gains[arm][1]:+.2f}, {gains[arm][2]:+.2f}]",
                            (index, values.max()), textcoords="offset points", xytext=(0, 8), ha="center", fontsize=8)
    scores.set_xticks(range(len(arms)), arms, rotation=15 if len(arms) > 3 else 0)
    scores.margins(y=0.3)
    scores.set(ylabel="EG1800 val IoU at 224 (official)",
               title=f"per seed (dots), mean (bar); gain vs {arms[0]} [95 % interval]")
    limits = [0, *map(int, ROTATIONS)]
    for arm in arms:
        group = runs[runs["arm"] == arm]
        rotated.plot(limits, [group["iou"].mean(), *[group[f"iou_rot{r}"].mean() for r in ROTATIONS]], marker="o",
                     label=arm)
    rotated.set(xlabel="random rotation within ± degrees", ylabel="IoU (seed mean)", title="rotation robustness")
    rotated.legend()
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110)
    plt.close(figure)


def own_settings(runs: pd.DataFrame, arms: list[str]) -> dict[str, dict]:
    """Per arm: the training settings in which its runs differ from the baseline arm's, besides the data, seed and
    folder (``pipeline run``'s per-arm options, e.g. a source share)."""
    configs = {arm: runs.loc[runs["arm"] == arm, "config"].iloc[0] for arm in arms}
    base = configs[arms[0]]
    own = {arm: {key: value for key, value in config.items() if key not in ("manifests", "out", "seed")
                 and base.get(key) != value and (base.get(key) or value)} for arm, config in configs.items()}
    return {arm: settings for arm, settings in own.items() if settings}


def report(run: Path, docs: Path) -> str:
    runs = load_runs(run)
    # the baseline is the arm that trains on the datasets alone (fewest training manifests); the others follow
    runs["manifests"] = [len(config["manifests"]) for config in runs["config"]]
    arms = list(dict.fromkeys(runs.sort_values(["manifests", "arm"], kind="stable")["arm"]))
    base = arms[0]
    gains = arm_gains(runs, arms)
    plot(runs, arms, gains, docs / "experiment-scores.png")
    config = runs.iloc[0]["config"]
    own = own_settings(runs, arms)
    seeds = runs.groupby("arm")["seed"].nunique()
    steps = runs.groupby("arm")["steps"].first()
    per_seed = runs[["arm", "seed", "iou", "miou", "boundary_f1", "iou_photo_size",
                     *[f"iou_rot{r}" for r in ROTATIONS], "selected_epoch", "selection_iou"]].round(2)
    per_seed.columns = ["arm", "seed", "IoU", "mIoU", "boundary F1", "IoU photo size",
                        *[f"IoU ±{r}°" for r in ROTATIONS], "selected epoch", "holdout IoU"]
    numeric = runs[["iou", "miou", "boundary_f1", "iou_photo_size", *[f"iou_rot{r}" for r in ROTATIONS]]]
    summary = numeric.groupby(runs["arm"], sort=False).agg(["mean", "std"])
    summary_rows = [{"arm": arm, "seeds": int(seeds[arm]),
                     **{name: f"{summary.loc[arm, (col, 'mean')]:.2f} ± {summary.loc[arm, (col, 'std')]:.2f}"
                        for col, name in (("iou", "IoU"), ("miou", "mIoU"), ("boundary_f1", "boundary F1"),
                                          ("iou_photo_size", "IoU photo size"), ("iou_rot45", "IoU ±45°"))},
                     "gain vs " + base: "—" if arm == base else
                     f"{gains[arm][0]:+.2f} [{gains[arm][1]:+.2f}, {gains[arm][2]:+.2f}]"} for arm in arms]
    lines = [
        "# SINet vs SINet+: does the pipeline's curated data help? (generated by `bench/experiment.py`)", "",
        *[verdict(f"`{arm}`", f"`{base}`", *gains[arm]) for arm in arms[1:]], "",
        f"For scale, {PAPER}. Every figure below is EG1800 val (132 photos), which no step of the experiment "
        "trained, selected or calibrated on.", "",
        "## Set-up", "",
        f"- Arms: {', '.join(f'`{a}`' for a in arms)}; every arm starts from the same checkpoint "
        f"(`{Path(config['init']).name}`) and fine-tunes stage 2 with the same options"
        f"{' (besides its own settings below)' if own else ''}: "
        f"{config['stage2_epochs']} epochs of {config.get('epoch_size')} samples (batch {config['stage2_batch']}, "
        f"{int(steps.iloc[0]) if steps.iloc[0] == steps.iloc[0] else '?'} optimizer steps for every run), "
        f"LR {config['lr']} with the official milestones, seeds {sorted(runs['seed'].unique().tolist())}.",
        *(["- Arms' own settings (`pipeline run` per-arm options): " + "; ".join(
            f"`{arm}` " + ", ".join(f"{key} = {json.dumps(value)}" for key, value in settings.items())
            for arm, settings in own.items()) + "."] if own else []),
        f"- Model selection: the best epoch (from {config['select_from']:.0%} of E on) on split "
        f"`{config['val_split']}` of the training dataset — EG1800 train photos kept out of training — never on val.",
        f"- Machine: {machine_line()}; {config.get('threads') or 'default'} torch thread(s) per run, two runs at a "
        f"time; training {runs['train_minutes'].median():.1f} min per run (median), "
        f"{runs['images_per_second'].median():.1f} images/s, 1-minute load average "
        f"{runs['load'].median():.1f} (median over epochs).", "",
        "## Results", "",
        table(pd.DataFrame(summary_rows)), "",
        "Mean ± standard deviation over seeds; the gain's interval is the paired bootstrap described in "
        "`bench/experiment.py` (photos and seeds resampled).", "",
        "![scores](experiment-scores.png)", "",
        "### Per seed", "", table(per_seed), "",
        "### Training data", "", table(data_rows(run, runs, arms)), "",
    ]
    sources = source_rows(run)
    if len(sources):
        lines += ["### What the pipeline produced", "", table(sources), ""]
    lines += ["## How it was made (one command)", "", "```", "make experiment   # = pipeline run "
              "configs/experiment.toml, then python bench/experiment.py runs/experiment --docs docs", "```", ""]
    text = "\n".join(lines)
    write_text_atomic(docs / "experiment.md", text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the experiment's output folder (runs/experiment)")
    parser.add_argument("--docs", type=Path, default=Path("docs"), help="where experiment.md and the PNG go")
    parser.add_argument("--more", type=Path, action="append", default=[],
                        help="another folder of <arm>-s<seed> runs (with --plot)")
    parser.add_argument("--arms", help="comma-separated arms to chart, the baseline first (with --plot)")
    parser.add_argument("--plot", type=Path, help="write only the chart of --arms to this PNG")
    args = parser.parse_args()
    if args.plot is None:
        if args.more or args.arms:
            parser.error("--more and --arms choose what --plot charts; the report reads one run folder")
        print(report(args.run, args.docs))
        return
    runs = load_runs(args.run, *args.more)
    arms = args.arms.split(",") if args.arms else list(dict.fromkeys(runs["arm"]))
    missing = sorted(set(arms) - set(runs["arm"]))
    if missing:
        folders = " ".join(map(str, [args.run, *args.more]))
        raise SystemExit(f"no finished runs of arm(s) {', '.join(missing)} in {folders}")
    plot(runs, arms, arm_gains(runs, arms), args.plot)
    print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
