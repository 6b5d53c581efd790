"""DeepLabv3+ teacher training and pseudo-labelling with quality signals."""
