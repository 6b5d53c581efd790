"""Training and evaluation transforms: the PortraitNet augmentation the authors trained with, and the stretch-resize
of their evaluation.

Every preset is an ``albumentations.Compose`` over ``image`` (uint8 RGB, H×W×3) and ``mask`` (uint8,
0/1/IGNORE). Albumentations provides flip, colour, blur and noise. The affine warp is our own
:class:`PortraitWarp` because no library transform maps a W×H photo onto a fixed 224² canvas with one
isotropic scale taken from the mean of both axis ratios (``A.Affine`` keeps the input's size; ``Resize`` after
it would stretch). Augmentation is reproducible per sample: :func:`seed_transform` gives the whole pipeline one
generator seeded from the sample, so results do not depend on DataLoader workers or on the order samples are
drawn.
"""

from __future__ import annotations

import random
from typing import Any

import albumentations as A
import cv2
import numpy as np

from sinet.recipe import STAGE1_LABEL_STRIDE, AugmentationConfig

BORDER_GRAY = 128
"""Fill value of the photo outside the warped image (PortraitNet's gray)."""

class PortraitWarp(A.DualTransform):
    """PortraitNet's affine warp of the whole photo onto a ``size``² canvas.

    The photo's centre goes to the canvas centre, scaled by ``U(scale) · mean(size/(W-1), size/(H-1))``
    (one isotropic factor, so faces keep their shape), then rotated by U[-rotation, rotation] degrees and
    scaled about a point shifted by U[-shift, shift] pixels from the canvas centre. Photo: bilinear with a
    gray border; mask: nearest with a background (0) border.

    Args:
        size: canvas side in pixels.
        rotation: largest rotation in degrees.
        scale: range of the random scale factor.
        shift: largest shift of the rotation centre in pixels.
        border: photo fill value outside the warped image.
        p: probability (1 in training: the warp is also what brings the photo to ``size``).
    """

    def __init__(self, size: int = 224, rotation: float = 45.0, scale: tuple[float, float] = (0.5, 1.5),
                 shift: float = 56.0, border: int = BORDER_GRAY, p: float = 1.0):
        super().__init__(p=p)
        self.size, self.rotation, self.scale, self.shift, self.border = size, rotation, scale, shift, border

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        return {"matrix": warp_matrix(width, height, self.size,
                                      angle=self.py_random.uniform(-self.rotation, self.rotation),
                                      scale=self.py_random.uniform(*self.scale),
                                      shift=(self.py_random.uniform(-self.shift, self.shift),
                                             self.py_random.uniform(-self.shift, self.shift)))}

    def apply(self, img: np.ndarray, matrix: np.ndarray, **params: Any) -> np.ndarray:
        return cv2.warpAffine(img, matrix, (self.size, self.size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(self.border,) * 3)

    def apply_to_mask(self, mask: np.ndarray, matrix: np.ndarray, **params: Any) -> np.ndarray:
        return cv2.warpAffine(mask, matrix, (self.size, self.size), flags=cv2.INTER_NEAREST,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("size", "rotation", "scale", "shift", "border")


def warp_matrix(width: int, height: int, size: int, angle: float, scale: float,
                shift: tuple[float, float]) -> np.ndarray:
    """The 2x3 matrix of PortraitNet's ``aug_matrix`` with the whole photo as the box.

    Args:
        width, height: photo size in pixels.
        size: canvas side.
        angle: rotation in degrees (counter-clockwise on screen, as ``cv2.getRotationMatrix2D``).
        scale: random factor multiplying the fit-to-canvas scale ``mean(size/(W-1), size/(H-1))``.
        shift: (x, y) offset of the rotation centre from the canvas centre.
    """
    to_centre = np.array([[1.0, 0.0, (size - (width - 1)) / 2.0],
                          [0.0, 1.0, (size - (height - 1)) / 2.0],
                          [0.0, 0.0, 1.0]])
    factor = scale * (size / (width - 1) + size / (height - 1)) / 2.0
    rotate = cv2.getRotationMatrix2D((size / 2.0 + shift[0], size / 2.0 + shift[1]), angle, factor)
    return (np.vstack([rotate, [0.0, 0.0, 1.0]]) @ to_centre)[:2]


class PilSharpness(A.ImageOnlyTransform):
    """PIL's ``ImageEnhance.Sharpness``: blend with PIL's SMOOTH-filtered image (factor < 1 blurs, > 1 sharpens).

    Albumentations' ``Sharpen`` uses another kernel and never softens, so this small transform keeps the
    official behaviour. The outermost pixel ring is left as it is, as in PIL.

    Args:
        factor: (low, high) of the uniform enhancement factor (0.8..1.2 officially).
        p: probability.
    """

    _KERNEL = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=np.float32) / 13.0

    def __init__(self, factor: tuple[float, float] = (0.8, 1.2), p: float = 1.0):
        super().__init__(p=p)
        self.factor = factor

    def get_params(self) -> dict[str, float]:
        return {"factor": self.py_random.uniform(*self.factor)}

    def apply(self, img: np.ndarray, factor: float, **params: Any) -> np.ndarray:
        smooth = cv2.filter2D(img, cv2.CV_32F, self._KERNEL, borderType=cv2.BORDER_REPLICATE)
        smooth[0, :], smooth[-1, :], smooth[:, 0], smooth[:, -1] = img[0, :], img[-1, :], img[:, 0], img[:, -1]
        return np.clip(smooth + factor * (img.astype(np.float32) - smooth) + 0.5, 0, 255).astype(np.uint8)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("factor",)


def train_transform(config: AugmentationConfig = AugmentationConfig()) -> A.Compose:
    """The PortraitNet augmentation the authors trained with: warp, flip, colour, blur, noise, in that order.

    Colour follows PIL's order (saturation, brightness, contrast, sharpness) with the official factor ranges,
    drawn uniformly instead of in steps of 0.1. Blur picks Gaussian / median / box with weights 0.3 / 0.3 / 0.4
    and kernel 3 or 5 (the Gaussian σ spans what OpenCV derives from those kernels, 0.8..1.1).
    """
    shift = config.size / 4 if config.shift is None else config.shift
    return A.Compose([
        PortraitWarp(config.size, config.rotation, config.scale, shift),
        A.HorizontalFlip(p=config.flip),
        A.Sequential([
            A.ColorJitter(brightness=(1, 1), contrast=(1, 1), saturation=(0.4, 1.6), hue=(0, 0), p=1),
            A.ColorJitter(brightness=(0.4, 1.6), contrast=(1, 1), saturation=(1, 1), hue=(0, 0), p=1),
            A.ColorJitter(brightness=(1, 1), contrast=(0.6, 1.4), saturation=(1, 1), hue=(0, 0), p=1),
            PilSharpness((0.8, 1.2)),
        ], p=config.colour),
        A.OneOf([
            A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.8, 1.1), p=0.3),
            A.MedianBlur(blur_limit=(3, 5), p=0.3),
            A.Blur(blur_limit=(3, 5), p=0.4),
        ], p=config.blur),
        A.GaussNoise(std_range=(0.0, config.noise_sigma / 255.0), mean_range=(0.0, 0.0), p=config.noise),
    ])


