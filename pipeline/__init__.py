"""sinet-plus data engine: crop, pseudo-label, review and export portrait-segmentation data."""

__version__ = "0.1.0"
