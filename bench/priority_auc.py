"""Do the quality signals find the bad masks? ROC AUC of `priority` for masks with IoU < 0.90.

1. Pseudo-labels the 132 EG1800 val photos (their masks were hidden from the teacher) and the same photos'
   raw uncropped originals (eg1800/raw/images); each mask's IoU against the true mask (raw: only inside the
   annotators' crop box, 128 = unknown).
2. Prints, per set: the IoU distribution, how many masks are below the threshold, the ROC AUC of `priority`
   (target >= 0.85) and, for insight only (the priority rule is fixed, not fitted), the AUC of each signal.
   With ``--train-photos N`` it also scores N EG1800 train photos; with ``--holdout-manifest FILE`` the rows of
   split ``holdout`` in FILE, i.e. EG1800 train photos kept away from the teacher's training: the set on which
   the priority rule is chosen among :data:`CANDIDATES` (never on val).
3. Draws priority against IoU for every set into OUT/priority_vs_iou.png.

Resumable (the pseudo-label runs are). One thread by default (the machine is shared):

    OMP_NUM_THREADS=1 .venv/bin/python bench/priority_auc.py --teacher runs/teacher/mnv2-256.pt --long-side 256 \
        --train-photos 200
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from pipeline.teacher.pseudo_label import LabelOptions, pseudo_label
from sinet.metrics import foreground_iou
from sinet_plus import manifest as mf
from sinet_plus.imageio import read_mask

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SIGNALS = {  # signal -> +1 when higher means more likely wrong, -1 when lower does
    "priority": 1, "mean_confidence": -1, "uncertain_share": 1, "expected_iou": -1, "flip_agreement": -1,
    "boundary_sharpness": -1, "face_in_mask": -1, "components": 1, "foreground_share": -1,
}


CANDIDATES = {  # candidate priority rules (higher = more likely wrong), written down before any holdout result
    "1 - expected_iou * flip * face (shipped until now)": lambda f: 1 - f["expected_iou"] * _flip(f) * _face(f),
    "uncertain_share": lambda f: f["uncertain_share"],
    "1 - mean_confidence": lambda f: 1 - f["mean_confidence"],
    "1 - expected_iou * flip": lambda f: 1 - f["expected_iou"] * _flip(f),
    "1 - (1 - uncertain_share) * flip * face": lambda f: 1 - (1 - f["uncertain_share"]) * _flip(f) * _face(f),
    "1 - (1 - uncertain_share) * expected_iou * flip * face":
        lambda f: 1 - (1 - f["uncertain_share"]) * f["expected_iou"] * _flip(f) * _face(f),
}


def _flip(frame: pd.DataFrame) -> pd.Series:
    return frame["flip_agreement"].astype(float).fillna(1.0)


def _face(frame: pd.DataFrame) -> pd.Series:
    return 0.5 + 0.5 * frame["face_in_mask"].astype(float).fillna(1.0)


def photo_manifest(eg1800: Path, out: Path, split_name: str, limit: int = 0, stems: list[str] | None = None) -> Path:
    """A manifest of EG1800 photos of one split, or of the given stems (images only: no masks reach the stage)."""
    if stems is None:
        split = pd.read_csv(eg1800 / "split.csv", dtype=str)
        stems = sorted(split.loc[split["split"] == split_name, "stem"])
        stems = stems[::max(1, len(stems) // limit)][:limit] if limit else stems
    rows = [{"id": f"eg1800/{s}", "image": os.path.relpath(eg1800 / "images" / f"{s}.jpg", out.parent),
             "mask": "", "source": "eg1800", "split": split_name, "status": "pending", "origin_stem": s} for s in stems]
    mf.write_manifest(mf.new_rows(rows), out)
    return out


def scored(out_dir: Path, truth_dir: Path, unknown_value: int | None) -> pd.DataFrame:
    """The pseudo-label rows with each mask's IoU against the true mask of the same stem."""
    manifest = mf.load(out_dir / "manifest.csv")
    frame = manifest.frame.copy()
    ious = []
    for stem, mask_path in zip(frame["origin_stem"], manifest.paths("mask")):
        truth = read_mask(truth_dir / f"{stem}.png", unknown_value=unknown_value)
        ious.append(foreground_iou(read_mask(mask_path), truth))
    frame["iou"] = ious
    return frame


