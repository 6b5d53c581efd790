"""SINet (Park et al., WACV 2020): model, official weights, trainer, evaluation and export."""

__version__ = "0.1.0"
