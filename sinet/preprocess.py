"""Preprocessing as a named, serialisable object, stored in every checkpoint so inference never guesses.

Network input = ``((x - mean) / std) / divisor`` for ``x`` in [0, 255] in ``channel_order``, after a
stretch-resize to ``size`` (image bilinear, mask nearest, as the authors' evaluation does).

- ``OFFICIAL``: what the released weights need — BGR, the authors' training-set mean/std and an extra ``/255``
  (``Normalize`` then ``ToTensor`` in their code). Without the extra ``/255`` the masks are wrong.
- ``IMAGENET``: our default for models we train — RGB, ImageNet mean/std, no extra divisor, so inputs are of
  order 1 (the official inputs are of order 0.01, which only the first BatchNorm hides).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch

from sinet_plus.errors import UserError


@dataclass(frozen=True)
class Preprocessing:
    """How a uint8 RGB photo becomes a network input.

    Args:
        name: short name recorded in checkpoints and reports.
        channel_order: ``"rgb"`` or ``"bgr"``: the order the network expects.
        mean: per-channel mean in ``channel_order``, in [0, 255] units.
        std: per-channel std in ``channel_order``, in [0, 255] units.
        divisor: the normalised value is divided by this (255 for the official weights, 1 otherwise).
        size: ``(height, width)`` the photo is stretched to; multiples of 32.
    """

    name: str
    channel_order: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    divisor: float = 1.0
    size: tuple[int, int] = (224, 224)

    def __post_init__(self):
        if self.channel_order not in ("rgb", "bgr"):
            raise UserError(f"channel_order must be 'rgb' or 'bgr', not {self.channel_order!r}")
        if any(side % 32 for side in self.size):
            raise UserError(f"size {self.size} must be multiples of 32 (SINet pools down to 1/32)")

    def to_dict(self) -> dict:
        """Plain types only, so checkpoints holding it load with ``weights_only=True``."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        """Inverse of :meth:`to_dict`.

        Args:
            data: a dict written by :meth:`to_dict`.
        """
        return cls(name=str(data["name"]), channel_order=str(data["channel_order"]),
                   mean=tuple(float(v) for v in data["mean"]), std=tuple(float(v) for v in data["std"]),
                   divisor=float(data["divisor"]), size=tuple(int(v) for v in data["size"]))

    def resize_image(self, image: np.ndarray) -> np.ndarray:
        """Stretch-resize a ``(H, W, 3)`` uint8 photo to ``size`` (bilinear).

        Args:
            image: uint8 RGB photo.
        """
        height, width = self.size
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)

    def resize_mask(self, mask: np.ndarray) -> np.ndarray:
        """Stretch-resize a label mask to ``size`` (nearest, so labels and the ignore value survive).

        Args:
            mask: ``(H, W)`` uint8 mask.
        """
        height, width = self.size
        return cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)

    def normalise(self, image: np.ndarray) -> np.ndarray:
        """Normalise an already resized uint8 RGB photo into a float32 ``(3, H, W)`` array.

        Args:
            image: uint8 RGB ``(H, W, 3)``.
        """
        pixels = image.astype(np.float32)
        if self.channel_order == "bgr":
            pixels = pixels[..., ::-1]
        pixels = (pixels - np.asarray(self.mean, np.float32)) / (np.asarray(self.std, np.float32) * self.divisor)
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """Resize and normalise one uint8 RGB photo into a ``(1, 3, H, W)`` tensor.

        Args:
            image: uint8 RGB ``(H, W, 3)`` as returned by ``sinet_plus.imageio.read_image``.
        """
        return torch.from_numpy(self.normalise(self.resize_image(image)))[None]


OFFICIAL = Preprocessing("official", "bgr", mean=(107.304565, 115.69884, 132.35703),
                         std=(63.97182, 65.1337, 68.29726), divisor=255.0)
IMAGENET = Preprocessing("imagenet", "rgb", mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))
PRESETS = {preset.name: preset for preset in (OFFICIAL, IMAGENET)}
