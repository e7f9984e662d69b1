"""A training run's folder: created, locked against a second training, refused when it holds another
run (unless resumed or overwritten), with the run's options and log written there.

A folder holds a run only when its options.json is one train.py wrote (``is_run_options``: it holds
``run_options``, the option names every run stores, which the caller passes in from opts.py); the generic
names (train.log, metrics.csv, checkpoints/) alone never make one, and ``--overwrite`` removes only the
files a run writes, never a folder's other content, nor what a symbolic link in their place points to."""
from __future__ import annotations

import fcntl
import itertools
import json
import logging
import os
from collections.abc import Collection
from datetime import datetime
from pathlib import Path
from typing import TextIO

from data.console import UserError, make_folder
from data.files import check_writable, identity, temporaries_of, write_json
from grlnet.cli import configure_logging
from grlnet.plots import FIGURES
from grlnet.results import GROUP_TABLES

LOCK_FILE = ".lock"  # in the run folder, locked by the training that runs there, holding its process id
OPTIONS_FILE = "options.json"
# Files that show what a run folder holds (options.json of train.py's tells that it is one).
RUN_MARKERS = (OPTIONS_FILE, "checkpoints/last.pt", "metrics.csv", "train.log")
# Everything a run writes in its folder, and in its two subfolders: what --overwrite removes.
RUN_FILES = (OPTIONS_FILE, "train.log", "metrics.csv", "scores.csv", "threshold_scores.csv", *GROUP_TABLES.values())
RUN_SUBFOLDERS = {"checkpoints": ("last.pt", "best.pt"),
                  "figures": ("examples.npz", *(name for _, name, _ in FIGURES))}


