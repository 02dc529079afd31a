"""cloudcli: a reproducible DVC pipeline for satellite-image cloud segmentation."""

__version__ = "0.1.0"

CLASSES = ("Fish", "Flower", "Gravel", "Sugar")  # the kaggle_clouds kind's classes, in channel order
