"""What every script shares at its edges: logging to the console and a run's log file, progress bars,
and running a script's body so that mistakes a user can fix print one line instead of a traceback."""
from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import torch

from data.console import DivergedError, UserError, printable

log = logging.getLogger("grlnet")
Options = TypeVar("Options")  # a script's parsed options, which only the script reads


def close_logging() -> None:
    """Close and drop the log's handlers, so a finished run leaves no file open."""
    for handler in log.handlers:
        handler.close()
    log.handlers.clear()


class PrintableFormatter(logging.Formatter):
    """Log lines as UTF-8 can hold them (errors.printable): a file name of other bytes must not stop a run."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


def configure_logging(log_file: Path | None = None, level: int = logging.INFO) -> None:
    """Log plain lines to stdout and, with ``log_file``, time-stamped lines to that file."""
    log.setLevel(level)
    close_logging()
    log.propagate = False
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(PrintableFormatter("%(message)s"))
    log.addHandler(console)
    if log_file is not None:
        to_file = logging.FileHandler(log_file, mode="a")
        to_file.setFormatter(PrintableFormatter("%(asctime)s %(message)s"))
        log.addHandler(to_file)


def log_to_files(line: str) -> None:
    """Write ``line`` to the run's log file alone (the console gets it printed once, without a time)."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, line, None, None)
    for handler in log.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


USER_ERRORS = (UserError, MemoryError, torch.OutOfMemoryError)  # what a user can fix: one line, no traceback


def user_message(err: BaseException, opt: object | None) -> str:
    """The line that reports one of ``USER_ERRORS``."""
    return f"error: {err if isinstance(err, UserError) else out_of_memory_message(err, opt)}"


@contextlib.contextmanager
def closing_log(opt: object) -> Iterator[None]:
    """A script body's log, closed when the body ends, whatever ends it; an error a user can fix is
    written into the run's log file first, so the file ends with the line the console shows."""
    try:
        yield
    except USER_ERRORS as err:
        log_to_files(user_message(err, opt))
        raise
    finally:
        close_logging()


def run_cli(main_function: Callable[[Options], object], parse: Callable[[], Options],
            interrupted: str = "interrupted") -> None:
    """Parse a script's options and run its body; user errors, in the options too, and running out of
    memory print one line and exit non-zero (traceback with --debug)."""
    opt = None
    try:
        opt = parse()
        main_function(opt)
    except USER_ERRORS as err:
        if getattr(opt, "debug", False):
            raise
        close_logging()
        print(printable(user_message(err, opt)), flush=True)
        raise SystemExit(3 if isinstance(err, DivergedError) else 2) from None
    except KeyboardInterrupt:  # train() saves and exits on its own; elsewhere there is nothing to keep
        close_logging()
        print(interrupted, flush=True)
        raise SystemExit(130) from None


def out_of_memory_message(err: BaseException, opt: object | None) -> str:
    """Say which memory ran out and which options size what was being allocated."""
    where = "GPU memory" if isinstance(err, torch.OutOfMemoryError) else "memory"
    sizes = [f"{name} {getattr(opt, name[2:])}" for name in ("--mess_length", "--segment_length", "--batch_size")
             if getattr(opt, name[2:], None) is not None]
    cause = str(err).splitlines()[0] if str(err) else type(err).__name__
    return f"out of {where} ({cause}); lower the sizes of signals or batches" + (
        f" (now {', '.join(sizes)})" if sizes else "")
