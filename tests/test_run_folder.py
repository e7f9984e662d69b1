"""A run folder belongs to one run: one that holds a run is refused unless --resume continues it or
--overwrite replaces it, and a training in progress locks it against a second one."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO, TINY, run_script

import main
from data.console import UserError
from grlnet import run_folder
from opts import option_defaults, parse_opts


@pytest.mark.parametrize("marker", ["checkpoints/last.pt", "metrics.csv", "train.log"])
def test_a_folder_holding_a_run_is_refused_without_resume_or_overwrite(tmp_path, marker, monkeypatch):
    (tmp_path / "options.json").write_text(json.dumps(option_defaults()))  # train.py's: the folder holds a run
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_text("an earlier run's")
    (tmp_path / marker).write_text("an earlier run's")
    found = ", ".join(dict.fromkeys(["options.json", "checkpoints/last.pt", marker]))
    message = (f"{tmp_path}: already holds a run ({found}); give --resume to continue it or --overwrite to "
               "replace it, or a new --output_dir")

    def decoding(opt):
        raise AssertionError("the data were decoded before the folder was refused")

    monkeypatch.setattr(main, "load_run_data", decoding)
    with pytest.raises(UserError, match=f"^{re.escape(message)}$"):
        main.train(parse_opts([*TINY, "--output_dir", str(tmp_path)]))
    assert (tmp_path / marker).read_text() == "an earlier run's"


def test_resume_continues_into_a_new_folder_but_never_over_another_run(tmp_path):
    """A checkpoint may continue in an empty folder; a folder holding another run is left as it was."""
    first, second, copy = tmp_path / "first", tmp_path / "second", tmp_path / "copy"
    for folder in (first, second):
        main.train(parse_opts([*TINY, "--output_dir", str(folder)]))
    checkpoint = first / "checkpoints" / "last.pt"
    kept = {path: path.read_bytes() for path in second.rglob("*") if path.is_file()}
    message = (f"{second}: already holds a run (options.json, checkpoints/last.pt, metrics.csv, train.log), and "
               f"--resume {checkpoint} continues a run saved in another folder, which would write over it; give "
               "that run's folder as --output_dir, or a new one")
    with pytest.raises(UserError, match=f"^{re.escape(message)}$"):
        main.train(parse_opts([*TINY, "--epochs", "3", "--resume", str(checkpoint), "--output_dir", str(second)]))
    assert {path: path.read_bytes() for path in second.rglob("*") if path.is_file()} == kept
    main.train(parse_opts([*TINY, "--epochs", "3", "--resume", str(checkpoint), "--output_dir", str(copy)]))
    assert len((copy / "metrics.csv").read_text().splitlines()) == 1 + 3


def test_overwrite_replaces_the_run_and_starts_a_fresh_log(tmp_path):
    main.train(parse_opts([*TINY, "--save_best", "--output_dir", str(tmp_path)]))
    (tmp_path / "notes.txt").write_text("mine")
    assert (tmp_path / "checkpoints" / "best.pt").is_file()
    main.train(parse_opts([*TINY, "--seed", "1", "--overwrite", "--output_dir", str(tmp_path)]))
    log = (tmp_path / "train.log").read_text()
    assert log.count("run folder: ") == 1 and "seed 1," in log and "seed 0," not in log
    assert not (tmp_path / "checkpoints" / "best.pt").exists()  # the earlier run's, gone with it
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.pt"]
    assert (tmp_path / "notes.txt").read_text() == "mine"  # not the run's: left alone
    with pytest.raises(UserError, match="^--overwrite replaces the run in --output_dir and --resume continues it"):
        parse_opts([*TINY, "--overwrite", "--resume", "--output_dir", str(tmp_path)])


def _wait_for_lock(folder, process: subprocess.Popen) -> None:
    """Wait until ``process`` has locked ``folder`` and written its id into the lock file."""
    deadline = time.monotonic() + 120
    lock = folder / run_folder.LOCK_FILE
    while not (lock.is_file() and lock.read_text().strip() == str(process.pid)):
        assert process.poll() is None and time.monotonic() < deadline, "the training never locked its folder"
        time.sleep(0.05)


def test_a_second_training_in_a_locked_folder_is_refused_naming_the_holder(tmp_path):
    """A training stopped (SIGSTOP) holds its folder; killed with SIGKILL, it leaves no stale lock."""
    first = subprocess.Popen([sys.executable, "train.py", *TINY, "--epochs", "50", "--output_dir", str(tmp_path)],
                             cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_lock(tmp_path, first)
        first.send_signal(signal.SIGSTOP)
        for start in ("--overwrite", "--resume"):
            second = run_script("train.py", *TINY, start, "--output_dir", str(tmp_path), check=False)
            assert second.returncode == 2
            assert second.stdout == (f"error: {tmp_path}: another training (process {first.pid}) is running in this "
                                     "run folder; wait for it to end, or give another --output_dir\n")
    finally:
        first.kill()
        first.wait(timeout=60)
    run_script("train.py", *TINY, "--overwrite", "--output_dir", str(tmp_path))
    assert (tmp_path / run_folder.LOCK_FILE).read_text().strip() != str(first.pid)


def test_the_lock_is_held_by_the_test_process_itself(tmp_path):
    lock = run_folder.lock_run_folder(tmp_path)
    try:
        with pytest.raises(UserError, match=f"another training \\(process {os.getpid()}\\) is running"):
            main.train(parse_opts([*TINY, "--output_dir", str(tmp_path)]))
    finally:
        lock.close()
    main.train(parse_opts([*TINY, "--output_dir", str(tmp_path)]))
    assert (tmp_path / "checkpoints" / "last.pt").is_file()
