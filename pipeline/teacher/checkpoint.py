"""Teacher checkpoints: a plain dict that carries its own config and loads with ``weights_only=True``.

Layout (written atomically)::

    {
      "format": "sinet-plus-teacher/1",
      "config": TeacherConfig.to_dict(),    # encoder, classes, input size, normalisation, start weights
      "state_dict": {...},                  # model weights (CPU tensors)
      "data_hash": "...",                   # hash of the training manifests' rows and files
      "val": {"iou": ..., ...},             # validation metrics of these weights
      "train": {...},                       # epoch, step, optimizer state... for --resume
    }
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.teacher.model import TeacherConfig, build_model
from sinet_plus.errors import UserError
from sinet_plus.files import atomic_path, file_hash
from sinet_plus.torch_utils import CheckpointError, load_weights_only

FORMAT = "sinet-plus-teacher/1"


@dataclass
class Teacher:
    """A loaded teacher in eval mode, with what produced it."""

    model: nn.Module
    config: TeacherConfig
    hash: str
    val: dict[str, Any]
    data_hash: str


def save_checkpoint(path: str | os.PathLike, model: nn.Module, config: TeacherConfig, data_hash: str,
                    val: Mapping[str, Any] | None = None, train: Mapping[str, Any] | None = None) -> Path:
    """Write a teacher checkpoint atomically (a reader sees the old file or the complete new one).

    Args:
        path: destination file.
        model: the DeepLabV3+ (``torch.compile``/DDP wrappers are unwrapped).
        config: how the model is built and fed.
        data_hash: :func:`pipeline.teacher.train.data_hash` of the training rows.
        val: validation metrics of these weights.
        train: training state for ``--resume`` (plain types and tensors only).
    """
    model = getattr(model, "_orig_mod", model)
    model = getattr(model, "module", model)
    payload = {"format": FORMAT, "config": config.to_dict(),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
               "data_hash": data_hash, "val": dict(val or {}), "train": dict(train or {})}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint dict, refusing anything that is not a teacher checkpoint, with the reason.

    Raises:
        CheckpointError: unreadable, refused by ``weights_only=True``, or another kind of checkpoint.
    """
    payload = load_weights_only(path)
    if not isinstance(payload, Mapping) or payload.get("format") != FORMAT:
        if isinstance(payload, Mapping):
            keys = sorted(map(str, payload))
            kind = (f"format {payload['format']!r}" if "format" in payload
                    else f"a dict of {len(keys)} keys like {keys[:3]}")
        else:
            kind = type(payload).__name__
        raise CheckpointError(path, f"not a DeepLabV3+ teacher checkpoint ({FORMAT}); it holds {kind} "
                                    "(another architecture, e.g. a SINet checkpoint?)")
    return dict(payload)


def teacher_hash(path: str | os.PathLike) -> str:
    """The first 12 hex digits of the checkpoint file's SHA-256: names the teacher in manifest rows."""
    return file_hash(path, 12)


def load_teacher(path: str | os.PathLike, device: str | torch.device = "cpu") -> Teacher:
    """Build the teacher stored in ``path`` on ``device`` in eval mode.

    Raises:
        CheckpointError: see :func:`read_checkpoint`; also when the weights do not fit the stored config.
    """
    payload = read_checkpoint(path)
    model, config = teacher_from_payload(payload, path)
    return Teacher(model.to(device).eval(), config, teacher_hash(path), dict(payload.get("val", {})),
                   str(payload.get("data_hash", "")))


def teacher_from_payload(payload: Mapping[str, Any], source: str | os.PathLike) -> tuple[nn.Module, TeacherConfig]:
    """The DeepLabV3+ (float32, eval mode, CPU) and its config from a checkpoint dict already read.

    Args:
        payload: the dict :func:`read_checkpoint` returns (float16 weights of a shipped file are cast back).
        source: the file (or ensemble member) it came from, for errors.

    Raises:
        CheckpointError: the weights do not fit the stored config.
    """
    try:
        config = TeacherConfig.from_dict(payload["config"])
        model = build_model(config)
        state = {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
        model.load_state_dict(state, strict=True)
    except (KeyError, ValueError, RuntimeError, UserError) as error:
        raise CheckpointError(source, f"weights do not fit the stored config: {str(error)[:300]}") from None
    return model.eval(), config
