"""Copy trained checkpoints into ``sinet/weights/`` in their shipped form (see sinet/weights/MODEL_CARD.md).

    python scripts/ship_weights.py --sinet runs/s0/best.pt --sinet-plus runs/long/sinet-plus-kd/averaged.pt \
        --teacher runs/teacher/teacher.pt

- SINet and SINet+: ``best.pt`` (or ``averaged.pt``) as ``sinet train`` wrote it (weights, preprocessing and
  training config; ~0.5 MB).
- Teacher: the ensemble file ``pipeline build-teacher`` wrote (members embedded, large weights as int8 with a
  scale per output channel, its calibration in the card), copied as it is.

Every shipped file must stay under 20 MiB.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from sinet.weights import FOLDER, SINET_EG1800, SINET_PLUS, TEACHER

LIMIT = 20 * 2**20


def ship(source: Path, target: Path) -> None:
    if source.stat().st_size >= LIMIT:
        raise SystemExit(f"{source}: {source.stat().st_size / 2**20:.1f} MiB, over the 20 MiB a shipped file may have")
    shutil.copyfile(source, target)
    print(f"{target}: {target.stat().st_size / 2**20:.2f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sinet", type=Path, help="SINet best.pt trained on EG1800 alone (the common start)")
    parser.add_argument("--sinet-plus", type=Path, help="SINet checkpoint trained on EG1800 and the curated data")
    parser.add_argument("--teacher", type=Path, help="teacher ensemble file from pipeline build-teacher")
    args = parser.parse_args()
    FOLDER.mkdir(exist_ok=True)
    for source, target in ((args.sinet, SINET_EG1800), (args.sinet_plus, SINET_PLUS), (args.teacher, TEACHER)):
        if source:
            ship(source, target)


if __name__ == "__main__":
    main()
