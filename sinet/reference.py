"""The authors' own SINet module, imported at run time for side-by-side speed and parity (never copied here).

It lives in ``$SINET_SHARED/reference/official/SINet.py`` (``SINET_SHARED`` defaults to the project's sibling
``shared``), with its licence and README. :func:`official_model` builds ``Dnc_SINet(2, 2, 8, 1)``, the
configuration of the released weights, or raises :class:`ReferenceUnavailable` saying why it cannot.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
from pathlib import Path

import torch
from torch import nn

PROJECT = Path(__file__).resolve().parents[1]


class ReferenceUnavailable(RuntimeError):
    """The authors' module cannot be imported here; the message says why (a missing folder, an import error)."""


def official_module_file() -> Path:
    """Where the authors' ``SINet.py`` is expected: ``$SINET_SHARED/reference/official/SINet.py``."""
    shared = Path(os.environ.get("SINET_SHARED", PROJECT.parent / "shared"))
    return shared / "reference" / "official" / "SINet.py"


def official_model(weights: str | os.PathLike | None = None) -> nn.Module:
    """The authors' ``Dnc_SINet(2, 2, 8, 1)`` in eval mode, random-initialised or with their state-dict.

    Args:
        weights: the authors' ``SINet-official.pth`` (None: PyTorch's default initialisation).
    """
    path = official_module_file()
    if not path.is_file():
        raise ReferenceUnavailable(f"{path} is absent (set SINET_SHARED to the folder holding reference/official)")
    spec = importlib.util.spec_from_file_location("sinet_official_reference", path)
    module = importlib.util.module_from_spec(spec)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints its configuration while building
            spec.loader.exec_module(module)
            model = module.Dnc_SINet(2, 2, 8, 1)
    except Exception as error:  # anything their code raises means it is unusable here
        raise ReferenceUnavailable(f"{path}: {type(error).__name__}: {error}") from error
    if weights is not None:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()
