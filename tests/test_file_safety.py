"""What the program writes and removes: every file written whole or not at all (a failing or interrupted
write keeps the previous file), outputs compared with inputs and runs by identity, test.py's own files
told from a user's, unique default folders, --overwrite limited to a run's own files, read-only folders
refused early, and a run stopped before its first checkpoint explained."""
from __future__ import annotations

import csv
import errno
import os
import re
import resource
import shutil
import signal
import subprocess
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, run_script, write_clips

import main
from data import ClipSet
from data.console import UserError
from data.files import atomic_write, write_json
from grlnet import evaluate, plots, results
from grlnet.checkpoint import load_file, save_checkpoint
from grlnet.cli import close_logging
from grlnet.run_folder import lock_run_folder, setup_run_folder
from opts import parse_opts, parse_test_args

LIMIT = 4096  # bytes a file may grow to while ``files_limited``: every larger write fails as on a full disk


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny training run's folder (options.json, train.log, metrics.csv, scores.csv, checkpoints/, figures/)."""
    folder = tmp_path_factory.mktemp("run")
    main.train(parse_opts([*TINY, "--output_dir", str(folder)]))
    return folder


def temporaries(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.tmp"))


def contents(folder: Path) -> dict[Path, bytes]:
    """Every file under ``folder`` and its bytes, but the lock a run takes."""
    return {path: path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file() and path.name != ".lock"}


@contextmanager
def files_limited(size: int = LIMIT):
    """Writes that make a file larger than ``size`` fail (EFBIG, RLIMIT_FSIZE) for every writer: csv,
    json, numpy, PIL, torch alike, as they do on a full disk."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def many_clips(count: int = 400) -> tuple[ClipSet, dict[str, np.ndarray]]:
    clips = ClipSet([f"clip_{i:05d}.wav" for i in range(count)], np.zeros((count, 8), np.float32),
                    np.arange(count) % 2)
    return clips, {"score": np.linspace(0.0, 1.0, count)}


# ---------------------------------------------------------------- 1, 7: written whole or not at all

def _write_scores(path: Path) -> None:
    results.write_scores_csv(*many_clips(), path, "paper")


def _write_metrics(path: Path) -> None:
    results.write_metrics_csv([{"epoch": e, "auc": 0.5, "notes": "x" * 40} for e in range(200)], path)


def _write_json(path: Path) -> None:
    write_json(path, {f"key_{i}": i for i in range(1000)})


def _write_checkpoint(path: Path) -> None:
    save_checkpoint({"weights": torch.arange(5000, dtype=torch.float32)}, path)


def _write_figure(path: Path) -> None:
    plots.plot_roc(path.with_name("input.csv"), path)


WRITERS = {"scores.csv": (_write_scores, "score file"), "metrics.csv": (_write_metrics, "file"),
           "metrics.json": (_write_json, "file"), "last.pt": (_write_checkpoint, "checkpoint"),
           "roc.png": (_write_figure, "figure")}


@pytest.mark.parametrize("name", WRITERS)
def test_a_write_that_fails_keeps_the_previous_file_and_says_why(tmp_path, name):
    write, what = WRITERS[name]
    path = tmp_path / name
    path.write_bytes(b"the previous file\n" * 10)
    _write_scores(tmp_path / "input.csv")  # what the figure draws
    message = f"^{re.escape(str(path))}: cannot save the {what} \\(File too large\\); the previous {what} there is kept"
    with files_limited(), pytest.raises(UserError, match=message):
        write(path)
    assert path.read_bytes() == b"the previous file\n" * 10
    assert not temporaries(tmp_path)
    write(path)  # the disk has room again: written whole
    assert path.stat().st_size > LIMIT and not temporaries(tmp_path)


def test_torch_reporting_a_full_disk_as_a_runtime_error_is_one_line_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1}, path)

    def full_disk(obj, handle):
        handle.write(b"half a checkpoint")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(UserError, match=f"^{re.escape(str(path))}: cannot save the checkpoint \\(.*unexpected pos "
                                        r"704 vs 598\); the previous checkpoint there is kept$"):
        save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert load_file(path) == {"epoch": 1} and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_a_write_interrupted_midway_leaves_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "scores.csv"
    _write_scores(path)
    before = path.read_bytes()
    real_writer = csv.writer

    class Interrupted:
        def __init__(self, handle):
            self.writer, self.rows = real_writer(handle), 0

        def writerow(self, row):
            self.rows += 1
            if self.rows == 100:
                raise KeyboardInterrupt
            return self.writer.writerow(row)

    monkeypatch.setattr(csv, "writer", Interrupted)
    with pytest.raises(KeyboardInterrupt):
        _write_scores(path)
    assert path.read_bytes() == before and not temporaries(tmp_path)


def test_test_py_on_a_full_disk_keeps_its_previous_output(run, tmp_path, monkeypatch):
    """The issue's case: a full disk while test.py --output prev.csv writes."""
    clips = write_clips(tmp_path / "clips", 16000)
    output = tmp_path / "prev.csv"
    args = ["--checkpoint", str(run / "checkpoints" / "last.pt"), "--input", str(clips), "--output", str(output),
            "--output_dir", str(tmp_path / "out"), "--quiet"]
    main.test(parse_test_args(args))
    before = output.read_bytes()
    real_writer = csv.writer

    class FullDisk:
        def __init__(self, handle):
            self.writer, self.handle = real_writer(handle), handle

        def writerow(self, row):
            if row[0] != "file":
                self.handle.write("half a ro")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.writer.writerow(row)

    monkeypatch.setattr(csv, "writer", FullDisk)
    with pytest.raises(UserError, match=f"^{re.escape(str(output))}: cannot save the score file \\(No space left on "
                                        r"device\); the previous score file there is kept$"):
        main.test(parse_test_args(args))
    assert output.read_bytes() == before and not temporaries(tmp_path)


def _mount_tmpfs(folder: Path, options: str) -> None:
    folder.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], check=True,
                       capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        pytest.skip("cannot mount a tmpfs here")


