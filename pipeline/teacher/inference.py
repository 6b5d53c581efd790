"""Batched teacher inference: aspect-preserving resize to a multiple of 32, padding, optional mirror pass.

Photos are resized on the loading side (DataLoader workers or Ray tasks) and shipped as ``uint8``, four
times smaller than floats; normalisation runs on the model's device. A batch runs as one forward per photo
shape (never padded, so a photo's mask does not depend on its batch); each prediction is resized to its
photo's size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import nn

from pipeline.teacher.model import TeacherConfig
from sinet_plus.torch_utils import autocast

MULTIPLE = 32
"""DeepLabV3+ downsamples by 32 (16 with its dilated encoder); sides must be multiples of it."""


def model_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """Height and width for the model: long side ``long_side``, aspect kept, both rounded to multiples of 32.

    Args:
        height: photo height in pixels.
        width: photo width in pixels.
        long_side: target long side (a multiple of 32 is kept exactly).
    """
    scale = long_side / max(height, width)
    return (max(MULTIPLE, round(height * scale / MULTIPLE) * MULTIPLE),
            max(MULTIPLE, round(width * scale / MULTIPLE) * MULTIPLE))


def resize_for_model(photo: np.ndarray, long_side: int) -> np.ndarray:
    """``photo`` (uint8 H x W x 3) resized to :func:`model_shape` (area filter when shrinking)."""
    height, width = model_shape(*photo.shape[:2], long_side)
    shrinking = height * width < photo.shape[0] * photo.shape[1]
    return cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


@dataclass
class Prediction:
    """Person probabilities at the photo's size; ``mirrored`` is the mirror image's prediction, flipped back."""

    prob: np.ndarray
    mirrored: np.ndarray | None


class Predictor:
    """A teacher model ready for batches of resized photos.

    Args:
        model: the DeepLabV3+ in eval mode.
        config: its normalisation.
        device: where the model lives; CUDA adds autocast and channels_last.
    """

    def __init__(self, model: nn.Module, config: TeacherConfig, device: torch.device):
        self.device = device
        self.model = model.to(device).eval()
        if device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.mean = torch.tensor(config.mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(config.std, device=device).view(1, 3, 1, 1) * 255

    def batch_tensor(self, resized: Sequence[np.ndarray]) -> torch.Tensor:
        """Zero-pad uint8 photos to one shape and normalise them into an N x 3 x H x W float tensor."""
        height = max(image.shape[0] for image in resized)
        width = max(image.shape[1] for image in resized)
        batch = np.zeros((len(resized), height, width, 3), np.uint8)
        for index, image in enumerate(resized):
            batch[index, :image.shape[0], :image.shape[1]] = image
        tensor = torch.from_numpy(batch).to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        tensor = (tensor - self.mean) / self.std
        return tensor.contiguous(memory_format=torch.channels_last) if self.device.type == "cuda" else tensor

    @torch.inference_mode()
    def probabilities(self, tensor: torch.Tensor, mirror: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Person probabilities (N x H x W) for a normalised batch, and for its mirror image flipped back."""
        inputs = torch.cat([tensor, tensor.flip(-1)]) if mirror else tensor
        with autocast(self.device):
            logits = self.model(inputs)[:, 0].float()
        probs = torch.sigmoid(logits)
        if not mirror:
            return probs, None
        return probs[:len(tensor)], probs[len(tensor):].flip(-1)

    def predict(self, resized: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]],
                mirror: bool = True) -> list[Prediction]:
        """Predictions at each photo's size.

        Photos of one shape go through the model together, one forward per shape: a photo zero-padded to a
        larger one's shape gets another mask (the model sees the padding), so its mask would depend on which
        photos share its batch, and a resumed run would write other masks than an unbroken one.

        Args:
            resized: uint8 photos from :func:`resize_for_model`.
            sizes: each photo's original (height, width).
            mirror: also predict the mirror images (for flip agreement and flip test-time augmentation).
        """
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for index, image in enumerate(resized):
            by_shape.setdefault(image.shape[:2], []).append(index)
        predictions: list[Prediction | None] = [None] * len(resized)
        for indexes in by_shape.values():
            probs, mirrored = self.probabilities(self.batch_tensor([resized[i] for i in indexes]), mirror)
            probs = probs.cpu().numpy()
            mirrored = mirrored.cpu().numpy() if mirrored is not None else None
            for row, index in enumerate(indexes):
                predictions[index] = Prediction(_to_size(probs[row], sizes[index]),
                                                _to_size(mirrored[row], sizes[index]) if mirrored is not None
                                                else None)
        return predictions


def _to_size(prob: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a probability map to (height, width) bilinearly."""
    height, width = size
    if prob.shape == (height, width):
        return np.ascontiguousarray(prob, dtype=np.float32)
    return cv2.resize(np.ascontiguousarray(prob, dtype=np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
