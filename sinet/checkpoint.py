"""Checkpoints: the authors' released weights and our own format, both loaded with ``weights_only=True``.

Our format (a plain dict, written atomically through ``sinet_plus.files.atomic_path``)::

    {
      "format": "sinet-plus/1",
      "arch": "SINet" | "SINetEncoder",       # full model, or the stage-1 encoder alone
      "num_classes": 2,
      "state_dict": {...},                    # our key layout (decoder keys under "decoder.")
      "preprocessing": {...},                 # Preprocessing.to_dict(): inference never guesses
      "extra": {...},                         # caller's data, e.g. epoch, metrics, optimizer/scheduler state
    }

``extra`` may hold only what ``torch.load(weights_only=True)`` accepts: tensors, numbers, strings, bools,
None, and lists/tuples/dicts of these (optimizer and LR-scheduler ``state_dict()`` qualify). The trainer saves
through :func:`save_checkpoint` and resumes with :func:`load_checkpoint` (raw dict, ``extra`` included);
inference uses :func:`load_model`.

The official ``SINet.pth`` is a bare state_dict of tensors in the legacy pickle format; it loads with
``weights_only=True`` as well. It is recognised by its exact key set (ours without the ``decoder.`` prefix) and
converted by :func:`convert_official_state_dict` with strict key matching; it always gets the ``OFFICIAL``
preprocessing.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sinet.model import SINet, SINetEncoder
from sinet.preprocess import OFFICIAL, Preprocessing
from sinet_plus.files import atomic_path
from sinet_plus.torch_utils import CheckpointError, describe_mismatch, load_weights_only

FORMAT = "sinet-plus/1"
ARCHITECTURES = {"SINet": SINet, "SINetEncoder": SINetEncoder}
REQUIRED_KEYS = {"num_classes": int, "state_dict": Mapping, "preprocessing": Mapping}
"""Entries of our format that loading needs, with their types."""
DECODER_PREFIX = "decoder."


def official_key_set() -> set[str]:
    """Keys of the authors' ``Dnc_SINet`` state_dict: ours with the ``decoder.`` prefix removed."""
    return {key.removeprefix(DECODER_PREFIX) for key in SINet().state_dict()}


def convert_official_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the official keys to ours (decoder modules move under ``decoder.``), refusing any mismatch.

    Args:
        state_dict: the authors' ``Dnc_SINet`` state_dict (393 keys).

    Raises:
        KeyError: listing the missing and unexpected keys when the key set is not exactly the official one.
    """
    expected = official_key_set()
    missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
    if missing or unexpected:
        raise KeyError(f"not the official SINet layout: missing {missing[:5]} ({len(missing)}), "
                       f"unexpected {unexpected[:5]} ({len(unexpected)})")
    return {key if key.startswith("encoder.") else DECODER_PREFIX + key: value for key, value in state_dict.items()}


def is_official(payload: Any) -> bool:
    """True for a bare state_dict with exactly the authors' key set.

    Args:
        payload: whatever ``torch.load`` returned.
    """
    return isinstance(payload, Mapping) and "format" not in payload and set(payload) == official_key_set()


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint (ours or official) into our dict format, without building a model.

    Args:
        path: ``.pth``/``.pt`` file.

    Raises:
        CheckpointError: unreadable file or unknown layout.
    """
    payload = load_weights_only(path)
    if is_official(payload):
        return {"format": FORMAT, "arch": "SINet", "num_classes": 2, "preprocessing": OFFICIAL.to_dict(),
                "state_dict": convert_official_state_dict(payload), "extra": {"source": "official"}}
    if isinstance(payload, Mapping) and payload.get("format") == FORMAT:
        if payload.get("arch") not in ARCHITECTURES:
            raise CheckpointError(path, f"unknown arch {payload.get('arch')!r}; expected one of {list(ARCHITECTURES)}")
        absent = [key for key in REQUIRED_KEYS if not isinstance(payload.get(key), REQUIRED_KEYS[key])]
        if absent:
            raise CheckpointError(path, f"a {FORMAT} checkpoint without a usable {', '.join(absent)}: damaged, or "
                                        "not written by this project's save_checkpoint")
        try:
            Preprocessing.from_dict(payload["preprocessing"])
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(path, f"its preprocessing record cannot be read ({error!r})") from None
        return dict(payload)
    kind = f"a dict with keys {sorted(payload)[:6]}" if isinstance(payload, Mapping) else type(payload).__name__
    raise CheckpointError(path, f"neither the official SINet state_dict nor a {FORMAT} checkpoint ({kind})")


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu"
               ) -> tuple[nn.Module, Preprocessing, dict[str, Any]]:
    """Build the model stored in ``path`` in eval mode, with its preprocessing and metadata.

    Args:
        path: official ``SINet.pth`` or one of our checkpoints.
        device: where to put the model.

    Returns:
        ``(model, preprocessing, meta)``; ``meta`` holds ``arch``, ``num_classes``, ``source`` and ``extra``.

    Raises:
        CheckpointError: unreadable file, unknown layout, or weights that do not fit the architecture.
    """
    checkpoint = load_checkpoint(path)
    model, preprocessing = model_from_checkpoint(checkpoint, path)
    extra = checkpoint.get("extra", {})
    meta = {"arch": checkpoint["arch"], "num_classes": int(checkpoint["num_classes"]),
            "source": extra.get("source", "sinet-plus"), "extra": extra}
    return model.to(device).eval(), preprocessing, meta


