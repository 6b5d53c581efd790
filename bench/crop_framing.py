"""Framing and yield of `pipeline crop-baidu` on real data; prints the figures of docs/crop-baidu.md.

1. Runs the stage on the 132 raw EG1800 val photos (faces found by the stage itself, masks from raw/masks with
   128 = unknown) and compares each photo's crop box with the annotators' box (raw_crop_boxes.csv): IoU
   distribution, median and share >= 0.8 (targets: >= 0.93 and >= 80%). A photo without a crop counts as IoU 0.
2. Runs it on ../shared/data/fullbody and prints, next to EG1800's, the distributions of face width / crop width
   and face-centre height / crop height (targets: medians in 0.40-0.50 and 0.40-0.48), and the yield.

Both runs are resumable: a second call reuses the outputs under --out.

    .venv/bin/python bench/crop_framing.py --workers 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.crop.framing import box_iou
from pipeline.crop.stage import run

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
EG1800_SHARES = {"face width / crop width": (0.37, 0.455, 0.61), "face centre height / crop height": (0.32, 0.44, 0.54)}
"""EG1800's p10, median and p90 (MTCNN boxes in the 600x800 crops), from the issue."""


def counts(values: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in values.value_counts().items()}


def quantiles(values: pd.Series) -> str:
    p = np.quantile(values, [0.1, 0.25, 0.5, 0.75, 0.9])
    return "p10 {:.3f}  p25 {:.3f}  median {:.3f}  p75 {:.3f}  p90 {:.3f}".format(*p)


def load(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    manifest = pd.read_csv(out / "manifest.csv", dtype={"origin_stem": str, "id": str})
    skipped = pd.read_csv(out / "skipped.csv", dtype={"key": str})
    return manifest, skipped


def main_crop_per_photo(manifest: pd.DataFrame) -> pd.DataFrame:
    """One crop per origin photo: the one of the largest face that gave a crop (lowest face index)."""
    index = manifest["id"].str.rsplit("-f", n=1).str[1].astype(int)
    return manifest.assign(face_index=index).sort_values(["origin_stem", "face_index"]).groupby("origin_stem").head(1)


def eg1800_iou(out: Path, workers: int) -> None:
    raw = DATA / "eg1800" / "raw"
    run(raw / "images", raw / "masks", out, workers=workers)
    manifest, skipped = load(out)
    crops = main_crop_per_photo(manifest).set_index("origin_stem")
    boxes = pd.read_csv(DATA / "eg1800" / "raw_crop_boxes.csv", dtype={"stem": str})
    ious = []
    for box in boxes.itertuples():
        if box.stem not in crops.index:
            ious.append(0.0)
            continue
        crop = crops.loc[box.stem]
        ious.append(box_iou((crop.crop_x0, crop.crop_y0, crop.crop_x1, crop.crop_y1),
                            (box.col0, box.row0, box.col1, box.row1)))
    ious = pd.Series(ious)
    print(f"EG1800 raw val: {len(boxes)} photos, {len(crops)} with a crop; skips: "
          f"{counts(skipped['reason']) if len(skipped) else {}}")
    print(f"  IoU with the annotators' box: {quantiles(ious)}  min {ious.min():.3f}")
    print(f"  IoU >= 0.8 on {(ious >= 0.8).mean():.1%} of photos, >= 0.9 on {(ious >= 0.9).mean():.1%} "
          f"(targets: median >= 0.93, >= 0.8 on >= 80%)")
    bins = np.histogram(ious, bins=[0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0001])[0]
    print("  histogram <0.5 / .5-.6 / .6-.7 / .7-.8 / .8-.9 / .9-.95 / >=.95: " + " / ".join(map(str, bins)))


def fullbody_framing(out: Path, workers: int) -> None:
    summary = run(DATA / "fullbody" / "images", DATA / "fullbody" / "masks", out, workers=workers)
    manifest, skipped = load(out)
    width = (manifest.face_x1 - manifest.face_x0) / (manifest.crop_x1 - manifest.crop_x0)
    height = ((manifest.face_y0 + manifest.face_y1) / 2 - manifest.crop_y0) / (manifest.crop_y1 - manifest.crop_y0)
    shifted = int((manifest.crop_shift_x != 0).sum() + (manifest.crop_shift_y != 0).sum())
    print(f"fullbody: {summary.planned} photos -> {len(manifest)} crops from "
          f"{manifest.origin_stem.nunique()} photos; shifted {shifted}, "
          f"clipped {int(manifest.crop_clipped.astype(str).eq('True').sum())}")
    whole = skipped["face"].isna()
    print(f"  photos skipped whole: {counts(skipped[whole]['reason'])}")
    print(f"  faces rejected: {counts(skipped[~whole]['reason'])}")
    for name, values in (("face width / crop width", width), ("face centre height / crop height", height)):
        p10, median, p90 = EG1800_SHARES[name]
        print(f"  {name}: {quantiles(values)}   (EG1800: p10 {p10}  median {median}  p90 {p90})")
    print(f"  person coverage: {quantiles(manifest.person_coverage)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench_crop"), help="Folder for both runs.")
    parser.add_argument("--workers", type=int, default=2, help="Processes for the stage.")
    args = parser.parse_args()
    eg1800_iou(args.out / "eg1800_raw", args.workers)
    fullbody_framing(args.out / "fullbody", args.workers)


if __name__ == "__main__":
    main()
