"""sinet-plus data engine: crop, pseudo-label, review and export portrait-segmentation data."""
