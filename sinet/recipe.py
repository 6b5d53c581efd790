"""The authors' training recipe as plain values: the constants and augmentation settings that the loss, the
transforms and the trainer share.

It imports neither torch nor albumentations, so the ``sinet`` command can read its defaults without loading them
(``sinet bench`` must set OpenMP's wait policy before torch loads).
"""

from __future__ import annotations

from dataclasses import dataclass

STAGE1_LABEL_STRIDE = 8
"""Stage 1 trains the encoder on labels nearest-downsampled by this factor (224 → 28)."""

STAGE1_BAND_KERNEL = 5
"""Boundary-band kernel on the 28x28 labels of stage 1 (the authors' value)."""

STAGE2_BAND_KERNEL = 15
"""Boundary-band kernel on full-resolution 224x224 labels (the authors' value)."""


@dataclass(frozen=True)
class AugmentationConfig:
    """The knobs of the PortraitNet augmentation (:func:`sinet.transforms.train_transform`); defaults are the
    authors' values.

    Args:
        size: side of the square training input (224; a multiple of 32 for SINet).
        rotation: rotations are drawn from U[-rotation, rotation] degrees.
        scale: (low, high) of the random factor on top of the fit-to-canvas scale.
        shift: the rotation centre moves by U[-shift, shift] pixels in x and y (None = size / 4, i.e. 56 at 224).
        flip: probability of a horizontal flip.
        colour: probability of the colour jitter (saturation, brightness, contrast, sharpness).
        blur: probability of a Gaussian / median / box blur of kernel 3 or 5.
        noise: probability of additive Gaussian noise with σ ~ U[0, noise_sigma].
        noise_sigma: largest noise σ in 0..255 grey levels.
    """

    size: int = 224
    rotation: float = 45.0
    scale: tuple[float, float] = (0.5, 1.5)
    shift: float | None = None
    flip: float = 0.5
    colour: float = 0.5
    blur: float = 0.5
    noise: float = 0.5
    noise_sigma: float = 10.0
