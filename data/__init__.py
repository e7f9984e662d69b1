"""Data: decoding files, the supported layouts, the embedded synthetic set, and windows."""
from data.datasets import ClipSet, load_datasets, load_unlabelled, split_calibration

__all__ = ["ClipSet", "load_datasets", "load_unlabelled", "split_calibration"]
