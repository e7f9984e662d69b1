"""The training budget: windows drawn per clip each epoch (reproducible, different each epoch, covering
each clip evenly), and evaluations before the last epoch on a fixed subset of windows, the last on all."""
import csv

import numpy as np
import pytest
import torch
from conftest import TINY, run_script

from data import ClipSet, drawn_windows
from opts import parse_opts

LENGTH = 256


CLIP = 100_000  # sample t of clip c holds c * CLIP + t (exact in float32 for these sizes)


def ramp_clips(clips: int, samples: int) -> torch.Tensor:
    """Clips whose sample t is ``clip * CLIP + t``: a window's first value tells its clip and its offset."""
    return torch.arange(samples, dtype=torch.float32) + CLIP * torch.arange(clips, dtype=torch.float32)[:, None]


def offsets_and_clips(windows: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    first = windows[:, 0, 0].numpy().astype(np.int64)
    return first % CLIP, first // CLIP


def test_drawn_windows_are_slices_of_their_clip_one_in_each_part():
    signals = ramp_clips(3, 4096)
    windows = drawn_windows(signals, LENGTH, 4, seed=0, epoch=0)
    assert windows.shape == (12, 1, LENGTH)
    offsets, clips = offsets_and_clips(windows)
    assert clips.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    for window, offset, clip in zip(windows, offsets, clips, strict=True):
        assert torch.equal(window[0], signals[clip, offset:offset + LENGTH])
    # 4096 - 256 + 1 = 3841 starts in four parts: [0, 960), [960, 1920), [1920, 2880), [2880, 3841)
    parts = np.digitize(offsets, [960, 1920, 2880]).reshape(3, 4)
    assert (parts == np.arange(4)).all()
    assert offsets.max() <= 4096 - LENGTH


def test_the_draw_depends_on_seed_and_epoch_alone():
    signals = ramp_clips(5, 2048)
    first = drawn_windows(signals, LENGTH, 3, seed=7, epoch=2)
    torch.manual_seed(123)  # the global generators play no part
    assert torch.equal(drawn_windows(signals, LENGTH, 3, seed=7, epoch=2), first)
    assert not torch.equal(drawn_windows(signals, LENGTH, 3, seed=7, epoch=3), first)
    assert not torch.equal(drawn_windows(signals, LENGTH, 3, seed=8, epoch=2), first)


def test_over_many_epochs_every_part_of_a_clip_is_drawn_about_equally():
    samples, epochs = 4096, 400
    offsets = np.concatenate([offsets_and_clips(drawn_windows(ramp_clips(2, samples), LENGTH, 2, 0, e))[0]
                              for e in range(epochs)])
    counts, _ = np.histogram(offsets, bins=16, range=(0, samples - LENGTH + 1))
    expected = len(offsets) / 16  # 100 draws a bin; a binomial's standard deviation is under 10
    assert np.abs(counts - expected).max() < 0.35 * expected


def test_a_clip_with_fewer_starts_than_draws_repeats_its_starts():
    windows = drawn_windows(ramp_clips(1, LENGTH + 2), LENGTH, 5, seed=0, epoch=0)
    offsets, _ = offsets_and_clips(windows)
    assert set(offsets.tolist()) <= {0, 1, 2} and len(offsets) == 5


def test_evenly_spaced_windows_per_clip_by_hand():
    clips = ClipSet(["a", "b"], ramp_clips(2, 4096).numpy(), None)
    # windows of 256 every 1024: starts 0, 1024, 2048, 3072 (4 a clip); 2 of them: the first and the last
    windows, clip_index = clips.windows(LENGTH, 1024, per_clip=2)
    assert offsets_and_clips(windows)[0].tolist() == [0, 3072, 0, 3072]
    assert clip_index.tolist() == [0, 0, 1, 1]
    windows, _ = clips.windows(LENGTH, 1024, per_clip=3)
    assert offsets_and_clips(windows)[0].tolist() == [0, 2048, 3072] * 2  # round(0, 1.5, 3)
    assert len(clips.windows(LENGTH, 1024, per_clip=9)[0]) == len(clips.windows(LENGTH, 1024)[0]) == 8


def test_window_budgets_need_windows():
    with pytest.raises(Exception, match="--segment_length 0 each clip is one window"):
        parse_opts(["--segment_length", "0", "--train_windows_per_clip", "2", "--synthetic_train_clips", "4"])


def test_a_run_trains_on_drawn_windows_and_evaluates_all_windows_only_at_the_end(tmp_path):
    # 4 training clips of 4096 samples, windows of 256 every 1024 (4 a clip): 3 drawn per clip, batch 2
    # = 6 steps an epoch; evaluations of epochs 1 and 2 on 1 window per clip, epoch 3 on all 4.
    args = [*TINY, "--mess_length", "4096", "--segment_hop", "1024", "--synthetic_train_clips", "4",
            "--synthetic_test_clips", "4", "--epochs", "3", "--train_windows_per_clip", "3",
            "--eval_windows_per_clip", "1", "--output_dir", str(tmp_path / "run")]
    run_script("train.py", *args)
    log = (tmp_path / "run" / "train.log").read_text()
    assert ("training on 3 drawn windows per clip an epoch, evaluations before the last epoch on 1 windows per "
            "clip (the last on every window)") in log
    assert "evaluation " in log and "on 1 windows per clip)" in log and "on every window)" in log
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert [int(r["evaluated_windows_per_clip"]) for r in rows] == [1, 1, 0]
    assert all(float(r["evaluation_seconds"]) > 0 for r in rows)
    # the last epoch's numbers are the full evaluation: test.py, which scores every window, agrees
    run_script("test.py", "--checkpoint", str(tmp_path / "run" / "checkpoints" / "last.pt"),
               "--output_dir", str(tmp_path / "test"), "--quiet")
    assert (tmp_path / "test" / "scores.csv").read_text() == (tmp_path / "run" / "scores.csv").read_text()


def test_whole_signals_leave_the_presets_window_budgets_out(tmp_path):
    (tmp_path / "normal").mkdir()
    (tmp_path / "abnormal").mkdir()
    opt = parse_opts(["--data_root", str(tmp_path), "--segment_length", "0"])
    assert (opt.train_windows_per_clip, opt.eval_windows_per_clip) == (0, 0)
    opt = parse_opts(["--data_root", str(tmp_path)])  # the WAV preset's budgets
    assert (opt.train_windows_per_clip, opt.eval_windows_per_clip) == (4, 4)
