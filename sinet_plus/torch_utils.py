"""Small torch helpers every trainer and inference stage needs: device choice, seeding, autocast, safe loading."""

from __future__ import annotations

import contextlib
import os
import pickle
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sinet_plus.errors import PathError, UserError


def pick_device(requested: str = "auto") -> torch.device:
    """The device to run on: ``auto`` takes CUDA, then Apple MPS, then CPU; anything else is used as given.

    Args:
        requested: ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ``mps``...

    Raises:
        UserError: a CUDA device was asked for where there is none.
    """
    if requested != "auto":
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"device {requested!r} asked for, but CUDA is not available here")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bfloat16 natively (AVX-512 BF16 or AMX); elsewhere bf16 is emulated and slow."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast(device: torch.device, cpu_bf16: bool = False) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA (bf16 where supported, else fp16); on a CPU only when ``cpu_bf16`` is asked for
    and the CPU runs bf16 natively (it pays for large convolutions, not for SINet's small ones); else a no-op.

    Args:
        device: where the model runs.
        cpu_bf16: allow bf16 autocast on a CPU with native bf16.
    """
    if device.type == "cpu" and cpu_bf16 and cpu_has_bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


class CheckpointError(PathError):
    """A checkpoint that cannot be used; ``str()`` names the file and the reason."""


def load_weights_only(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU, with a clear :class:`CheckpointError` when it refuses.

    Checkpoints are input: a file that needs arbitrary unpickling (code objects, custom classes) is refused
    rather than executed, and the message does not suggest ``weights_only=False``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        what = f"it pickles {found.group(1)}" if found else "it pickles objects other than tensors and plain data"
        raise CheckpointError(path, f"refused by torch.load(weights_only=True): {what}, so it is not a checkpoint "
                                    "this project wrote, and it will not be unpickled (that could run code)") from None
    except Exception as error:  # RuntimeError or EOFError depending on the damage
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(path, "refused by torch.load(weights_only=True): truncated, damaged or not a torch "
                                    f"checkpoint ({first_line})") from None


def describe_mismatch(model: torch.nn.Module, state_dict: Mapping[str, Any], shown: int = 3) -> str:
    """Why ``state_dict`` does not fit ``model``, in one line: counts of missing, unexpected and differently
    shaped keys with a few names each (a full listing of a wrong architecture runs to thousands of keys)."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    reshaped = [f"{key} {tuple(state_dict[key].shape)} for {tuple(expected[key].shape)}" for key in expected
                if key in state_dict and hasattr(state_dict[key], "shape")
                and tuple(state_dict[key].shape) != tuple(expected[key].shape)]
    parts = [f"{len(names)} {label} (e.g. {', '.join(names[:shown])})"
             for label, names in (("missing keys", missing), ("unexpected keys", unexpected),
                                  ("keys with another shape", reshaped)) if names]
    return "; ".join(parts) or "the weights do not load"
