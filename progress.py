"""Progress bars: tqdm on a terminal, nothing under ``--quiet`` or when output goes to a file."""
from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


def bars_enabled(quiet: bool, stream: Any = None) -> bool:
    """Bars only for a person watching a terminal: not with ``--quiet``, not into logs or pipes."""
    stream = sys.stderr if stream is None else stream
    return not quiet and hasattr(stream, "isatty") and stream.isatty()


def progress(iterable=None, *, quiet: bool, **kwargs) -> tqdm:
    """A transient tqdm bar over ``iterable`` (or a manual one), disabled as ``bars_enabled`` says."""
    return tqdm(iterable, leave=False, disable=not bars_enabled(quiet), dynamic_ncols=True, **kwargs)
