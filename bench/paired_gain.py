"""The gain of one SINet over another on the same photos, with a paired bootstrap interval.

    python bench/paired_gain.py runs/long/sinet-plus/eval_val.json runs/long/sinet/eval_val.json
    python bench/paired_gain.py --candidate-seeds 3 runs/share/crops-share20-s{0,1,2}/eval.json \
        runs/experiment/eg1800-s{0,1,2}/eval.json

Takes ``sinet eval --json`` reports on the same manifest split, the candidate's first, then the baseline's (one
each, or one per seed of each arm: the first ``--candidate-seeds`` reports are the candidate's), and prints the
difference of their official IoU at 224 (seed means) with the 95 % interval of a bootstrap that resamples the
photos (the same photos for both) and the seeds of each arm, as ``bench/experiment.py`` does; then the differences
at photo size and under each rotation limit the reports hold (means only: ``sinet eval`` keeps per-photo scores at
224 alone).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from experiment import ROTATIONS, bootstrap_gain


def paired_gain(candidate: list[dict], baseline: list[dict]) -> tuple[float, float, float]:
    """Gain at 224 and its 95 % interval, over the photos every report scored (they must be the same)."""
    scores = [{row["id"]: row["iou"] for row in report["per_image"]} for report in candidate + baseline]
    if any(s.keys() != scores[0].keys() for s in scores):
        raise SystemExit(f"the reports scored different photos ({sorted({len(s) for s in scores})}): compare the "
                         "same split")
    photos = sorted(scores[0])
    matrix = np.array([[s[p] for p in photos] for s in scores])
    return bootstrap_gain(matrix[:len(candidate)], matrix[len(candidate):])


def other_gains(candidate: list[dict], baseline: list[dict]) -> list[tuple[str, float]]:
    """Differences of seed-mean IoU at photo size and per rotation limit, where every report has them."""
    conditions = [("photo size", lambda r: r.get("full_resolution"))] + [
        (f"rotated ±{limit}°", lambda r, limit=limit: r.get("rotations", {}).get(limit)) for limit in ROTATIONS]
    return [(name, np.mean([pick(r)["iou"] for r in candidate]) - np.mean([pick(r)["iou"] for r in baseline]))
            for name, pick in conditions if all(pick(r) for r in candidate + baseline)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", type=Path, nargs="+", help="sinet eval --json reports: candidate, then baseline")
    parser.add_argument("--candidate-seeds", type=int, default=1, help="how many of the reports are the candidate's "
                        "(one per seed; the rest are the baseline's)")
    args = parser.parse_args()
    reports = [json.loads(path.read_text()) for path in args.reports]
    candidate, baseline = reports[:args.candidate_seeds], reports[args.candidate_seeds:]
    if not candidate or not baseline:
        parser.error(f"{len(reports)} reports and --candidate-seeds {args.candidate_seeds} leave an arm empty")
    gain, low, high = paired_gain(candidate, baseline)

    def arm(reports: list[dict]) -> str:
        weights = reports[0]["weights"] if len(reports) == 1 else f"{len(reports)} seeds ({reports[0]['weights']}, ...)"
        return f"{weights} ({np.mean([r['iou'] for r in reports]):.2f})"

    print(f"{arm(candidate)} against {arm(baseline)}, {candidate[0]['manifest']} {candidate[0]['split']}, "
          f"{candidate[0]['images']} photos:")
    print(f"  224x224       {gain:+.2f} IoU (95 % paired bootstrap interval {low:+.2f} to {high:+.2f})")
    for name, difference in other_gains(candidate, baseline):
        print(f"  {name:<13} {difference:+.2f} IoU")


if __name__ == "__main__":
    main()
