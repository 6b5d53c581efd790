"""The gain of one SINet over another on the same photos, with a paired bootstrap interval.

    python bench/paired_gain.py runs/long/sinet-plus/eval_val.json runs/long/sinet/eval_val.json

Takes two ``sinet eval --json`` reports on the same manifest split (the first is the candidate, the second the
baseline) and prints the difference of their official IoU at 224 with the 95 % interval of a bootstrap that
resamples the photos (the same photos for both models, as ``bench/experiment.py`` does with one seed per arm),
then the differences at photo size and under each rotation limit the reports hold (means only: ``sinet eval``
keeps per-photo scores at 224 alone).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from experiment import ROTATIONS, bootstrap_gain


def paired_gain(candidate: dict, baseline: dict) -> tuple[float, float, float]:
    """Gain at 224 and its 95 % interval, over the photos both reports scored (they must be the same)."""
    a, b = ({row["id"]: row["iou"] for row in report["per_image"]} for report in (candidate, baseline))
    if a.keys() != b.keys():
        raise SystemExit(f"the reports scored different photos ({len(a)} and {len(b)}): compare the same split")
    photos = sorted(a)
    return bootstrap_gain(np.array([[a[p] for p in photos]]), np.array([[b[p] for p in photos]]))


def other_gains(candidate: dict, baseline: dict) -> list[tuple[str, float]]:
    """Mean IoU differences at photo size and per rotation limit, where both reports have them."""
    conditions = [("photo size", lambda r: r.get("full_resolution"))] + [
        (f"rotated ±{limit}°", lambda r, limit=limit: r.get("rotations", {}).get(limit)) for limit in ROTATIONS]
    return [(name, pick(candidate)["iou"] - pick(baseline)["iou"]) for name, pick in conditions
            if pick(candidate) and pick(baseline)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidate", type=Path, help="sinet eval --json report of the candidate")
    parser.add_argument("baseline", type=Path, help="sinet eval --json report of the baseline")
    args = parser.parse_args()
    candidate, baseline = (json.loads(path.read_text()) for path in (args.candidate, args.baseline))
    gain, low, high = paired_gain(candidate, baseline)
    print(f"{candidate['weights']} ({candidate['iou']:.2f}) against {baseline['weights']} ({baseline['iou']:.2f}), "
          f"{candidate['manifest']} {candidate['split']}, {candidate['images']} photos:")
    print(f"  224x224       {gain:+.2f} IoU (95 % paired bootstrap interval {low:+.2f} to {high:+.2f})")
    for name, difference in other_gains(candidate, baseline):
        print(f"  {name:<13} {difference:+.2f} IoU")


if __name__ == "__main__":
    main()