def test_a_full_disk_while_saving_a_checkpoint_is_one_line_and_leaves_no_temporary(tmp_path):
    """A real full disk (a 1 MB tmpfs, where one can be mounted): torch's RuntimeError is explained."""
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "size=1m")
    try:
        result = run_script("train.py", *TINY, "--output_dir", str(disk / "run"), check=False)
        checkpoint = disk / "run" / "checkpoints" / "last.pt"
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stdout.splitlines()[-1] == (f"error: {checkpoint}: cannot save the checkpoint (No space left "
                                                  "on device); no checkpoint is saved")
        assert "Traceback" not in result.stderr and not temporaries(disk)
    finally:
        subprocess.run(["umount", str(disk)], check=False, timeout=30)


# ---------------------------------------------------------------- 2: outputs compared by identity

def _score_to(run: Path, clips: Path, output: Path, *args: str) -> None:
    main.test(parse_test_args(["--checkpoint", str(run / "checkpoints" / "last.pt"), "--input", str(clips),
                               "--output", str(output), "--output_dir", str(clips.parent / "out"), "--quiet",
                               *args]))


def test_a_link_to_a_runs_scores_is_refused_as_output(run, tmp_path):
    clips = write_clips(tmp_path / "clips", 16000)
    link = tmp_path / "link.csv"
    link.symlink_to(run / "scores.csv")
    before = (run / "scores.csv").read_bytes()
    for args in ((), ("--overwrite",)):
        with pytest.raises(UserError, match=f"^{re.escape(str(link))}: --output lies in the training run's folder "
                                            f"{re.escape(str(run))} "):
            _score_to(run, clips, link, *args)
    assert (run / "scores.csv").read_bytes() == before


def test_a_hard_link_to_an_input_is_refused_as_output_even_with_overwrite(run, tmp_path):
    clips = write_clips(tmp_path / "clips", 16000)
    recording = clips / "normal_id_00_00000000.wav"
    hard_link = tmp_path / "another_name.wav"
    os.link(recording, hard_link)
    before = recording.read_bytes()
    with pytest.raises(UserError, match=f"^{re.escape(str(hard_link))}: --output is one of the files being read"):
        _score_to(run, recording, hard_link, "--overwrite")
    assert recording.read_bytes() == before


