"""Weights that ship inside the package; ``MODEL_CARD.md`` beside them says how each was made and how good it is.

Commands that take a checkpoint fall back to these when none is given: ``sinet eval`` / ``sinet predict`` to
:data:`SINET`, ``pipeline pseudo-label`` to :data:`TEACHER`.
"""

from pathlib import Path

FOLDER = Path(__file__).resolve().parent
SINET = FOLDER / "sinet-eg1800.pt"
"""The best SINet trained here."""
TEACHER = FOLDER / "teacher-mnv3s.pt"
"""The best teacher trained here (a DeepLabV3+ checkpoint or an ensemble file)."""