def default_run_folder() -> str:
    """``runs/<date>-<time>``."""
    return str(Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S"))


def _in_use(folder: Path, what: str, holder: str) -> UserError:
    """The error for a folder whose lock another process holds."""
    return UserError(f"{folder}: another {what} (process {holder}) is running in this run folder; wait for it to "
                     "end, or give another --output_dir")


def lock_run_folder(folder: Path, what: str = "training") -> TextIO:
    """Hold an OS lock on ``folder``'s lock file, with this process's id written in it, so that a second
    ``what`` in the same folder is refused; the OS releases it when the process ends, even when killed."""
    handle = (folder / LOCK_FILE).open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise _in_use(folder, what, holder) from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _refuse_locked(folder: Path) -> None:
    """Refuse a folder another process holds locked (a training running there), so that what it holds so far
    is never judged as a finished or stopped run; only reads the lock file, and lets this process's own lock be."""
    try:
        handle = (folder / LOCK_FILE).open()
    except OSError:
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = handle.read().strip() or "unknown"
            if holder != str(os.getpid()):
                raise _in_use(folder, "training", holder) from None


def new_folder(base: Path, what: str) -> Path:
    """``base``, or ``base-2``, ``base-3``, ...: a folder this process created itself (``mkdir`` fails on one
    that exists), so that two runs started in the same second never share a default folder."""
    make_folder(base.parent, what)
    for number in itertools.count(1):
        folder = base if number == 1 else base.with_name(f"{base.name}-{number}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        except OSError as err:
            raise UserError(f"{folder}: cannot create the {what} there ({err.strerror})") from None
        return folder


def resumes_its_own_run(resume: str, folder: Path) -> bool:
    """Whether ``--resume`` ``resume`` continues the run in ``folder``: the folder's last checkpoint, or a file
    in it (compared by identity, links resolved)."""
    if resume == "last":
        return True
    own = identity(folder)
    return own is not None and any(identity(place) == own for place in Path(os.path.realpath(resume)).parents)


def is_run_options(path: Path, run_options: Collection[str]) -> bool:
    """Whether ``path`` is an options.json train.py wrote: a JSON object holding the project's own options
    (``run_options``), which no other tool's file of that name does."""
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(stored, dict) and set(run_options) <= stored.keys()


def run_markers_in(folder: Path, run_options: Collection[str]) -> list[str]:
    """The files in ``folder`` that show it holds a training run (``RUN_MARKERS``); none unless its
    options.json is train.py's (``is_run_options``)."""
    if not is_run_options(folder / OPTIONS_FILE, run_options):
        return []
    return [name for name in RUN_MARKERS if (folder / name).exists()]


def owning_run(path: Path, run_options: Collection[str], is_folder: bool = False) -> tuple[Path, list[str]] | None:
    """The training run among whose own files ``path`` (links resolved) would be, with the files that show
    the run: the run's folder itself (``is_folder``), a file in it, or anything in its checkpoints/ or
    figures/; None otherwise (a folder of one's own inside a run's, such as RUN/test, is not the run's)."""
    resolved = Path(os.path.realpath(path))
    candidates = [resolved if is_folder else resolved.parent,
                  *(place.parent for place in (resolved, *resolved.parents) if place.name in RUN_SUBFOLDERS)]
    for place in candidates:
        found = run_markers_in(place, run_options)
        if found:
            return place, found
    return None


def _holds(path: Path) -> bool:
    """Whether ``path`` holds anything: a link, a file, or a folder that is not empty."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        return True
    return path.is_dir() and any(path.iterdir())


def _run_files_in(folder: Path) -> list[str]:
    """The names of files and subfolders a run writes that ``folder`` holds (empty subfolders aside)."""
    return [f"{name}/" if name in RUN_SUBFOLDERS else name for name in (*RUN_FILES, *RUN_SUBFOLDERS)
            if _holds(folder / name)]


def _stopped_run(folder: Path, found: list[str]) -> UserError:
    """The error for a run stopped before its first checkpoint: there is nothing to resume, only to start again."""
    return UserError(f"{folder}: already holds a run that saved no checkpoint ({', '.join(found)}; it was "
                     "stopped before its first one), so there is nothing to --resume; give --overwrite to start "
                     "it again, or a new --output_dir")


def _refuse_without_checkpoint(folder: Path, found: list[str]) -> None:
    """Refuse ``--resume`` of a folder without a last checkpoint: a run stopped before its first one (which
    only --overwrite starts again), or no run at all."""
    if (folder / "checkpoints" / "last.pt").is_file():
        return
    if found:
        raise _stopped_run(folder, found)
    raise UserError(f"{folder}: holds no run to --resume (no checkpoints/last.pt); leave out --resume to start "
                    "one there")


def _refuse_other_files(folder: Path) -> None:
    """Refuse a folder that holds no run but files of the names a run writes (another tool's): a run
    would write over them, and --overwrite removes a run's files only."""
    others = _run_files_in(folder)
    if others:
        raise UserError(f"{folder}: holds {', '.join(others)} but no GRLNet training run (no options.json "
                        "written by train.py); a run would write over files of these names, and --overwrite "
                        "replaces only a GRLNet run: give a new or empty --output_dir")


def refuse_earlier_run(folder: Path, *, resume: str | None, overwrite: bool, run_options: Collection[str]) -> bool:
    """Refuse a folder that cannot be written in, that another training holds locked, or that holds another
    run (its options.json holds ``run_options``), unless ``resume`` (--resume: 'last' or a checkpoint)
    continues that run or ``overwrite`` replaces it, or another tool's files of a run's names; returns whether
    there is a run to replace. It writes nothing but a probe file it removes, so a run calls it before
    decoding its data too, to refuse early."""
    check_writable(folder, "run folder")
    _refuse_locked(folder)
    found = run_markers_in(folder, run_options)
    if resume and resumes_its_own_run(resume, folder):
        if resume == "last":
            _refuse_without_checkpoint(folder, found)
        return False
    if not found:
        _refuse_other_files(folder)
        return False
    if resume:
        raise UserError(f"{folder}: already holds a run ({', '.join(found)}), and --resume {resume} continues "
                        "a run saved in another folder, which would write over it; give that run's folder as "
                        "--output_dir, or a new one")
    if not overwrite:
        if not (folder / "checkpoints" / "last.pt").is_file():
            raise _stopped_run(folder, found)
        raise UserError(f"{folder}: already holds a run ({', '.join(found)}); give --resume to continue it or "
                        "--overwrite to replace it, or a new --output_dir")
    return True


def _run_file(path: Path) -> list[Path]:
    """``path``, a file a run writes, and its writers' leftover temporary files, as far as they exist; a
    folder in its place is refused (it is not the run's)."""
    if path.is_dir() and not path.is_symlink():
        raise UserError(f"{path}: a folder where a run writes a file; --overwrite removes only a run's files, "
                        "so move it away or give a new --output_dir")
    return [place for place in (path, *temporaries_of(path)) if place.is_symlink() or place.exists()]


def _run_subfolder(folder: Path) -> list[Path]:
    """What --overwrite removes of a run's subfolder: a link in its place (never followed), else the files
    a run writes in it."""
    if folder.is_symlink():
        return [folder]
    if not folder.exists():
        return []
    if not folder.is_dir():
        raise UserError(f"{folder}: a file where a run writes a folder; --overwrite removes only a run's files, "
                        "so move it away or give a new --output_dir")
    return [path for name in RUN_SUBFOLDERS[folder.name] for path in _run_file(folder / name)]


def _removal_plan(folder: Path) -> list[Path]:
    """Every file (or link) of a run in ``folder`` that --overwrite removes, found before any is removed,
    so that a problem stops it with nothing gone."""
    return [*(path for name in RUN_FILES for path in _run_file(folder / name)),
            *(path for name in RUN_SUBFOLDERS for path in _run_subfolder(folder / name))]


def check_earlier_run(folder: Path, *, resume: str | None, overwrite: bool, run_options: Collection[str]) -> None:
    """``refuse_earlier_run``, then remove what a run to be replaced (``overwrite``) wrote, so the new
    run's files (train.log too) start afresh; a subfolder left empty goes too, one holding other files stays."""
    if not refuse_earlier_run(folder, resume=resume, overwrite=overwrite, run_options=run_options):
        return
    for path in _removal_plan(folder):
        path.unlink()
    for name in RUN_SUBFOLDERS:
        if (folder / name).is_dir() and not (folder / name).is_symlink() and not any((folder / name).iterdir()):
            (folder / name).rmdir()


def claim_run_folder(output_dir: str | Path, *, resume: str | None, overwrite: bool, run_options: Collection[str],
                     is_main: bool = True) -> TextIO | None:
    """Create and lock the run folder ``output_dir`` before anything in it is read, and refuse or clear an
    earlier run there (``check_earlier_run``); returns the lock. Under torchrun only the main process locks."""
    if not is_main:
        return None
    folder = make_folder(output_dir, "run folder")
    lock = lock_run_folder(folder)
    check_earlier_run(folder, resume=resume, overwrite=overwrite, run_options=run_options)
    return lock


def setup_run_folder(output_dir: str | Path, options: dict, is_main: bool = True) -> Path:
    """Log to console and ``train.log`` in the run folder ``output_dir``, and store the run's ``options`` there.

    Only the main process writes; the others log warnings to the console alone.
    """
    folder = Path(output_dir)
    if not is_main:
        configure_logging(level=logging.WARNING)
        return folder
    write_json(folder / OPTIONS_FILE, options, "options file")  # first: it tells the folder holds a run
    make_folder(folder / "checkpoints", "checkpoint folder")
    configure_logging(folder / "train.log")
    return folder
