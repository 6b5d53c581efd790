"""The review store under load: real processes leasing and deciding concurrently over one SQLite database.

Each process leases one item, decides it and repeats until the queue is empty (one transaction each for the
lease and the decision, as the app does). Afterwards every decision a process saw confirmed must be in the
database and no item may be decided more often than it needs (double review needs two different people).

    .venv/bin/python bench/review_store_load.py --processes 8 --items 2000
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "tests"))

from review_helpers import check_decisions, decide_until_empty  # noqa: E402

from pipeline.review.store import NewItem, Store  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--double", type=float, default=0.1, help="share of items two people review")
    parser.add_argument("--fast", action="store_true", help="synchronous=NORMAL instead of FULL")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="review-load-") as scratch:
        db = str(Path(scratch) / "review.sqlite")
        with Store(db, create=True) as store:
            store.add_items(NewItem(key=f"load/{n:05d}", image=f"images/{n:05d}.jpg", mask=f"masks/{n:05d}.png",
                                    rank=n, needed=2 if n < args.double * args.items else 1)
                            for n in range(args.items))
        names = [f"annotator-{n}" for n in range(args.processes)]
        with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
            start_at = time.time() + 20  # spawning and importing takes seconds on a loaded machine
            results = pool.starmap(decide_until_empty, [(db, name, start_at, not args.fast) for name in names])
        confirmed = dict(zip(names, results))
        lost, too_often, undecided = check_decisions(db, confirmed)
        with Store(db) as store:
            times = store.decisions_frame()["decided_at"]
    decisions = sum(map(len, results))
    seconds = times.max() - times.min()
    print(f"{args.processes} processes, {args.items} items ({args.double:.0%} double review), synchronous="
          f"{'NORMAL' if args.fast else 'FULL'}: {decisions} decisions in {seconds:.1f} s (first to last) = "
          f"{decisions / seconds:.0f} decisions/s, each with its own lease and decision transaction")
    print(f"lost decisions: {lost}; items decided more often than needed: {too_often}; items left: {undecided}")
    print("per process: " + ", ".join(str(len(r)) for r in results))


if __name__ == "__main__":
    main()
