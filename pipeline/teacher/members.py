"""Teacher members: a DeepLabV3+ or a SINet checkpoint behind one interface, with test-time augmentation.

A member turns a batch of uint8 RGB photos into person probabilities at each photo's own size, twice: from
the photos as they are and from their mirror images (flipped back). Each is the mean over the member's input
sizes (multi-scale test-time augmentation). Keeping the two views apart lets the ensemble report
``flip_agreement`` while delivering their mean.

- :class:`DeepLabMember` keeps the photo's aspect (long side scaled to each size, sides multiples of 32) and
  reads a sigmoid person logit, as ``pipeline train-teacher`` trained it.
- :class:`SINetMember` stretch-resizes to each square size with the checkpoint's own preprocessing and reads
  the softmax person probability, as ``sinet train`` trained it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np
import torch

from pipeline.teacher.inference import Predictor, resize_for_model
from pipeline.teacher.model import TeacherConfig

DEEPLAB, SINET = "deeplabv3plus", "sinet"
KINDS = (DEEPLAB, SINET)


@dataclass
class Views:
    """Person probabilities of one photo at its size: as it is, and from its mirror image flipped back."""

    plain: np.ndarray
    mirrored: np.ndarray | None

    def merged(self) -> np.ndarray:
        """The delivered map: the mean of both views, or the plain one alone."""
        return self.plain if self.mirrored is None else (self.plain + self.mirrored) / 2


class Member(Protocol):
    """What the ensemble needs of a model."""

    kind: str
    sizes: tuple[int, ...]

    def views(self, photos: Sequence[np.ndarray], mirror: bool) -> list[Views]:
        """Probabilities of each photo (uint8 RGB, any size) at its own size."""


def _to_size(prob: np.ndarray, height: int, width: int) -> np.ndarray:
    prob = np.ascontiguousarray(prob, dtype=np.float32)
    if prob.shape == (height, width):
        return prob
    return cv2.resize(prob, (width, height), interpolation=cv2.INTER_LINEAR)


def _average(per_size: list[list[Views]]) -> list[Views]:
    """Mean over input sizes of each photo's views."""
    out = []
    for views in zip(*per_size):
        plain = np.mean([v.plain for v in views], axis=0)
        mirrored = None if views[0].mirrored is None else np.mean([v.mirrored for v in views], axis=0)
        out.append(Views(plain.astype(np.float32), None if mirrored is None else mirrored.astype(np.float32)))
    return out


class DeepLabMember:
    """A DeepLabV3+ teacher checkpoint.

    Args:
        model: the network in eval mode.
        config: its :class:`~pipeline.teacher.model.TeacherConfig` (normalisation, training size).
        sizes: long sides to predict at (default: the training size alone).
        device: where the model runs.
    """

    kind = DEEPLAB

    def __init__(self, model: torch.nn.Module, config: TeacherConfig, sizes: Sequence[int] = (),
                 device: torch.device = torch.device("cpu")):
        self.predictor = Predictor(model, config, device)
        self.sizes = tuple(sizes) or (config.input_size,)

    def views(self, photos: Sequence[np.ndarray], mirror: bool) -> list[Views]:
        sizes = [photo.shape[:2] for photo in photos]
        per_size = []
        for long_side in self.sizes:
            resized = [resize_for_model(photo, long_side) for photo in photos]
            per_size.append([Views(p.prob, p.mirrored) for p in self.predictor.predict(resized, sizes, mirror)])
        return _average(per_size)


class SINetMember:
    """A SINet checkpoint (ours or the stage-2 model of a ``sinet train`` run).

    Args:
        model: SINet in eval mode.
        preprocessing: the checkpoint's :class:`~sinet.preprocess.Preprocessing`.
        sizes: square sides to predict at (default: the checkpoint's own size).
    """

    kind = SINET

    def __init__(self, model: torch.nn.Module, preprocessing: Any, sizes: Sequence[int] = ()):
        self.model = model.eval()
        self.preprocessing = preprocessing
        self.sizes = tuple(sizes) or (preprocessing.size[0],)

    @torch.inference_mode()
    def views(self, photos: Sequence[np.ndarray], mirror: bool) -> list[Views]:
        """One forward per photo (with its mirror image): batched, the convolutions' arithmetic would depend on
        the batch's size, and a resumed run would write other numbers than an unbroken one."""
        per_size = []
        for side in self.sizes:
            prep = dataclasses.replace(self.preprocessing, size=(side, side))
            views = []
            for photo in photos:
                image = torch.from_numpy(prep.normalise(prep.resize_image(photo)))[None]
                inputs = torch.cat([image, image.flip(-1)]) if mirror else image
                probs = torch.softmax(self.model(inputs).float(), 1)[:, 1].numpy()
                height, width = photo.shape[:2]
                mirrored = _to_size(probs[1][:, ::-1], height, width) if mirror else None
                views.append(Views(_to_size(probs[0], height, width), mirrored))
            per_size.append(views)
        return _average(per_size)


def build_member(kind: str, checkpoint: Mapping[str, Any], sizes: Sequence[int] = (),
                 device: torch.device = torch.device("cpu"), source: str = "member") -> Member:
    """A member from a loaded checkpoint dict of either kind.

    Args:
        kind: ``deeplabv3plus`` or ``sinet``.
        checkpoint: the checkpoint's dict as written by ``pipeline train-teacher`` or ``sinet train``.
        sizes: input sizes of the test-time augmentation (empty = the training size).
        device: where the model runs (SINet members run on the CPU).
        source: names the checkpoint in errors.

    Raises:
        CheckpointError: the weights do not fit the architecture the checkpoint names.
    """
    if kind == DEEPLAB:
        from pipeline.teacher.checkpoint import teacher_from_payload

        model, config = teacher_from_payload(checkpoint, source)
        return DeepLabMember(model.to(device), config, sizes, device)
    if kind == SINET:
        from sinet.checkpoint import model_from_checkpoint

        model, preprocessing = model_from_checkpoint(checkpoint, source)
        return SINetMember(model, preprocessing, sizes)
    raise ValueError(f"{source}: member kind {kind!r} is not one of {KINDS}")
