"""Weights that ship inside the package; ``MODEL_CARD.md`` beside them says how each was made and how good it is.

Commands that take a checkpoint fall back to these when none is given: ``sinet eval`` / ``sinet predict`` /
``sinet export`` to :data:`SINET`, ``pipeline pseudo-label`` to :data:`TEACHER`.
"""

from pathlib import Path

FOLDER = Path(__file__).resolve().parent
SINET_EG1800 = FOLDER / "sinet-eg1800.pt"
"""SINet trained on EG1800 train alone: the common start of the SINet+ experiment and the teacher's SINet member."""
SINET_PLUS = FOLDER / "sinet-plus.pt"
"""SINet+: trained from scratch on EG1800 train plus the curated data, selected on held-out train photos."""
SINET = SINET_PLUS
"""The best SINet trained here (the default of the ``sinet`` commands)."""
TEACHER = FOLDER / "teacher.pt"
"""The best teacher trained here (a DeepLabV3+ checkpoint or an ensemble file)."""
