"""SINet (Park et al., WACV 2020): model, official weights, trainer, evaluation and export."""

__version__ = "0.1.0"

from sinet.model import SINet, SINetEncoder  # noqa: E402

__all__ = ["SINet", "SINetEncoder", "__version__"]
