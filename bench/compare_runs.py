"""Chart several ``sinet train`` runs side by side: the selection set's IoU per stage-2 epoch (each epoch faint, a
10-epoch running mean bold) and, in the legend, each run's score in a report of ``sinet eval --json`` when given.

    python bench/compare_runs.py runs/long/sinet runs/long/sinet-plus runs/long/sinet-plus-share20 \
        --labels "EG1800 alone,curated 59 %,curated 20 %" --report eval_val.json --plot docs/from-scratch-runs.png

Held-out curves and a val figure side by side show at a glance where the two disagree; the chart chooses nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from sinet_plus.files import atomic_path  # noqa: E402

WINDOW = 10


def stage_curve(run: Path, stage: int) -> pd.DataFrame:
    """``epoch`` and ``val_iou`` of one stage of a run, from its ``metrics.csv``."""
    metrics = run / "metrics.csv"
    if not metrics.is_file():
        raise SystemExit(f"{metrics}: not found (is {run} a sinet train --out folder?)")
    frame = pd.read_csv(metrics)
    rows = frame[frame["stage"] == stage]
    if rows.empty or "val_iou" not in rows:
        raise SystemExit(f"{metrics}: no stage-{stage} epoch with a validation score")
    return rows[["epoch", "val_iou"]]


def plot(runs: list[Path], labels: list[str], report: str | None, stage: int, path: Path) -> None:
    figure, axis = plt.subplots(figsize=(8, 4.5))
    floor = []
    for run, label in zip(runs, labels):
        curve = stage_curve(run, stage)
        if report:
            scores = json.loads((run / report).read_text())
            label += f" — {Path(report).stem}: IoU {scores['iou']:.2f}"
        mean = curve["val_iou"].rolling(WINDOW, min_periods=1).mean()
        line, = axis.plot(curve["epoch"], mean, label=label)
        floor.append(mean.iloc[len(mean) // 10:].min())
        axis.plot(curve["epoch"], curve["val_iou"], color=line.get_color(), alpha=0.25, linewidth=0.8)
    axis.set_ylim(bottom=min(floor) - 1)  # the first tenth of the epochs climbs from far below: out of view
    axis.set(xlabel=f"stage-{stage} epoch", ylabel="selection-set IoU x100",
             title=f"selection set per epoch (faint) and its {WINDOW}-epoch running mean")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    plt.close(figure)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="sinet train --out folders")
    parser.add_argument("--labels", help="comma-separated names of the runs (default: the folders' names)")
    parser.add_argument("--report", help="a sinet eval --json report inside every run folder, shown in the legend")
    parser.add_argument("--stage", type=int, default=2, help="the stage to chart")
    parser.add_argument("--plot", type=Path, required=True, help="PNG to write")
    args = parser.parse_args()
    labels = args.labels.split(",") if args.labels else [run.name for run in args.runs]
    if len(labels) != len(args.runs):
        parser.error(f"{len(labels)} labels for {len(args.runs)} runs")
    plot(args.runs, labels, args.report, args.stage, args.plot)


if __name__ == "__main__":
    main()
