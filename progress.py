"""Progress bars: tqdm on a terminal, nothing under ``--quiet`` or when output goes to a file."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tqdm import tqdm


def progress(iterable: Iterable | None = None, *, quiet: bool, **kwargs: Any) -> tqdm:
    """A transient tqdm bar over ``iterable`` (or a manual one), for a person watching a terminal: off
    with ``quiet``, and off (tqdm's ``disable=None``) when its stream is not a terminal (logs, pipes)."""
    return tqdm(iterable, leave=False, disable=True if quiet else None, dynamic_ncols=True, **kwargs)
