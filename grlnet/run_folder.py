"""A training run's folder: created, locked against a second training, refused when it holds another
run (unless resumed or overwritten), with the run's options and log written there."""
from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import shutil
from datetime import datetime
from pathlib import Path
from typing import TextIO

from grlnet.cli import configure_logging
from grlnet.errors import UserError, make_folder
from grlnet.results import GROUP_TABLES

LOCK_FILE = ".lock"  # in the run folder, locked by the training that runs there, holding its process id
# Files that show a folder holds a run, and everything a run writes there (removed by --overwrite).
RUN_MARKERS = ("options.json", "checkpoints/last.pt", "metrics.csv", "train.log")
RUN_OUTPUTS = ("options.json", "train.log", "metrics.csv", "scores.csv", "threshold_scores.csv",
               *GROUP_TABLES.values(), "checkpoints", "figures")


def default_run_folder() -> str:
    """``runs/<date>-<time>``."""
    return str(Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S"))


def lock_run_folder(folder: Path) -> TextIO:
    """Hold an OS lock on ``folder``'s lock file, with this process's id written in it, so that a second
    training in the same folder is refused; the OS releases it when the process ends, even when killed."""
    handle = (folder / LOCK_FILE).open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise UserError(f"{folder}: another training (process {holder}) is running in this run folder; wait "
                        "for it to end, or give another --output_dir") from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def resumes_its_own_run(opt: argparse.Namespace, folder: Path) -> bool:
    """Whether ``--resume`` continues the run in ``folder``: the folder's last checkpoint, or a file in it."""
    return opt.resume == "last" or folder.resolve() in Path(opt.resume).resolve().parents


def run_markers_in(folder: Path) -> list[str]:
    """The files in ``folder`` that show it holds a training run (``RUN_MARKERS``); none for any other folder."""
    return [name for name in RUN_MARKERS if (folder / name).exists()]


def refuse_earlier_run(opt: argparse.Namespace, folder: Path) -> bool:
    """Refuse a folder that holds another run, unless ``--resume`` continues that run or ``--overwrite``
    replaces it; returns whether there is a run to replace. It only reads, so a run calls it before
    decoding its data too, to refuse early."""
    found = run_markers_in(folder)
    if not found or (opt.resume and resumes_its_own_run(opt, folder)):
        return False
    if opt.resume:
        raise UserError(f"{folder}: already holds a run ({', '.join(found)}), and --resume {opt.resume} continues "
                        "a run saved in another folder, which would write over it; give that run's folder as "
                        "--output_dir, or a new one")
    if not opt.overwrite:
        raise UserError(f"{folder}: already holds a run ({', '.join(found)}); give --resume to continue it or "
                        "--overwrite to replace it, or a new --output_dir")
    return True


def check_earlier_run(opt: argparse.Namespace, folder: Path) -> None:
    """``refuse_earlier_run``, then remove what a run to be replaced (``--overwrite``) wrote, so the new
    run's files (train.log too) start afresh."""
    if not refuse_earlier_run(opt, folder):
        return
    for name in RUN_OUTPUTS:
        path = folder / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def claim_run_folder(opt: argparse.Namespace, is_main: bool = True) -> TextIO | None:
    """Create and lock the run folder before anything in it is read, and refuse or clear an earlier run
    there (``check_earlier_run``); returns the lock. Under torchrun only the main process locks."""
    if not is_main:
        return None
    folder = make_folder(opt.output_dir, "run folder")
    lock = lock_run_folder(folder)
    check_earlier_run(opt, folder)
    return lock


def setup_run_folder(opt: argparse.Namespace, is_main: bool = True) -> Path:
    """Log to console and ``train.log`` in the run folder, and store the options there.

    Only the main process writes; the others log warnings to the console alone.
    """
    folder = Path(opt.output_dir)
    if not is_main:
        configure_logging(level=logging.WARNING)
        return folder
    make_folder(folder / "checkpoints", "checkpoint folder")
    configure_logging(folder / "train.log")
    (folder / "options.json").write_text(json.dumps(vars(opt), indent=2) + "\n")
    return folder