def bootstrap_interval(bad: np.ndarray, scores: np.ndarray, rounds: int = 2000) -> tuple[float, float]:
    """95% percentile interval of the ROC AUC over photo resamples (fixed seed)."""
    generator = np.random.default_rng(0)
    values = []
    for _ in range(rounds):
        pick = generator.integers(0, len(bad), len(bad))
        if 0 < bad[pick].sum() < len(pick):
            values.append(roc_auc_score(bad[pick], scores[pick]))
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def report(name: str, frame: pd.DataFrame, threshold: float) -> dict:
    bad = frame["iou"] < threshold
    print(f"\n{name}: {len(frame)} masks; IoU mean {frame['iou'].mean():.4f}, median {frame['iou'].median():.4f}, "
          f"p10 {frame['iou'].quantile(0.1):.4f}; {int(bad.sum())} below {threshold:.2f}")
    aucs = {}
    if 0 < bad.sum() < len(frame):
        for signal, sign in SIGNALS.items():
            values = frame[signal].astype(float)
            known = values.notna()
            if known.sum() > 1 and 0 < bad[known].sum() < known.sum():
                aucs[signal] = roc_auc_score(bad[known], sign * values[known])
                note = "" if known.all() else f" (on {int(known.sum())} rows with a value)"
                if signal == "priority":
                    low, high = bootstrap_interval(bad.to_numpy(), values.to_numpy())
                    note += f" (95% bootstrap interval {low:.3f}-{high:.3f})"
                print(f"  ROC AUC {signal:>20}: {aucs[signal]:.3f}{note}")
        for rule, score in CANDIDATES.items():
            aucs[rule] = roc_auc_score(bad, score(frame))
            print(f"  ROC AUC of candidate rule {rule}: {aucs[rule]:.3f}")
    else:
        print("  AUC undefined: all masks on one side of the threshold")
    return aucs


def plot(frames: dict[str, pd.DataFrame], threshold: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(frames), figsize=(5 * len(frames), 4), squeeze=False)
    for axis, (name, frame) in zip(axes[0], frames.items()):
        bad = frame["iou"] < threshold
        axis.scatter(frame["iou"][~bad], frame["priority"][~bad], s=10, label=f"IoU >= {threshold}")
        axis.scatter(frame["iou"][bad], frame["priority"][bad], s=10, c="tab:red", label=f"IoU < {threshold}")
        axis.axvline(threshold, color="grey", lw=0.5)
        axis.set(xlabel="IoU against the true mask", ylabel="priority", title=name)
        axis.legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    print(f"\nplot: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=Path("runs/priority_auc"))
    parser.add_argument("--long-side", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threshold", type=float, default=0.90)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train-photos", type=int, default=0,
                        help="also score this many EG1800 train photos (a selection set that is not val)")
    parser.add_argument("--holdout-manifest", type=Path,
                        help="also score the EG1800 rows of split 'holdout' in this manifest (photos the teacher "
                             "did not train on): the set the priority rule is chosen on")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    eg1800 = args.data / "eg1800"
    options = LabelOptions(long_side=args.long_side, batch_size=args.batch_size, workers=args.workers, device="cpu")
    out = args.out / f"{args.teacher.stem}-{args.long_side}"
    pseudo_label(photo_manifest(eg1800, out / "val.csv", "val"), args.teacher, out / "val", options)
    pseudo_label(eg1800 / "raw" / "images", args.teacher, out / "raw", options)
    sets = {"val": ("EG1800 val (600x800 crops)", scored(out / "val", eg1800 / "masks", None)),
            "raw": ("EG1800 raw photos (inside crop box)", scored(out / "raw", eg1800 / "raw" / "masks", 128))}
    if args.train_photos:
        pseudo_label(photo_manifest(eg1800, out / "train.csv", "train", args.train_photos), args.teacher,
                     out / "train", options)
        sets["train"] = (f"EG1800 train, {args.train_photos} photos (teacher saw them)",
                         scored(out / "train", eg1800 / "masks", None))
    if args.holdout_manifest:
        rows = pd.read_csv(args.holdout_manifest, dtype=str)
        stems = sorted(rows.loc[rows["split"] == "holdout", "origin_stem"])
        pseudo_label(photo_manifest(eg1800, out / "holdout.csv", "holdout", stems=stems), args.teacher,
                     out / "holdout", options)
        sets["holdout"] = (f"EG1800 train, {len(stems)} photos held out from the teacher",
                           scored(out / "holdout", eg1800 / "masks", None))
    results = {key: report(title, frame, args.threshold) for key, (title, frame) in sets.items()}
    plot(dict(sets.values()), args.threshold, out / "priority_vs_iou.png")
    for key, (_, frame) in sets.items():
        frame.to_csv(out / f"{key}_scored.csv", index=False)
    selection = "holdout" if "holdout" in sets else "train" if "train" in sets else None
    if selection and results[selection]:
        chosen = max(CANDIDATES, key=lambda rule: results[selection][rule])
        print(f"\nrule chosen on the {selection} set: {chosen} (AUC there {results[selection][chosen]:.3f}); "
              + "; ".join(f"{key} {aucs[chosen]:.3f}" for key, aucs in results.items() if chosen in aucs))
    assert not sets["val"][1]["iou"].isna().any()


if __name__ == "__main__":
    main()
