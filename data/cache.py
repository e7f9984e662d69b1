"""Decoded recordings kept on disk, so that a second run on the same files does not decode them again.

An entry is named by a hash of the files (path, size, modification time) and of what decoding depends on
(``--sample_rate``, ``--mess_length``); a changed file is a new entry. It holds the signals cut or padded
to that length and, per file, its decoded length, channel count and sample rate, from which every check
and message of a first decode is repeated. The folder is ``$XDG_CACHE_HOME/grlnet/decoded`` (by default
``~/.cache/grlnet/decoded``); ``--no-cache`` neither reads nor writes it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from data.console import UserError, make_folder
from data.files import atomic_write

log = logging.getLogger("grlnet.data")
CACHE_FORMAT = 1  # part of every entry's name: a new layout of entries never reads an old one


@dataclass
class Decoded:
    """Files decoded and brought to one length: signals [N, L] float32, and per file the number of samples
    it decoded to, its channels (mixed to mono) and its sample rate (0: a CSV signal, rate unknown)."""

    signals: np.ndarray
    lengths: np.ndarray
    channels: np.ndarray
    rates: np.ndarray


def cache_folder() -> Path:
    """Where the entries are kept: the user's cache folder (XDG_CACHE_HOME, else ~/.cache), grlnet/decoded."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "grlnet" / "decoded"


def entry_path(paths: list[Path], sample_rate: int | None, mess_length: int) -> Path | None:
    """The entry of these files decoded at ``sample_rate`` (None: each file's own) to ``mess_length``
    samples; None where a file cannot be looked at (decoding then says what is wrong with it)."""
    try:
        identity = [(str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns) for path in paths]
    except OSError:
        return None
    text = json.dumps([CACHE_FORMAT, sample_rate, mess_length, identity])
    return cache_folder() / f"{hashlib.sha256(text.encode()).hexdigest()[:40]}.npz"


def load(paths: list[Path], sample_rate: int | None, mess_length: int) -> Decoded | None:
    """The cached decode of ``paths`` (``entry_path``), or None: none kept, or an unreadable entry (ignored)."""
    entry = entry_path(paths, sample_rate, mess_length)
    if entry is None or not entry.is_file():
        return None
    try:
        with np.load(entry) as stored:
            decoded = Decoded(**{field.name: stored[field.name] for field in fields(Decoded)})
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        log.warning("warning: %s: unreadable decoded-cache entry (%s); decoding the files again", entry, err)
        return None
    if decoded.signals.shape != (len(paths), mess_length):
        log.warning("warning: %s: decoded-cache entry of another shape; decoding the files again", entry)
        return None
    return decoded


def save(paths: list[Path], sample_rate: int | None, mess_length: int, decoded: Decoded) -> None:
    """Keep ``decoded`` for the next run (written atomically, data.files); a cache that cannot be written
    is skipped with a warning, never an error."""
    entry = entry_path(paths, sample_rate, mess_length)
    if entry is None:
        return
    try:
        make_folder(entry.parent, "decoded-recordings cache folder")
        with atomic_write(entry, "wb", "decoded-cache entry") as handle:
            np.savez(handle, **{field.name: getattr(decoded, field.name) for field in fields(Decoded)})
    except UserError as err:
        log.warning("warning: %s; the next run decodes the files again", err)
