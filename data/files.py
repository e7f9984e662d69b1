"""Every file the program writes, written whole or not at all: into a temporary file in the target's folder,
flushed to disk (fsync), then renamed over the target (``os.replace``). A write that fails (a full disk, a
read-only folder) removes the temporary file, keeps the previous file and says why, naming the file; an
interrupted one leaves the previous file too, and two writers of one file never interleave.

The logs (train.log, test.log) are the exception: they are streamed, appended line by line as a run goes
(grlnet.cli.configure_logging), and a run folder's ``.lock`` is locked in place (grlnet.run_folder).
"""
from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from data.console import UserError

TEMPORARY_SUFFIX = ".tmp"


def temporary_path(path: Path) -> Path:
    """A new name for ``path``'s temporary file, in its folder: ``.<name>.<random>.tmp``."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMPORARY_SUFFIX}")


def temporaries_of(path: Path) -> list[Path]:
    """Temporary files of ``path`` left by a writer that was killed (SIGKILL) before it could remove them."""
    return sorted(path.parent.glob(f".{path.name}.*{TEMPORARY_SUFFIX}"))


class _RecordingFile:
    """A file object that keeps the error of a failed write: torch.save reports a full disk as its own
    RuntimeError ("unexpected pos"), which would otherwise hide the reason."""

    def __init__(self, handle: IO) -> None:
        self._handle = handle
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._handle.write(data)
        except OSError as err:
            self.error = err
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


def _reason(err: BaseException, recorded: OSError | None, folder: Path) -> str:
    """A failed write's reason in words: the operating system's, else a full disk where the folder's is."""
    cause = recorded or err
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    try:
        if shutil.disk_usage(folder).free == 0:
            return os.strerror(errno.ENOSPC)
    except OSError:
        pass
    return str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__


def _failure(path: Path, what: str, reason: str) -> UserError:
    """The one-line error of a write that failed, saying whether an earlier file is kept."""
    kept = f"the previous {what} there is kept" if path.is_file() else f"no {what} is saved"
    return UserError(f"{path}: cannot save the {what} ({reason}); {kept}")


def _open_temporary(temporary: Path, mode: str) -> IO:
    """The temporary file, created anew (never an existing file, nor through a link), read-write for whom
    the umask allows, as an ordinary ``open`` would make it."""
    if "b" in mode:
        return temporary.open(mode.replace("w", "x"))
    return temporary.open(mode.replace("w", "x"), encoding="utf-8", newline="")


def _keep_mode(target: Path, temporary: Path) -> None:
    """Give the new file the permissions of the file it replaces."""
    if target.is_file():
        os.chmod(temporary, stat.S_IMODE(target.stat().st_mode))


def _sync_folder(folder: Path) -> None:
    """Flush the folder's entry of the renamed file to disk (where the system allows opening a folder)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


@contextmanager
def atomic_write(path: str | Path, mode: str = "w", what: str = "file",
                 failures: tuple[type[BaseException], ...] = (OSError,)) -> Iterator[IO]:
    """Open a temporary file beside ``path`` (``mode`` "w": text, UTF-8, no newline translation; "wb":
    bytes) and, when the block ends, fsync and rename it over ``path``, through a symbolic link to its
    target. Any error removes the temporary file and leaves ``path`` as it was; an ``OSError`` (or one of
    ``failures``, or any error after a write failed) becomes a ``UserError`` naming the file and the reason."""
    target = Path(os.path.realpath(path))
    temporary = temporary_path(target)
    recording: _RecordingFile | None = None
    try:
        with _open_temporary(temporary, mode) as handle:
            recording = _RecordingFile(handle)
            yield recording
            handle.flush()
            os.fsync(handle.fileno())
        _keep_mode(target, temporary)
        os.replace(temporary, target)
    except BaseException as err:
        if recording is not None:  # the temporary file was made
            temporary.unlink(missing_ok=True)
        recorded = recording.error if recording else None
        if isinstance(err, failures) or (recorded is not None and isinstance(err, Exception)):
            raise _failure(Path(path), what, _reason(err, recorded, target.parent)) from None
        raise
    _sync_folder(target.parent)


def write_text(path: str | Path, text: str, what: str = "file") -> None:
    """``text`` as the whole of ``path`` (UTF-8), written atomically."""
    with atomic_write(path, "w", what) as handle:
        handle.write(text)


def write_json(path: str | Path, value: Any, what: str = "file") -> None:
    """``value`` as indented JSON with a final newline, written atomically."""
    write_text(path, json.dumps(value, indent=2) + "\n", what)


def identity(path: str | Path) -> tuple[int, int] | None:
    """The file ``path`` is, through any link: its device and inode (hard links and bind mounts share
    them); None where nothing is there."""
    try:
        status = os.stat(path)
    except (OSError, ValueError):
        return None
    return status.st_dev, status.st_ino


def check_writable(folder: str | Path, what: str) -> None:
    """Refuse a folder that cannot be written in (read-only, no permission), or, where it does not exist yet,
    whose nearest existing parent cannot be: a tiny probe file is created there and removed, since the
    permission bits alone do not tell a read-only mount, or a folder root may write in."""
    folder = Path(folder)
    existing = next(place for place in (folder, *folder.parents) if place.exists())  # "." or "/" at last
    if not existing.is_dir():
        raise UserError(f"{folder}: cannot create the {what} there ({existing} is a file, not a folder)")
    probe = existing / f".grlnet-write-probe.{secrets.token_hex(4)}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
    except OSError as err:
        if existing == folder:
            raise UserError(f"{folder}: cannot write in the {what} ({err.strerror})") from None
        raise UserError(f"{folder}: cannot create the {what}, its parent {existing} cannot be written in "
                        f"({err.strerror})") from None
