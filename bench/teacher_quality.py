"""How good are a teacher's masks, and can its priority and auto-accept be trusted? (issue 11's figures)

Runs a teacher (DeepLabV3+, SINet or ensemble file; default: the shipped teacher) on labelled photos of one
split (default: EG1800 val, which no teacher here was trained or calibrated on) and prints, at the photo's size:

- the mean per-photo IoU of its masks and the share below 0.90 (each member's mean IoU too);
- the ROC AUC of its ``priority`` for masks below 0.90 (with a 95 % bootstrap interval), and of every other rule
  for insight (the rule itself was chosen on the calibration photos, never here);
- its calibrated auto-accept: the share of photos accepted and the share of those with IoU >= 0.90.

It writes ``OUT/photos.csv`` (one row per photo), ``OUT/summary.json`` and ``OUT/priority_vs_iou.png``.

    OMP_NUM_THREADS=2 .venv/bin/python bench/teacher_quality.py --manifest manifests/eg1800.csv --split val \
        --out runs/teacher_quality_val
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from pipeline.teacher.calibrate import GOOD_IOU, holdout_rows, rule_aucs, score_photos, summary
from pipeline.teacher.ensemble import load_any_teacher
from sinet.weights import TEACHER


def bootstrap_auc(bad: np.ndarray, score: np.ndarray, rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of the ROC AUC over photos resampled with replacement."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(rounds):
        pick = rng.integers(0, len(bad), len(bad))
        if bad[pick].any() and not bad[pick].all():
            values.append(roc_auc_score(bad[pick], score[pick]))
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def plot(frame, column: str, limit: float | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4.5))
    axis.scatter(frame[column], frame["iou"], s=10, alpha=0.7)
    axis.axhline(GOOD_IOU, color="gray", linewidth=0.8, label=f"IoU {GOOD_IOU}")
    if limit is not None:
        axis.axvline(limit, color="green", linewidth=0.8, label=f"auto-accept: priority <= {limit:.3g}")
    axis.set_xscale("symlog", linthresh=1e-3)
    axis.set_xlabel("priority (higher = reviewed first)")
    axis.set_ylabel("IoU with the human mask")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path, default=None, help="teacher file (default: the shipped teacher)")
    parser.add_argument("--manifest", action="append", required=True, help="manifest(s) with the labelled rows")
    parser.add_argument("--split", default="val")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    teacher_file = args.teacher or TEACHER
    teacher = load_any_teacher(teacher_file)
    rows = holdout_rows(args.manifest, args.split)
    frame = score_photos(teacher, rows).frame
    limit = teacher.acceptance.get("max_priority")
    figures = summary(frame, teacher.priority, limit)
    column = f"priority_{teacher.priority}"
    bad = (frame["iou"] < GOOD_IOU).to_numpy()
    figures["priority_auc_95"] = bootstrap_auc(bad, frame[column].to_numpy()) if 0 < bad.sum() < len(bad) else None
    figures.update(teacher=str(teacher_file), members=teacher.names, weights=teacher.weights,
                   rule=teacher.priority, max_priority=limit, all_rule_aucs=rule_aucs(frame),
                   manifests=args.manifest, split=args.split)
    args.out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out / "photos.csv", index=False)
    (args.out / "summary.json").write_text(json.dumps(figures, indent=2) + "\n")
    plot(frame, column, limit, args.out / "priority_vs_iou.png")
    print(f"teacher {teacher_file} ({' + '.join(f'{n} x{w:.2f}' for n, w in zip(teacher.names, teacher.weights))})")
    print(f"{args.split}: {figures['photos']} photos, mean IoU {figures['mean_iou']:.4f}, "
          f"{100 * figures['below_0.90']:.1f} % below 0.90")
    print(f"priority ({teacher.priority}) ROC AUC for IoU < 0.90: {figures['priority_auc']:.3f} "
          f"(95 % {figures['priority_auc_95']})")
    if limit is not None:
        print(f"auto-accept (priority <= {limit:.4g}): {100 * figures['auto_accept_accepted_share']:.1f} % accepted, "
              f"{100 * figures['auto_accept_precision']:.1f} % of them at IoU >= 0.90")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
