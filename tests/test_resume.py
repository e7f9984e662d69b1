"""A killed or interrupted run resumes to exactly the metrics of an uninterrupted one, and only with
the settings it was saved with; divergence stops."""
import dataclasses
import errno
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO, TINY, run_script, tone, write_wav

import main
from data.console import DivergedError, UserError
from grlnet import steps
from grlnet.checkpoint import load_file, save_checkpoint
from grlnet.cli import run_cli
from grlnet.results import write_metrics_csv
from opts import REMOVED_OPTIONS, VALUES_BEFORE_ADDED, parse_opts

# 40 clips in windows of 256: 40 steps an epoch, long enough to be stopped in the middle of one.
RUN = [*TINY, "--synthetic_train_clips", "40", "--epochs", "3", "--seed", "3"]


def comparable(folder):
    """metrics.csv without its timing columns, and scores.csv."""
    lines = (folder / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    keep = [i for i, name in enumerate(header) if not name.endswith("seconds")]
    metrics = [[line.split(",")[i] for i in keep] for line in lines]
    return metrics, (folder / "scores.csv").read_text()


def start_and_stop(folder, how: int, run: list[str] = RUN) -> int:
    """Start a run, wait until its first checkpoint plus a little, send ``how``; return the exit code."""
    process = subprocess.Popen([sys.executable, "train.py", *run, "--output_dir", str(folder)], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = folder / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 240
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # into the second epoch
    process.send_signal(how)
    return process.wait(timeout=120)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("whole")
    run_script("train.py", *RUN, "--output_dir", str(folder))
    return comparable(folder)


def test_deterministic_run_equals_the_default_run_on_cpu(tmp_path, uninterrupted):
    """torch's deterministic mode (which also fills new tensors with NaN) runs the whole loop; on CPU
    it picks the same kernels, so the numbers are the default run's."""
    run_script("train.py", *RUN, "--deterministic", "--output_dir", str(tmp_path))
    assert json.loads((tmp_path / "options.json").read_text())["deterministic"] is True
    assert ", device cpu, deterministic kernels" in (tmp_path / "train.log").read_text()
    assert comparable(tmp_path) == uninterrupted
    # test.py takes the stored --deterministic and scores the checkpoint to the training run's scores
    run_script("test.py", "--checkpoint", str(tmp_path / "checkpoints" / "last.pt"),
               "--output_dir", str(tmp_path / "test"))
    assert (tmp_path / "test" / "scores.csv").read_text() == (tmp_path / "scores.csv").read_text()


def test_sigkill_then_resume_equals_uninterrupted(tmp_path, uninterrupted):
    assert start_and_stop(tmp_path, signal.SIGKILL) == -signal.SIGKILL
    assert load_file(tmp_path / "checkpoints" / "last.pt")["epoch"] >= 1
    run_script("train.py", *RUN, "--output_dir", str(tmp_path), "--resume")
    assert comparable(tmp_path) == uninterrupted


def test_ctrl_c_saves_mid_epoch_and_resumes_exactly(tmp_path, uninterrupted):
    assert start_and_stop(tmp_path, signal.SIGINT) == 130
    state = load_file(tmp_path / "checkpoints" / "last.pt")
    assert state["step"] > 0 or state["epoch"] > 1  # saved where it stopped, not at an epoch boundary
    run_script("train.py", *RUN, "--resume", str(tmp_path / "checkpoints" / "last.pt"))  # continues in its folder
    assert comparable(tmp_path) == uninterrupted


def test_drawn_windows_resume_exactly_after_ctrl_c(tmp_path):
    """Each epoch's drawn windows depend on the seed and the epoch alone, so an epoch stopped in its middle
    continues on the same windows in the same order."""
    drawn = [*RUN, "--train_windows_per_clip", "2", "--eval_windows_per_clip", "1"]  # 40 steps an epoch
    run_script("train.py", *drawn, "--output_dir", str(tmp_path / "whole"))
    assert start_and_stop(tmp_path / "part", signal.SIGINT, drawn) == 130
    state = load_file(tmp_path / "part" / "checkpoints" / "last.pt")
    assert state["step"] > 0 or state["epoch"] > 1
    run_script("train.py", *drawn, "--output_dir", str(tmp_path / "part"), "--resume")
    assert comparable(tmp_path / "part") == comparable(tmp_path / "whole")


def test_a_run_saved_before_an_option_existed_resumes_exactly(tmp_path, uninterrupted):
    """A checkpoint without an option added since (opts.VALUES_BEFORE_ADDED), and with the removed study
    options at the values that left them off (opts.REMOVED_OPTIONS), resumes at the options' earlier
    behaviour; one whose run used a removed study option, or without any other option, is refused."""
    assert start_and_stop(tmp_path, signal.SIGINT) == 130
    last = tmp_path / "checkpoints" / "last.pt"
    state = load_file(last)
    for name in VALUES_BEFORE_ADDED:
        del state["options"][name]
    state["options"].update(REMOVED_OPTIONS)
    save_checkpoint(state, last)
    run_script("train.py", *RUN, "--output_dir", str(tmp_path), "--resume")
    assert comparable(tmp_path) == uninterrupted

    save_checkpoint({**state, "options": {**state["options"], "label_smoothing": 0.1}}, last)
    message = ('last.pt: saved by a run with --label_smoothing 0.1, a study option this version does not have '
               '(docs/STUDIES.md, "Superseded studies"); resume it with commit aed8ce3, or start a new run')
    with pytest.raises(UserError, match=f"{re.escape(message)}$"):
        main.train(parse_opts([*RUN, "--output_dir", str(tmp_path), "--resume"]))

    del state["options"]["snr"]
    save_checkpoint(state, last)
    with pytest.raises(UserError, match=r"last.pt: incomplete GRLNet checkpoint: 'options' lacks snr$"):
        main.train(parse_opts([*RUN, "--output_dir", str(tmp_path), "--resume"]))


def _diverge_at(monkeypatch, call: int, loss: str, value: float) -> dict:
    """Make the standard step's ``call``-th call (from 1) report ``value`` as its ``loss``; returns
    the call counter, which a test may reset."""
    real_step = steps.STEPS["standard"]
    calls = {"n": 0}

    def failing_step(*args):
        calls["n"] += 1
        stats = real_step(*args)
        if calls["n"] == call:
            return dataclasses.replace(stats, **{loss: torch.tensor(value)})
        return stats

    monkeypatch.setitem(steps.STEPS, "standard", failing_step)
    return calls


def test_divergence_stops_with_epoch_step_and_loss(tmp_path, monkeypatch):
    calls = _diverge_at(monkeypatch, 8 + 3, "loss_g", float("nan"))  # epoch 1 (second epoch of 8 steps), step 2
    opt = parse_opts([*TINY, "--epochs", "3", "--output_dir", str(tmp_path)])
    kept = tmp_path / "checkpoints" / "last.pt"
    with pytest.raises(DivergedError, match=f"loss_g is nan at epoch 1, step 2; the last checkpoint, "
                                            f"{re.escape(str(kept))}, is kept: its weights and losses are finite, "
                                            "but --resume would repeat the same steps at the same learning rates"):
        main.train(opt)
    assert load_file(tmp_path / "checkpoints" / "last.pt")["epoch"] == 1
    calls["n"] = 0
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main.train, lambda: parse_opts([*TINY, "--epochs", "2", "--output_dir", str(tmp_path / "cli")]))
    assert exit_info.value.code == 3


def test_divergence_before_any_save_says_none_was_saved_and_is_logged(tmp_path, monkeypatch):
    """The error that ends a run is the last line of train.log too, not only of the console."""
    _diverge_at(monkeypatch, 3, "loss_d", float("inf"))
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main.train, lambda: parse_opts([*TINY, "--output_dir", str(tmp_path)]))
    assert exit_info.value.code == 3
    message = ("error: training diverged: loss_d is inf at epoch 0, step 2; no checkpoint was saved before it; start "
               "a new run with lower learning rates (now --r_g_net_learning_rate 0.001, --l_g_net_learning_rate 0.001, "
               "--d_net_learning_rate 0.0001; --overwrite replaces this run)")
    assert not (tmp_path / "checkpoints" / "last.pt").exists()
    assert (tmp_path / "train.log").read_text().splitlines()[-1].endswith(f" {message}")


