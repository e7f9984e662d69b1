"""What the program says to people: the one exception type for mistakes a user can fix (bad data, bad
options, bad checkpoints), text that any file name can be printed in, and progress bars."""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tqdm import tqdm


class UserError(Exception):
    """An expected problem with the user's input; the scripts print its message without a traceback."""


class DivergedError(UserError):
    """A loss became NaN or infinite (the scripts exit with status 3)."""


def printable(text: str) -> str:
    """``text`` as UTF-8 can hold it, for logs, consoles and CSV files: the bytes of a file name that are not
    UTF-8, which ``os.fsdecode`` keeps as lone surrogates, written as \\xNN escapes."""
    try:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate no file name decodes to
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def make_folder(path: str | Path, what: str) -> Path:
    """Create an output folder (and its parents), or say which path cannot be one and why."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{path}: cannot create the {what} there ({err.strerror})") from None
    return path


def progress(iterable: Iterable | None = None, *, quiet: bool, **kwargs: Any) -> tqdm:
    """A transient tqdm bar over ``iterable`` (or a manual one), for a person watching a terminal: off
    with ``quiet``, and off (tqdm's ``disable=None``) when its stream is not a terminal (logs, pipes)."""
    return tqdm(iterable, leave=False, disable=True if quiet else None, dynamic_ncols=True, **kwargs)
