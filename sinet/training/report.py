"""What a run leaves for people: ``metrics.csv``, ``skipped.csv``, ``curves.png`` and a line per epoch."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from sinet_plus.files import atomic_path


def write_reports(out: Path, history: list[dict], skipped: list[dict]) -> None:
    """``metrics.csv`` (one row per epoch), ``skipped.csv`` (unreadable pairs) and ``curves.png`` in ``out``."""
    with atomic_path(out / "metrics.csv") as tmp:
        pd.DataFrame(history).to_csv(tmp, index=False)
    with atomic_path(out / "skipped.csv") as tmp:
        pd.DataFrame(skipped, columns=["id", "split", "reason"]).to_csv(tmp, index=False)
    plot_curves(history, out / "curves.png")


def epoch_line(row: dict, planned: int) -> str:
    """The console line of a finished epoch's metrics row."""
    val = f"val IoU {row['val_iou']:.2f} mIoU {row['val_miou']:.2f} BF1 {row['val_boundary_f1']:.2f}" \
        if "val_iou" in row else "no val"
    return (f"stage {row['stage']} epoch {row['epoch']}/{planned}  lr {row['lr']:.2e}  loss {row['train_loss']:.4f} "
            f"(band {row['train_band_loss']:.4f})  {val}  {row['images_per_second']:.1f} img/s"
            + ("  *best*" if row["selected"] else ""))


def plot_curves(history: list[dict], path: str | os.PathLike) -> None:
    """PNG of the training/validation loss and the validation IoU per epoch, stage 1 then stage 2."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = pd.DataFrame(history)
    if frame.empty:
        return
    frame["x"] = range(1, len(frame) + 1)
    figure, (losses, scores) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    for stage, rows in frame.groupby("stage"):
        losses.plot(rows["x"], rows["train_loss"], label=f"stage {stage} train (whole image)")
        if "val_loss" in rows:
            losses.plot(rows["x"], rows["val_loss"], "--", label=f"stage {stage} val (whole image)")
        if "val_iou" in rows:
            scores.plot(rows["x"], rows["val_iou"], label=f"stage {stage} val IoU (official)")
            chosen = rows[rows["selected"].astype(bool)]
            scores.scatter(chosen["x"], chosen["val_iou"], s=12)
    for axis in (losses, scores):
        for x in frame["x"][frame["stage"].diff().fillna(0) != 0]:
            axis.axvline(x - 0.5, color="gray", linewidth=0.8)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    losses.set_ylabel("loss")
    losses.set_yscale("log")
    scores.set_ylabel("IoU x100 (stage 1 at 28x28)")
    scores.set_xlabel("epoch (stage 1, then stage 2)")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110)
    plt.close(figure)