def test_a_run_that_fails_closes_its_log_with_the_error_as_its_last_line(tmp_path, monkeypatch):
    """main.train called directly (not through run_cli) leaves no handler behind."""
    _diverge_at(monkeypatch, 3, "loss_d", float("inf"))
    with pytest.raises(DivergedError) as err:
        main.train(parse_opts([*TINY, "--output_dir", str(tmp_path)]))
    assert logging.getLogger("grlnet").handlers == []
    assert (tmp_path / "train.log").read_text().splitlines()[-1].endswith(f" error: {err.value}")


def test_a_full_disk_and_running_out_of_memory_are_logged_in_train_log(tmp_path, monkeypatch, capsys):
    def no_space(obj, handle):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", no_space)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main.train, lambda: parse_opts([*TINY, "--output_dir", str(tmp_path / "full")]))
    assert exit_info.value.code == 2
    message = (f"error: {tmp_path / 'full' / 'checkpoints' / 'last.pt'}: cannot save the checkpoint (No space left "
               "on device); no checkpoint is saved")
    assert capsys.readouterr().out.splitlines()[-1] == message
    assert (tmp_path / "full" / "train.log").read_text().splitlines()[-1].endswith(f" {message}")

    def out_of_memory(*args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setitem(steps.STEPS, "standard", out_of_memory)
    with pytest.raises(SystemExit):
        run_cli(main.train, lambda: parse_opts([*TINY, "--output_dir", str(tmp_path / "oom")]))
    last = (tmp_path / "oom" / "train.log").read_text().splitlines()[-1]
    assert last.endswith(" error: out of GPU memory (CUDA out of memory. Tried to allocate 2.00 GiB); lower the sizes "
                         "of signals or batches (now --mess_length 512, --segment_length 256, --batch_size 2)")


def test_no_checkpoint_holds_the_diverged_step(tmp_path, monkeypatch):
    """A save due at the diverged step itself is not made: last.pt stays at the step before."""
    _diverge_at(monkeypatch, 3, "loss_d", float("inf"))
    opt = parse_opts([*TINY, "--checkpoint_minutes", "1e-9", "--output_dir", str(tmp_path)])
    with pytest.raises(DivergedError, match="loss_d is inf at epoch 0, step 2"):
        main.train(opt)
    state = load_file(tmp_path / "checkpoints" / "last.pt")
    assert (state["epoch"], state["step"]) == (0, 2)
    assert torch.isfinite(state["step_stats"][:2]).all()


def test_checkpoints_inside_an_epoch_after_the_set_time(tmp_path, monkeypatch):
    saved_steps = []
    real_save = main.Trainer.save

    def recording_save(trainer, name="last"):
        saved_steps.append((trainer.epoch, trainer.step))
        real_save(trainer, name)

    monkeypatch.setattr(main.Trainer, "save", recording_save)
    main.train(parse_opts([*TINY, "--checkpoint_minutes", "1e-9", "--output_dir", str(tmp_path)]))
    assert saved_steps[:3] == [(0, 1), (0, 2), (0, 3)]  # every step, since the time is always up
    assert saved_steps[-1] == (1, 0)  # and at the end of the epoch


def test_resume_refuses_other_settings_and_allows_more_epochs(tmp_path):
    main.train(parse_opts([*TINY, "--output_dir", str(tmp_path)]))
    metrics_csv, options_json = tmp_path / "metrics.csv", tmp_path / "options.json"
    first_epoch = metrics_csv.read_text().splitlines()[1]
    with pytest.raises(UserError, match=r"other settings.*--d_net_learning_rate: 0\.0001 -> 0\.0002; "
                                        r"--batch_size: 2 -> 4"):
        main.train(parse_opts([*TINY, "--d_net_learning_rate", "0.0002", "--batch_size", "4",
                               "--output_dir", str(tmp_path), "--resume"]))
    assert json.loads(options_json.read_text())["d_net_learning_rate"] == 0.0001  # the run folder is untouched

    main.train(parse_opts([*TINY, "--epochs", "2", "--output_dir", str(tmp_path), "--resume"]))
    lines = metrics_csv.read_text().splitlines()
    assert len(lines) == 3 and lines[1] == first_epoch  # epoch 0 kept as it was, epoch 1 trained on it
    assert "resumed from" in (tmp_path / "train.log").read_text()


def test_a_checkpoint_from_inside_an_epoch_resumes_only_with_as_many_processes(tmp_path):
    main.train(parse_opts([*TINY, "--output_dir", str(tmp_path)]))
    path = tmp_path / "checkpoints" / "last.pt"
    state = load_file(path)
    assert state["world_size"] == 1 and state["rng"]["cuda"] is None  # a CPU run of one process
    save_checkpoint({**state, "step": 3, "world_size": 2}, path)
    with pytest.raises(UserError, match=r"saved inside epoch 1 by 2 process\(es\), and this run has 1; .*"
                                        r"torchrun --nproc_per_node 2"):
        main.train(parse_opts([*TINY, "--epochs", "2", "--output_dir", str(tmp_path), "--resume"]))


def test_resume_refuses_training_files_that_changed(tmp_path):
    for i in range(3):
        write_wav(tmp_path / "data" / "normal" / f"{i}.wav", tone(seed=i))
    write_wav(tmp_path / "data" / "abnormal" / "0.wav", tone(frequency=900))
    run = ["--data_root", str(tmp_path / "data"), "--train_normal_files", "2", "--mess_length", "512",
           "--segment_length", "256", "--quiet", "--output_dir", str(tmp_path / "run")]
    main.train(parse_opts([*run, "--epochs", "1"]))
    assert load_file(tmp_path / "run" / "checkpoints" / "last.pt")["train_files"] == ["0.wav", "1.wav"]
    (tmp_path / "data" / "normal" / "1.wav").rename(tmp_path / "data" / "normal" / "1b.wav")
    with pytest.raises(UserError, match=r"last.pt: trained on 2 files, and the training data now hold 2 \(gone: "
                                        r"1.wav; new: 1b.wav\); a resumed run must train on the same files"):
        main.train(parse_opts([*run, "--epochs", "2", "--resume"]))


def test_a_checkpoint_lacking_an_entry_is_refused_as_not_train_s(tmp_path):
    """A checkpoint without one of the entries resuming reads (here the world size) gets the plain refusal."""
    main.train(parse_opts([*TINY, "--output_dir", str(tmp_path)]))
    path = tmp_path / "checkpoints" / "last.pt"
    state = load_file(path)
    del state["world_size"]
    save_checkpoint(state, path)
    with pytest.raises(UserError, match="last.pt: not a GRLNet checkpoint written by train.py"):
        main.train(parse_opts([*TINY, "--epochs", "2", "--output_dir", str(tmp_path), "--resume"]))


def test_resume_refuses_a_file_that_is_not_a_train_checkpoint(tmp_path):
    weights = tmp_path / "Discirminator.pth"
    torch.save({"gfl.layernorm.weight": torch.ones(256)}, weights)
    with pytest.raises(UserError, match="Discirminator.pth: not a GRLNet checkpoint written by train.py"):
        main.train(parse_opts([*TINY, "--output_dir", str(tmp_path / "run"), "--resume", str(weights)]))


def test_metrics_csv_has_every_rows_columns_and_leaves_a_missing_cell_empty(tmp_path):
    """Rows with other keys: the header is their union, and the per-group tables stay out."""
    history = [{"epoch": 0, "auc": 0.5, "confusion": [[1, 0], [0, 1]]},
               {"epoch": 1, "auc": 0.75, "id_average_auc": 0.8, "confusion": [[1, 0], [0, 1]],
                "machine_ids": [{"id": "00", "auc": 0.8, "pauc": 0.6}]}]
    write_metrics_csv(history, tmp_path / "metrics.csv")
    assert (tmp_path / "metrics.csv").read_text().splitlines() == [
        "epoch,auc,id_average_auc", "0,0.5,", "1,0.75,0.8"]
