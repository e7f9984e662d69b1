"""Data: decoding files, the supported layouts, the embedded synthetic set, and windows."""
from data.datasets import (
    ClipSet,
    DataSettings,
    drawn_windows,
    hold_out_for_threshold,
    hold_out_last,
    load_datasets,
    load_unlabelled,
)

__all__ = ["ClipSet", "DataSettings", "drawn_windows", "hold_out_for_threshold", "hold_out_last", "load_datasets",
           "load_unlabelled"]