def eval_transform(size: int = 224) -> A.Compose:
    """Evaluation input as the authors' evaluation makes it: stretch-resize to ``size``², photo bilinear, mask
    nearest."""
    return A.Compose([A.Resize(size, size, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST)])


def seed_transform(transform: A.Compose, seed: int) -> A.Compose:
    """Give every step of ``transform`` one shared generator pair seeded with ``seed``; returns ``transform``.

    One generator for the whole pipeline (not one per step with the same seed, which would correlate the
    steps' draws) makes a sample's augmentation a function of its seed alone.
    """
    transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
    return transform


def downsample_labels(mask: np.ndarray, stride: int = STAGE1_LABEL_STRIDE) -> np.ndarray:
    """Nearest-neighbour label downsampling by ``stride`` (OpenCV ``INTER_NEAREST``, as the official code)."""
    height, width = mask.shape
    if height % stride or width % stride:
        raise ValueError(f"a {width}x{height} label does not divide by the stride {stride}")
    return cv2.resize(mask, (width // stride, height // stride), interpolation=cv2.INTER_NEAREST)


def sample_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from integer keys, e.g. (run seed, stage, epoch, sample index).

    Keys name a sample's draw, so the draw does not depend on the worker or the batch that serves it.
    """
    return int(np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0] >> np.uint64(1))
