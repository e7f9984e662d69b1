"""Every kind of bad input stops with one message that names the file and the problem."""
import argparse
import re
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, TINY, csv_opts, run_script, tone, write_mimii_set, write_release_csv, write_wav

from data import ClipSet, load_datasets
from data.console import UserError
from grlnet.cli import run_cli
from grlnet.results import write_scores_csv
from opts import data_settings, parse_opts, parse_test_args


def _good_csv_sets(tmp_path: Path, test_labels=(0, 1)):
    train = write_release_csv(tmp_path / "train", [np.ones(50) * np.arange(50)], [0])
    test = write_release_csv(tmp_path / "test", [np.arange(50.0) + i for i in range(len(test_labels))],
                             list(test_labels))
    return train, test


def _load_csv(train, test):
    return load_datasets(data_settings(csv_opts(*train, *test, "--mess_length", "64")))


def _expect(message: str, path: Path, call):
    with pytest.raises(UserError) as info:
        call()
    assert str(path) in str(info.value) and message in str(info.value), str(info.value)


def test_missing_and_empty_folders(tmp_path):
    _expect("data folder not found", tmp_path / "nope",
            lambda: load_datasets(data_settings(parse_opts(["--data_root", str(tmp_path / "nope")]))))
    (tmp_path / "empty").mkdir()
    _expect("data folder is empty", tmp_path / "empty",
            lambda: load_datasets(data_settings(parse_opts(["--data_root", str(tmp_path / "empty")]))))


def test_folder_without_supported_files(tmp_path):
    (tmp_path / "normal").mkdir()
    (tmp_path / "normal" / "notes.txt").write_text("hello")
    _expect("no audio files (.wav, .flac, .ogg or another format soundfile reads)", tmp_path / "normal",
            lambda: load_datasets(data_settings(parse_opts(["--data_root", str(tmp_path)]))))


@pytest.mark.parametrize("content, message", [
    ("", "empty"),
    ("0.1\n0.2\nabc\n", "not a column of numbers"),
    ("0.1,0.2\n0.3,0.4\n", "found 2 columns"),
    ("0.1\nnan\n0.3\n", "sample 1 is nan"),
    ("0.1\ninf\n", "sample 1 is inf"),
    ("0\n0\n0\n", "every sample is zero"),
])
def test_bad_csv_signal(tmp_path, content, message):
    train, test = _good_csv_sets(tmp_path)
    (test[0] / "1.csv").write_text(content)
    _expect(message, test[0] / "1.csv", lambda: _load_csv(train, test))


@pytest.mark.parametrize("labels, message", [
    (None, "label file not found"),
    ("kind\n0\n1\n", "no 'label' column"),
    ("label\n0\n", "1 labels for 2 files"),
    ("label\n0\n7\n", "line 3: label '7' is not one of 0, 1, 2, 3"),
    ("label\n0\nyes\n", "line 3: label 'yes' is not a number"),
])
def test_bad_label_file(tmp_path, labels, message):
    train, test = _good_csv_sets(tmp_path)
    test[1].unlink()
    if labels is not None:
        test[1].write_text(labels)
    _expect(message, test[1], lambda: _load_csv(train, test))


def test_test_set_needs_both_classes(tmp_path):
    train, test = _good_csv_sets(tmp_path, test_labels=(0, 0))
    _expect("has no abnormal items", test[0], lambda: _load_csv(train, test))


def test_training_set_with_abnormal_files_is_refused(tmp_path):
    train, test = _good_csv_sets(tmp_path)
    train[1].write_text("label\n1\n")
    _expect("abnormal file", train[0] / "0.csv", lambda: _load_csv(train, test))


def _load_wav(root: Path, *extra: str):
    return load_datasets(data_settings(parse_opts(["--data_root", str(root), "--mess_length", "1024",
                                     "--train_normal_files", "1", *extra])))


def test_mimii_split_of_one_normal_clip_names_the_clip_count(tmp_path):
    root = write_mimii_set(tmp_path)
    (root / "normal" / "1.wav").unlink()
    opt = parse_opts(["--data_root", str(root), "--mess_length", "1024"])
    _expect("1 normal clip(s) in normal/; the MIMII split needs at least 2", root, lambda: load_datasets(data_settings(opt)))
    opt = parse_opts(["--data_root", str(root), "--mess_length", "1024", "--train_normal_files", "1"])
    _expect("--train_normal_files 1 leaves no normal clips to test (there are 1)", root,
            lambda: load_datasets(data_settings(opt)))


def test_truncated_wav(tmp_path):
    root = write_mimii_set(tmp_path)
    path = root / "abnormal" / "0.wav"
    path.write_bytes(path.read_bytes()[: 44 + 1000])
    _expect("truncated", path, lambda: _load_wav(root))


