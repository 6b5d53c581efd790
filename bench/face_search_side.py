"""Does MTCNN find the same largest face on a 320 px copy as on a 640 px one, and how much faster is it?

Runs both searches on the 132 EG1800 val photos and their 132 raw originals; a face counts as the same when the
two largest boxes overlap with IoU > 0.5 (or neither search finds one). Justifies ``FACE_SEARCH_SIDE`` in
pipeline/teacher/pseudo_label.py. One thread (the machine is shared):

    OMP_NUM_THREADS=1 .venv/bin/python bench/face_search_side.py
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import torch

from pipeline.faces import DetectorSettings, FaceDetector
from sinet_plus.imageio import read_image

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "eg1800"
SIDES = (640, 320)


def box_iou(a, b) -> float:
    overlap = max(0, min(a.x1, b.x1) - max(a.x0, b.x0)) * max(0, min(a.y1, b.y1) - max(a.y0, b.y0))
    return overlap / (a.width * a.height + b.width * b.height - overlap)


def main() -> None:
    torch.set_num_threads(1)
    split = pd.read_csv(DATA / "split.csv", dtype=str)
    stems = sorted(split.loc[split["split"] == "val", "stem"])
    detectors = {side: FaceDetector(DetectorSettings(max_side=side)) for side in SIDES}
    seconds = dict.fromkeys(SIDES, 0.0)
    same = photos = 0
    for folder in ("images", "raw/images"):
        for stem in stems:
            image = read_image(DATA / folder / f"{stem}.jpg")
            found = {}
            for side, detector in detectors.items():
                started = time.perf_counter()
                found[side] = detector.detect(image)
                seconds[side] += time.perf_counter() - started
            first, second = (found[side] for side in SIDES)
            same += (not first and not second) or bool(first and second and box_iou(first[0], second[0]) > 0.5)
            photos += 1
    print(f"{photos} photos: same largest face at {SIDES[1]} px as at {SIDES[0]} px in {same}; "
          f"time {seconds[SIDES[1]]:.1f} s vs {seconds[SIDES[0]]:.1f} s "
          f"({seconds[SIDES[1]] / seconds[SIDES[0]]:.2f}x)")


if __name__ == "__main__":
    main()