def test_another_runs_checkpoint_is_refused_as_output(run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(run, other, ignore=shutil.ignore_patterns(".lock"))
    clips = write_clips(tmp_path / "clips", 16000)
    before = (other / "checkpoints" / "last.pt").read_bytes()
    target = other / "checkpoints" / "last.pt"
    with pytest.raises(UserError, match=f"^{re.escape(str(target))}: --output lies in the training run's folder "
                                        f"{re.escape(str(other))} "):
        _score_to(run, clips, target, "--overwrite")
    assert target.read_bytes() == before


def test_a_folder_inside_a_run_is_refused_as_test_output_folder(run, tmp_path):
    link = tmp_path / "figures_link"
    link.symlink_to(run / "figures")
    before = contents(run / "figures")
    for folder in (run / "figures", link):
        with pytest.raises(UserError, match=f"^{re.escape(str(folder))}: --output_dir lies in the training run's "
                                            f"folder {re.escape(str(run))} "):
            main.test(parse_test_args(["--checkpoint", str(run / "checkpoints" / "last.pt"), "--output_dir",
                                       str(folder), "--overwrite", "--quiet"]))
    assert contents(run / "figures") == before


# ---------------------------------------------------------------- 3: test.py's own score files

def test_a_label_file_is_not_taken_for_a_score_file(run, tmp_path):
    clips = write_clips(tmp_path / "clips", 16000)
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\nnormal_id_00_00000000.wav,0\n")
    with pytest.raises(UserError, match=f"^{re.escape(str(labels))}: --output exists and is not a score file "
                                        "written by test.py"):
        _score_to(run, clips, labels)
    assert labels.read_text() == "file,label\nnormal_id_00_00000000.wav,0\n"
    _score_to(run, clips, labels, "--overwrite")
    assert results.is_score_file(labels)


@pytest.mark.parametrize("header, own", [
    ("file,label", False), ("file,label,score", False), ("file,label,machine,section", False),
    ("file,label,d_real,d_regional,d_local,paper,score,score_name", True),
    ("file,label,d_real,d_regional,d_local,paper,encoder_knn,score,score_name,decision", True),
    ("file,label,d_real,d_regional,d_local,paper,score", False),
    ("file,label,d_real,d_regional,d_local,paper,notes,score,score_name", False)])
def test_score_files_are_told_by_the_columns_test_py_writes(tmp_path, header, own):
    path = tmp_path / "file.csv"
    path.write_text(header + "\n")
    assert results.is_score_file(path) is own


# ---------------------------------------------------------------- 4: test.py's default folder

class _SameSecond(datetime):
    @classmethod
    def now(cls, tz=None):
        return datetime(2024, 1, 2, 3, 4, 5)


def test_two_test_runs_in_the_same_second_get_their_own_folders(run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(evaluate, "datetime", _SameSecond)
    for _ in range(2):
        main.test(parse_test_args(["--checkpoint", str(run / "checkpoints" / "last.pt"), "--quiet"]))
    folders = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert folders == ["test-20240102-030405", "test-20240102-030405-2"]
    for name in folders:
        assert (tmp_path / "runs" / name / "test.log").read_text().count("test clips scored") == 1
        assert (tmp_path / "runs" / name / "scores.csv").is_file()


def test_test_py_locks_its_output_folder(run, tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    lock = lock_run_folder(folder)
    try:
        with pytest.raises(UserError, match=f"^{re.escape(str(folder))}: another test.py run or training \\(process "
                                            f"{os.getpid()}\\) is running in this run folder"):
            main.test(parse_test_args(["--checkpoint", str(run / "checkpoints" / "last.pt"), "--output_dir",
                                       str(folder), "--quiet"]))
    finally:
        lock.close()


# ---------------------------------------------------------------- 5: --overwrite removes a run's own files only

def _foreign_folder(folder: Path) -> dict[Path, bytes]:
    """Another tool's folder, with the generic names a run writes too."""
    for name in ("train.log", "metrics.csv", "checkpoints/model.bin", "figures/plot.png", "options.json"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(f"another tool's {name}\n")
    return contents(folder)


@pytest.mark.parametrize("start", [(), ("--overwrite",)])
def test_another_tools_folder_is_never_taken_for_a_run(tmp_path, monkeypatch, start):
    before = _foreign_folder(tmp_path)

    def decoding(opt):
        raise AssertionError("the data were decoded before the folder was refused")

    monkeypatch.setattr(main, "load_run_data", decoding)
    with pytest.raises(UserError, match=f"^{re.escape(str(tmp_path))}: holds options.json, train.log, metrics.csv, "
                                        r"checkpoints/, figures/ but no GRLNet training run"):
        main.train(parse_opts([*TINY, *start, "--output_dir", str(tmp_path)]))
    assert contents(tmp_path) == before


def test_overwrite_removes_only_the_runs_files_and_never_follows_links(run, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(run, folder, ignore=shutil.ignore_patterns(".lock"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "roc.png").write_text("not the run's")
    shutil.rmtree(folder / "figures")
    (folder / "figures").symlink_to(elsewhere)  # a linked figures/: the link goes, never what it points to
    (folder / "checkpoints" / "notes.txt").write_text("mine")
    main.train(parse_opts([*TINY, "--seed", "1", "--overwrite", "--output_dir", str(folder)]))
    assert (elsewhere / "roc.png").read_text() == "not the run's"
    assert (folder / "checkpoints" / "notes.txt").read_text() == "mine"
    assert (folder / "figures").is_dir() and not (folder / "figures").is_symlink()
    assert (folder / "figures" / "roc.png").read_bytes().startswith(b"\x89PNG")
    assert "seed 1," in (folder / "train.log").read_text()


def test_overwrite_finds_a_problem_before_removing_anything(run, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(run, folder, ignore=shutil.ignore_patterns(".lock"))
    (folder / "scores.csv").unlink()
    (folder / "scores.csv").mkdir()  # a folder where a run writes a file: not the run's
    (folder / "scores.csv" / "mine.txt").write_text("mine")
    before = contents(folder)
    with pytest.raises(UserError, match=f"^{re.escape(str(folder / 'scores.csv'))}: a folder where a run writes a "
                                        "file; --overwrite removes only a run's files"):
        main.train(parse_opts([*TINY, "--overwrite", "--output_dir", str(folder)]))
    assert contents(folder) == before


# ---------------------------------------------------------------- 9: read-only folders

@pytest.fixture
def read_only_folder(tmp_path, monkeypatch) -> Path:
    """An existing folder nothing can be written in: a read-only tmpfs as root (where it can be mounted),
    else permissions; where neither works, the system call that creates files there is refused."""
    folder = tmp_path / "read_only"
    if os.geteuid() != 0:
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
                             capture_output=True, timeout=30, check=False).returncode == 0
    if not mounted:
        real_open = os.open

        def read_only(path, flags, *args, **kwargs):
            if Path(path).parent == folder and flags & os.O_CREAT:
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", read_only)
    try:
        yield folder
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=False, timeout=30)


def test_train_py_refuses_a_read_only_folder_before_decoding(read_only_folder, monkeypatch):
    def decoding(opt):
        raise AssertionError("the data were decoded before the folder was refused")

    monkeypatch.setattr(main, "load_run_data", decoding)
    with pytest.raises(UserError, match=f"^{re.escape(str(read_only_folder))}: cannot write in the run folder "
                                        r"\((Read-only file system|Permission denied)\)$"):
        main.train(parse_opts([*TINY, "--output_dir", str(read_only_folder)]))


def test_test_py_refuses_a_read_only_folder_before_decoding(run, read_only_folder, monkeypatch):
    def decoding(*args, **kwargs):
        raise AssertionError("the data were decoded before the folder was refused")

    monkeypatch.setattr(evaluate, "load_datasets", decoding)
    with pytest.raises(UserError, match=f"^{re.escape(str(read_only_folder))}: cannot write in the output folder "
                                        r"\((Read-only file system|Permission denied)\)$"):
        main.test(parse_test_args(["--checkpoint", str(run / "checkpoints" / "last.pt"), "--output_dir",
                                   str(read_only_folder), "--quiet"]))


# ---------------------------------------------------------------- 11: a run stopped before its first checkpoint

def test_a_run_stopped_before_its_first_checkpoint_says_to_overwrite(tmp_path):
    """What a run killed before its first checkpoint leaves: options.json, an empty checkpoints/, train.log."""
    opt = parse_opts([*TINY, "--output_dir", str(tmp_path)])
    setup_run_folder(opt.output_dir, vars(opt))
    close_logging()
    message = (f"{tmp_path}: already holds a run that saved no checkpoint (options.json, train.log; it was stopped "
               "before its first one), so there is nothing to --resume; give --overwrite to start it again, or a new "
               "--output_dir")
    for start in ((), ("--resume",)):
        with pytest.raises(UserError, match=f"^{re.escape(message)}$"):
            main.train(parse_opts([*TINY, *start, "--output_dir", str(tmp_path)]))
    main.train(parse_opts([*TINY, "--overwrite", "--output_dir", str(tmp_path)]))
    assert (tmp_path / "checkpoints" / "last.pt").is_file()


def test_resume_in_a_folder_without_a_run_says_so(tmp_path):
    with pytest.raises(UserError, match=f"^{re.escape(str(tmp_path))}: holds no run to --resume \\(no "
                                        r"checkpoints/last.pt\); leave out --resume to start one there$"):
        main.train(parse_opts([*TINY, "--resume", "--output_dir", str(tmp_path)]))


def test_an_atomic_write_goes_through_a_link_to_its_target(tmp_path):
    target = tmp_path / "real.txt"
    target.write_text("old")
    target.chmod(0o640)
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    with atomic_write(link) as handle:
        handle.write("new")
    assert link.is_symlink() and target.read_text() == "new" and (target.stat().st_mode & 0o777) == 0o640
