"""The one exception type for mistakes a user can fix (bad data, bad options, bad checkpoints)."""
from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """An expected problem with the user's input; the scripts print its message without a traceback."""


class DivergedError(UserError):
    """A loss became NaN or infinite (the scripts exit with status 3)."""


def make_folder(path: str | Path, what: str) -> Path:
    """Create an output folder (and its parents), or say which path cannot be one and why."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{path}: cannot create the {what} there ({err.strerror})") from None
    return path