def test_empty_and_non_audio_wav(tmp_path):
    root = write_mimii_set(tmp_path)
    path = root / "abnormal" / "0.wav"
    path.write_bytes(b"")
    _expect("the file is empty", path, lambda: _load_wav(root))
    path.write_text("this is not audio at all, just text in a .wav file")
    _expect("not a readable audio file", path, lambda: _load_wav(root))
    write_wav(path, np.zeros(0, dtype=np.float32))
    _expect("holds no samples", path, lambda: _load_wav(root))


def test_mixed_sample_rates_without_resampling(tmp_path):
    root = write_mimii_set(tmp_path)
    odd = write_wav(root / "abnormal" / "0.wav", tone(rate=8000), rate=8000)
    _expect("sample rate 8000 Hz differs from 16000 Hz", odd, lambda: _load_wav(root))
    _, test_set = _load_wav(root, "--sample_rate", "16000")
    assert len(test_set) == 2


def test_cli_prints_one_line_and_no_traceback(tmp_path):
    result = run_script("train.py", "--data_root", str(tmp_path / "missing"), check=False)
    assert result.returncode == 2
    assert f"error: {tmp_path / 'missing'}: data folder not found" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    debug = run_script("train.py", "--data_root", str(tmp_path / "missing"), "--debug", check=False)
    assert "Traceback" in debug.stderr and "UserError" in debug.stderr


def test_sample_rates_must_agree_across_training_and_test_sets(tmp_path):
    write_wav(tmp_path / "train" / "normal_id_00_00000000.wav", tone())
    write_wav(tmp_path / "test" / "normal_id_00_00000001.wav", tone())
    odd = write_wav(tmp_path / "test" / "anomaly_id_00_00000002.wav", tone(rate=8000), rate=8000)
    _expect("differs from 16000 Hz", odd,
            lambda: load_datasets(data_settings(parse_opts(["--data_root", str(tmp_path), "--mess_length", "800",
                                                   "--segment_length", "0"]))))