def model_from_checkpoint(checkpoint: Mapping[str, Any], source: str | os.PathLike) -> tuple[nn.Module, Preprocessing]:
    """The model (eval mode, CPU, float32) and preprocessing of a checkpoint dict in our format.

    Args:
        checkpoint: what :func:`load_checkpoint` returns (float16 weights are cast back to float32).
        source: the file (or ensemble member) it came from, for errors.

    Raises:
        CheckpointError: the weights do not fit the architecture.
    """
    model = ARCHITECTURES[checkpoint["arch"]](num_classes=int(checkpoint["num_classes"]))
    state = {k: v.float() if v.is_floating_point() else v for k, v in checkpoint["state_dict"].items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        raise CheckpointError(source, f"weights do not fit {checkpoint['arch']}: "
                                      f"{describe_mismatch(model, state)}") from None
    return model.eval(), Preprocessing.from_dict(checkpoint["preprocessing"])


def weights_hash(model: nn.Module, length: int = 12) -> str:
    """Short SHA-256 of a model's weights (names and values): the same weights give the same hash whichever file
    or format they were loaded from.

    Args:
        model: any module.
        length: hex digits kept.
    """
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode("utf-8"))
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:length]


def save_checkpoint(path: str | os.PathLike, model: nn.Module, preprocessing: Preprocessing,
                    extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` in our format atomically (a reader sees the old file or the complete new one).

    Args:
        path: destination file.
        model: a ``SINet`` or ``SINetEncoder`` (unwrap DDP / ``torch.compile`` first; ``module``/``_orig_mod``
            wrappers are unwrapped here too).
        preprocessing: the preprocessing the model was trained with.
        extra: anything else to keep (epoch, metrics, optimizer state...); ``weights_only``-loadable types only.
    """
    model = getattr(model, "_orig_mod", model)
    model = getattr(model, "module", model)
    arch = type(model).__name__
    if arch not in ARCHITECTURES:
        raise TypeError(f"can only save {list(ARCHITECTURES)}, not {arch}")
    payload = {"format": FORMAT, "arch": arch, "num_classes": int(model.num_classes),
               "state_dict": {key: value.detach().cpu() for key, value in model.state_dict().items()},
               "preprocessing": preprocessing.to_dict(), "extra": dict(extra or {})}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)
