"""Write the SINet vs SINet+ report (docs/experiment.md + PNG charts) from a finished `pipeline run` experiment.

    python bench/experiment.py runs/experiment --docs docs

Reads what the run wrote: ``sinet-base/`` and ``sinet-plus/`` (``eval.json``, ``metrics.csv``, ``config.json``),
``curated.csv`` (what the review accepted), the per-source stage manifests and ``.run/*.json`` (step times).
Prints the comparison table too. Every figure in the report comes from these files.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from sinet_plus import manifest as mf  # noqa: E402
from sinet_plus.files import atomic_path, write_text_atomic  # noqa: E402

MODELS = {"sinet-base": "SINet (EG1800 train)", "sinet-plus": "SINet+ (EG1800 train + curated)"}
METRICS = {"iou": "IoU (official)", "miou": "mIoU (2-class)", "boundary_f1": "boundary F1"}
PAPER = "paper: SINet 94.81 → SINet+ 95.29 IoU after 600 epochs; the authors' SINet+ weights score 94.90 here"


def load_model(run: Path, model: str) -> dict:
    folder = run / model
    return {"eval": json.loads((folder / "eval.json").read_text()),
            "metrics": pd.read_csv(folder / "metrics.csv"),
            "config": json.loads((folder / "config.json").read_text()),
            "train_rows": sum(len(mf.select(mf.load(m), split="train", with_mask=True))
                              for m in json.loads((folder / "config.json").read_text())["manifests"])}


def score_rows(models: dict[str, dict]) -> pd.DataFrame:
    """One row per model and condition (224, photo size, rotations), one column per metric."""
    rows = []
    for model, data in models.items():
        report = data["eval"]
        conditions = {"at 224x224": report, "at photo size": report["full_resolution"],
                      **{f"rotated ±{limit}°": scores for limit, scores in report["rotations"].items()}}
        for condition, scores in conditions.items():
            rows.append({"model": MODELS[model], "condition": condition,
                         **{name: round(scores[key], 2) for key, name in METRICS.items()}})
    return pd.DataFrame(rows)


def data_rows(run: Path) -> pd.DataFrame:
    """Per source: photos in, crops or masks made, items accepted (by whom)."""
    curated = mf.read_manifest(run / "curated.csv").frame
    rows = []
    for source in sorted(p.name for p in run.iterdir() if (p / "crops" / "manifest.csv").is_file()):
        crops = mf.read_manifest(run / source / "crops" / "manifest.csv").frame
        generated = run / source / "pseudo" / "manifest.csv"
        made = mf.read_manifest(generated).frame if generated.is_file() else crops
        kept = curated[curated["id"].isin(made["id"])] if len(made) else curated.iloc[:0]
        skipped = pd.read_csv(run / source / "crops" / "skipped.csv", dtype=str)
        photos = crops["origin_stem"].nunique() if len(crops) else 0
        rows.append({"source": source, "photos with a crop": photos,
                     "photos skipped (reasons)": ", ".join(f"{n} {why}" for why, n in
                                                           skipped["reason"].value_counts().items()),
                     "crops": len(crops),
                     "masks": "teacher" if generated.is_file() else "human", "reviewed items": len(made),
                     "accepted": len(kept),
                     "accepted by": ", ".join(f"{n} {who}" for who, n in kept["reviewer"].value_counts().items())})
    return pd.DataFrame(rows)


def epoch_rows(models: dict[str, dict]) -> pd.DataFrame:
    """Validation IoU (EG1800 val, 224) after every epoch of each run, with its training images/s."""
    rows = []
    for model, data in models.items():
        for row in data["metrics"].itertuples(index=False):
            rows.append({"model": MODELS[model], "stage": row.stage, "epoch": row.epoch,
                         "val IoU": round(row.val_iou, 2), "val boundary F1": round(row.val_boundary_f1, 2),
                         "train images/s": round(row.images_per_second, 1),
                         "train minutes": round(row.train_seconds / 60, 1)})
    return pd.DataFrame(rows)


def step_times(run: Path) -> pd.DataFrame:
    records = [{"step": p.stem, **json.loads(p.read_text())} for p in (run / ".run").glob("*.json")]
    records.sort(key=lambda r: r.get("finished") or r.get("started") or 0)
    return pd.DataFrame([{"step": r["step"], "status": r.get("status"), "seconds": r.get("seconds")}
                         for r in records])


def plot_scores(scores: pd.DataFrame, path: Path) -> None:
    """Bars: the three metrics at 224; lines: IoU against the rotation limit."""
    figure, (bars, lines) = plt.subplots(1, 2, figsize=(12, 4.5))
    at224 = scores[scores["condition"] == "at 224x224"].set_index("model")[list(METRICS.values())]
    at224.T.plot.bar(ax=bars, rot=0, ylim=(max(0, at224.values.min() - 10), 100))
    bars.set_title("EG1800 val at 224x224")
    for container in bars.containers:
        bars.bar_label(container, fmt="%.2f", fontsize=8)
    for model, group in scores.groupby("model", sort=False):
        rotated = group[group["condition"].str.startswith("rotated")]
        limits = [0] + [int(c.split("±")[1].rstrip("°")) for c in rotated["condition"]]
        lines.plot(limits, [group.iloc[0][METRICS["iou"]], *rotated[METRICS["iou"]]], marker="o", label=model)
    lines.set(xlabel="random rotation within ± degrees (0 = none)", ylabel="IoU (official)",
              title="rotation robustness")
    lines.legend()
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110)
    plt.close(figure)


def plot_curves(models: dict[str, dict], path: Path) -> None:
    """Validation IoU per epoch of both runs, stage 1 (encoder) and stage 2 (full model)."""
    figure, axes = plt.subplots(1, 2, figsize=(12, 4))
    for stage, ax in zip((1, 2), axes):
        for model, data in models.items():
            rows = data["metrics"][data["metrics"]["stage"] == stage]
            if "val_iou" in rows:
                ax.plot(rows["epoch"], rows["val_iou"], marker=".", label=MODELS[model])
        ax.set(xlabel="epoch", ylabel="val IoU", title=f"stage {stage}" + (" (encoder, 1/8 labels)" if stage == 1
                                                                            else " (full model)"))
        ax.legend()
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110)
    plt.close(figure)


def table(frame: pd.DataFrame) -> str:
    """A markdown table (no extra dependency)."""
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join("" if v != v else str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def budget_line(models: dict[str, dict]) -> str:
    config = models["sinet-plus"]["config"]
    epochs = {m: {s: int(d["metrics"].loc[d["metrics"]["stage"] == s, "epoch"].max())
                  for s in (1, 2) if (d["metrics"]["stage"] == s).any()} for m, d in models.items()}
    seconds = {m: d["metrics"]["train_seconds"].sum() / 60 for m, d in models.items()}
    return (f"time budget {config.get('time_budget')} min per model (stage 1 share {config.get('stage1_share')}), "
            f"{config.get('threads')} torch thread, {config.get('workers')} loader worker, seed {config.get('seed')}, "
            f"input {config.get('size')}x{config.get('size')}, compile {config.get('compile')}; epochs run: "
            + "; ".join(f"{MODELS[m]}: stage 1 {e.get(1)}, stage 2 {e.get(2)} ({seconds[m]:.1f} min of training steps)"
                        for m, e in epochs.items()))


def write_report(run: Path, docs: Path, notes: list[str] = ()) -> str:
    models = {model: load_model(run, model) for model in MODELS}
    scores = score_rows(models)
    docs.mkdir(parents=True, exist_ok=True)
    plot_scores(scores, docs / "experiment-scores.png")
    plot_curves(models, docs / "experiment-curves.png")
    at224 = scores[scores["condition"] == "at 224x224"].set_index("model")
    delta = at224.loc[MODELS["sinet-plus"], METRICS["iou"]] - at224.loc[MODELS["sinet-base"], METRICS["iou"]]
    rows = {m: d["train_rows"] for m, d in models.items()}
    images = models["sinet-plus"]["eval"]["images"]
    text = f"""# SINet vs SINet+: does the pipeline's curated data help? (generated by `bench/experiment.py`)