@pytest.mark.parametrize("options, message", [
    (["--d_net_learning_rate", "-1"], "argument --d_net_learning_rate: expected a finite number > 0, got -1"),
    (["--r_g_net_learning_rate", "nan"], "argument --r_g_net_learning_rate: expected a finite number > 0"),
    (["--seed", "-1"], "argument --seed: expected an integer >= 0, got -1"),
    (["--snr", "nan"], "argument --snr: expected a level in dB between -300 and 300 (inf: no noise), got nan"),
    (["--threshold", "inf"], "argument --threshold: expected a finite number, got inf"),
    (["--synthetic_test_clips", "1"], "argument --synthetic_test_clips: expected at least 2"),
    (["--segment_hop", "-1"], "argument --segment_hop: expected an integer >= 0, got -1"),
    (["--snr", "1e308"], "argument --snr: expected a level in dB between -300 and 300 (inf: no noise), got 1e308"),
    (["--seed", "99999999999999999999"], "argument --seed: expected at most 2147483647, got 99999999999999999999"),
    (["--checkpoint_minutes", "-1"], "argument --checkpoint_minutes: expected a finite number of minutes >= 0"),
    (["--checkpoint_minutes", "nan"], "argument --checkpoint_minutes: expected a finite number of minutes"),
    (["--epoch", "2"], "unrecognized arguments: --epoch 2"),  # no abbreviations: reproduce.py checks names
])
def test_bad_option_values_are_refused_with_the_option_named(options, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_opts(options)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("options, message", [
    (["--data_root", "d", "--test_label_path", "labels.csv"], "give either --data_root or --train_root/--test_root"),
    (["--train_root", "d", "--train_normal_files", "3"], ("--train_normal_files splits the normal clips of a "
                                                          "--data_root in the MIMII layout; give --data_root")),
    (["--checkpoint", "x.pt"], ("--checkpoint: test.py's option, which training would ignore; train without it, "
                                "then score with python test.py")),
    (["--threshold", "0.5", "--output", "s.csv"], ("--threshold, --output: test.py's options, which training would "
                                                   "ignore")),
    (["--model_dir", "m", "--input", "a.wav"], "--model_dir, --input: test.py's options"),
    (["--cuda", "--device", "cpu"], "--cuda (the release's option) asks for the GPU and --device cpu for the CPU"),
])
def test_options_that_would_be_ignored_are_refused(options, message):
    with pytest.raises(UserError, match=f"^{re.escape(message)}"):
        parse_opts(options)


@pytest.mark.parametrize("options, message", [
    (["--input", "a.wav", "--test_root", "t"], ("--test_root: would be ignored (--input files are scored, not a data "
                                                "set); leave it out")),
    (["--input", "a.wav", "--data_root", "d", "--synthetic_test_clips", "4"],
     ("--data_root, --synthetic_test_clips: would be ignored (--input files are scored, not a data set); "
      "leave them out")),
    (["--threshold", "0.5"], "--threshold: would be ignored (used only when scoring --input files); leave it out"),
    (["--test_root", "t", "--output", "s.csv"], "--output: would be ignored (used only when scoring --input files)"),
])
def test_test_options_that_would_be_ignored_are_refused(options, message):
    with pytest.raises(UserError, match=f"^{re.escape(message)}"):
        parse_test_args(["--checkpoint", "x.pt", *options])


def test_train_script_refuses_a_checkpoint_in_one_line():
    result = run_script("train.py", "--checkpoint", "x.pt", check=False)
    assert result.returncode == 2
    assert result.stdout == ("error: --checkpoint: test.py's option, which training would ignore; train without it, "
                             "then score with python test.py\n")


@pytest.mark.parametrize("options, message", [
    (["--mess_length", "60", "--segment_length", "0"], ("--mess_length 60 is too short: the discriminator "
                                                        "needs at least 61 samples")),
    (["--segment_length", "3"], "--segment_length 3 is too short: the discriminator needs at least 61"),
])
def test_signal_too_short_for_the_discriminator(options, message):
    with pytest.raises(UserError, match=message):
        parse_opts(options)
    parse_opts(["--mess_length", "61", "--segment_length", "0"])  # the shortest that fits


def test_option_errors_print_one_line_from_every_script(tmp_path):
    """Errors found while resolving options, and output paths that cannot be folders."""
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    cases = [
        (["train.py", "--segment_length", "8192"], "error: --segment_length 8192 is longer than --mess_length 4096"),
        (["train.py", *TINY, "--output_dir", str(a_file)],
         f"error: {a_file}: cannot create the run folder there"),
        (["reproduce.py", "--protocol", "tiny", "--out", str(a_file)],
         f"error: {a_file / 'tiny'}: cannot create the output folder (--out) there"),
        (["reproduce.py", "--protocol", "tiny", "--grlnet_args", '--snr "2'],
         "error: --grlnet_args '--snr \"2': No closing quotation"),
        (["-m", "experiments.bench", "--device", "cpu", "--profile", str(a_file)],
         f"error: {a_file}: cannot create the profile folder (--profile) there"),
    ]
    for args, message in cases:
        result = run_script(*args, check=False)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert message in result.stdout, (args, result.stdout)
        assert "Traceback" not in result.stderr, (args, result.stderr)


def test_grlnet_args_errors_say_they_are_train_options(tmp_path):
    result = run_script("reproduce.py", "--protocol", "tiny", "--out", str(tmp_path),
                        "--grlnet_args", "--epochs 0", check=False)
    assert result.returncode == 2
    assert ("reproduce.py --grlnet_args (train.py's options): error: argument --epochs: "
            "expected a positive integer, got 0") in result.stderr


def test_running_out_of_memory_prints_the_sizes_to_lower(tmp_path):
    """A clip length that needs 15 GiB, under a 6 GiB address-space limit: one line, no traceback."""
    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))

    result = subprocess.run([sys.executable, "train.py", "--mess_length", "2000000000", "--output_dir",
                             str(tmp_path / "run")], cwd=REPO, capture_output=True, text=True, timeout=300,
                            preexec_fn=limit_memory)
    assert result.returncode == 2, result.stderr
    assert "error: out of memory (Unable to allocate 14.9 GiB" in result.stdout
    assert "(now --mess_length 2000000000, " in result.stdout
    assert "Traceback" not in result.stderr


def test_gpu_out_of_memory_names_the_batch_size(capsys):
    def allocate(opt):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB\nmore detail")

    opt = argparse.Namespace(mess_length=233472, segment_length=None, batch_size=64, debug=False)
    with pytest.raises(SystemExit) as stop:
        run_cli(allocate, lambda: opt)
    assert stop.value.code == 2
    assert capsys.readouterr().out == ("error: out of GPU memory (CUDA out of memory. Tried to allocate 20.00 GiB); "
                                       "lower the sizes of signals or batches (now --mess_length 233472, "
                                       "--batch_size 64)\n")


def test_a_result_file_that_cannot_be_written_is_named(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    clips = ClipSet(["a.wav"], np.zeros((1, 64), np.float32), None)
    with pytest.raises(UserError, match=f"^{re.escape(str(a_file / 'scores.csv'))}: cannot save the score file "
                                        r"\(Not a directory\); no score file is saved$"):
        write_scores_csv(clips, {"score": np.array([0.5])}, a_file / "scores.csv", "paper")
