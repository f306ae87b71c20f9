"""segsweep: compare segmentation losses on synthetic street scenes with Lightning + Hydra."""

__version__ = "0.1.0"