**Result, with a small CPU budget: SINet+ {'+' if delta >= 0 else ''}{delta:.2f} IoU against SINet on EG1800 val**
({at224.loc[MODELS['sinet-base'], METRICS['iou']]:.2f} → {at224.loc[MODELS['sinet-plus'], METRICS['iou']]:.2f}).
For scale, {PAPER}.

Budget: {budget_line(models)}. The config starts the two trainings **at the same time** (so that they share the
machine's load equally; see the notes for whether they did) on a 2-core VM that other jobs were loading too; with a time budget, the faster run on a quieter
moment gets more epochs, so small differences are within the noise of this set-up (one seed, 132 val photos).

## How it was made (one command)

```
make experiment          # = pipeline run configs/experiment.toml, then python bench/experiment.py {run}
```

`configs/experiment.toml` runs: import EG1800 and the full-body set → train the small DeepLabV3+ teacher →
`crop-baidu` on `fullbody` (human-made masks) → the teacher masks the `fullbody-unlabeled` photos for cropping,
`crop-baidu` crops them, the teacher pseudo-labels the crops (quality signals, `priority`) → everything is
queued in the review store → **unattended auto-accept** (crops of human-made masks are accepted; pseudo-labels
with `priority` ≤ the threshold are accepted as reviewer `auto`, the rest stay queued for people) → `curated.csv`
→ `sinet train` twice, concurrently: on EG1800 train ({rows['sinet-base']} rows) and on EG1800 train + curated
({rows['sinet-plus']} rows) → `sinet eval --rotations` on EG1800 val.

## Data the pipeline produced

{table(data_rows(run))}

## Scores on EG1800 val ({images} photos)

{table(scores)}

![scores](experiment-scores.png)

![curves](experiment-curves.png)

## Every epoch (validation on EG1800 val at 224; the selected epoch is the best after 60 % of the plan)

{table(epoch_rows(models))}

## Step times of the run (seconds, this machine, shared with other jobs)

{table(step_times(run))}
""" + ("\n## Notes on this run\n\n" + "\n".join(f"- {note}" for note in notes) + "\n" if notes else "")
    write_text_atomic(docs / "experiment.md", text)
    return table(scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the experiment's output folder (runs/experiment)")
    parser.add_argument("--docs", type=Path, default=Path("docs"), help="where experiment.md and the PNGs go")
    parser.add_argument("--note", action="append", default=[], help="a line for the report's notes (repeat)")
    args = parser.parse_args()
    print(write_report(args.run, args.docs, args.note))
    print(f"wrote {os.path.join(args.docs, 'experiment.md')}")


if __name__ == "__main__":
    main()
