"""Copy trained checkpoints into ``sinet/weights/`` in their shipped form (see sinet/weights/MODEL_CARD.md).

    python scripts/ship_weights.py --sinet runs/sinet_eg1800/best.pt --teacher runs/teacher-small/teacher.pt

- SINet: ``best.pt`` as ``sinet train`` wrote it (weights, preprocessing and training config; ~0.5 MB).
- Teacher: the same checkpoint format without the optimizer/resume state and with float weights stored as
  float16 (about a quarter of the training checkpoint). ``load_teacher`` casts them back to float32 when it
  loads them into the model, so the shipped file works wherever a teacher checkpoint does.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from pipeline.teacher.checkpoint import read_checkpoint
from sinet_plus.files import atomic_path

WEIGHTS = Path(__file__).resolve().parents[1] / "sinet" / "weights"


def slim_teacher(source: Path, target: Path) -> Path:
    """Write ``source`` (a teacher checkpoint) to ``target`` without resume state, float weights as float16."""
    payload = read_checkpoint(source)
    payload["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    payload["train"] = {}
    with atomic_path(target) as tmp:
        torch.save(payload, tmp)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sinet", type=Path, help="SINet best.pt from sinet train")
    parser.add_argument("--teacher", type=Path, help="teacher checkpoint from pipeline train-teacher")
    args = parser.parse_args()
    if args.sinet:
        target = WEIGHTS / "sinet-eg1800.pt"
        shutil.copyfile(args.sinet, target)
        print(f"{target}: {target.stat().st_size / 1e6:.2f} MB")
    if args.teacher:
        target = slim_teacher(args.teacher, WEIGHTS / "teacher-mnv3s.pt")
        print(f"{target}: {target.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
