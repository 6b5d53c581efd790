"""SINet (Park et al., WACV 2020): model, official weights, trainer, evaluation and export."""

from __future__ import annotations

from sinet_plus import __version__

__all__ = ["SINet", "SINetEncoder", "__version__"]


def __getattr__(name: str):
    """``from sinet import SINet`` without importing torch for every ``sinet`` command (PEP 562): the bench must
    set OpenMP's wait policy before torch loads."""
    if name in ("SINet", "SINetEncoder"):
        from sinet import model

        return getattr(model, name)
    raise AttributeError(f"module 'sinet' has no attribute {name!r}")
