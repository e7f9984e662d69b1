"""test.py's checks on what it is given: the data's sample rate, the checkpoint's structure, and
options on the command line that contradict the checkpoint."""
import csv
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, run_script, tone, write_clips, write_wav

import main
from data.console import UserError
from data.signals import read_wav
from grlnet.checkpoint import load_file, save_checkpoint
from grlnet.evaluate import load_scoring_checkpoint
from opts import VALUES_BEFORE_ADDED, parse_opts, parse_test_args


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny run on the embedded data set, whose clips are at 16 kHz (windows of 256, no resampling)."""
    folder = tmp_path_factory.mktemp("run")
    main.train(parse_opts([*TINY, "--output_dir", str(folder)]))
    return folder / "checkpoints" / "last.pt"


def scores_of(path: Path) -> dict[str, float]:
    with path.open() as handle:
        return {Path(row["file"]).name: float(row["score"]) for row in csv.DictReader(handle)}


def score(checkpoint: Path, out: Path, *args: str) -> dict[str, float]:
    """Run test.py's work in this process and read back its scores."""
    main.test(parse_test_args(["--checkpoint", str(checkpoint), "--output_dir", str(out), "--quiet",
                               *args]))
    return scores_of(out / "scores.csv")


def with_changes(checkpoint: Path, path: Path, change) -> Path:
    """A copy of ``checkpoint`` with ``change`` applied to its dict."""
    state = torch.load(checkpoint, weights_only=True)
    change(state)
    torch.save(state, path)
    return path


def test_data_at_another_rate_is_refused_naming_a_file_both_rates_and_the_fix(checkpoint, tmp_path):
    clips = write_clips(tmp_path / "at44k", 44100)
    result = run_script("test.py", "--checkpoint", str(checkpoint), "--test_root", str(clips),
                        "--output_dir", str(tmp_path / "out"), "--quiet", check=False)
    assert result.returncode == 2
    assert result.stdout.splitlines()[-1] == (
        f"error: {clips / 'anomaly_id_00_00000000.wav'}: sample rate 44100 Hz, but {checkpoint} was "
        "trained on 16000 Hz audio; give --sample_rate 16000 to resample")
    with pytest.raises(UserError, match=r"normal_id_00_00000001.wav: sample rate 44100 Hz, .* on 16000 Hz"):
        score(checkpoint, tmp_path / "input", "--input", str(clips / "normal_id_00_00000001.wav"))


def test_sample_rate_resamples_to_the_trained_rate(checkpoint, tmp_path):
    at_16k, at_44k = write_clips(tmp_path / "at16k", 16000), write_clips(tmp_path / "at44k", 44100)
    expected = score(checkpoint, tmp_path / "16k", "--test_root", str(at_16k))
    resampled = score(checkpoint, tmp_path / "44k", "--test_root", str(at_44k), "--sample_rate", "16000")
    for name in expected:  # the decode at 44.1 kHz, resampled, is the 16 kHz clip to within soxr's round trip
        native, _, _ = read_wav(at_16k / name, None)
        back, rate, _ = read_wav(at_44k / name, 16000)
        assert rate == 16000 and back.shape == native.shape
        assert np.sqrt(np.mean((back - native) ** 2)) < 0.05 * np.sqrt(np.mean(native ** 2))
    # The feature distances amplify the round trip's error (0.16 % with soxr 1.1.0); the paper's score does not.
    assert resampled == pytest.approx(expected, rel=1e-2)
    with pytest.raises(UserError, match=r"^--sample_rate 44100 differs from the 16000 Hz the checkpoint was "
                                        r"trained at \(.*last.pt\); give --sample_rate 16000$"):
        main.restore(parse_test_args(["--checkpoint", str(checkpoint), "--sample_rate", "44100"]))


def test_a_run_resampled_in_training_resamples_its_test_data_again(tmp_path):
    data = tmp_path / "data"
    for i in range(3):
        write_wav(data / "train" / f"normal_id_00_{i:08d}.wav", tone(0.05, rate=44100, seed=10 + i), 44100)
    write_clips(data / "test", 44100)
    run = tmp_path / "run"
    main.train(parse_opts(["--data_root", str(data), "--sample_rate", "16000", "--mess_length", "512",
                           "--segment_length", "256", "--segment_hop", "256", "--epochs", "1", "--quiet",
                           "--output_dir", str(run)]))
    rescored = score(run / "checkpoints" / "last.pt", tmp_path / "test", "--test_root", str(data / "test"))
    assert rescored == scores_of(run / "scores.csv")


@pytest.mark.parametrize("change, problem", [
    (lambda state: state["models"].pop("local"), r": incomplete GRLNet checkpoint: 'models' has no 'local'$"),
    (lambda state: state.update(metrics={"threshold": 0.5}),
     r": incomplete GRLNet checkpoint: 'metrics' is missing or not a list$"),
    (lambda state: state["metrics"][-1].pop("threshold"),
     r": incomplete GRLNet checkpoint: the last 'metrics' entry has no 'threshold'$"),
    (lambda state: state["feature_models"]["encoder"].update(precision=torch.zeros(3)),
     r": incomplete GRLNet checkpoint: 'feature_models' encoder: its tensors' shapes disagree$"),
    (lambda state: state["feature_models"].pop("discriminator"),
     r": incomplete GRLNet checkpoint: 'feature_models' does not hold the spaces encoder, discriminator$"),
    (lambda state: state["models"].update(regional=torch.zeros(3)),
     r" \(regional\): expected a state dict of tensors$"),
    (lambda state: state["options"].pop("data_root"), r": incomplete GRLNet checkpoint: 'options' lacks data_root$"),
])
def test_an_incomplete_checkpoint_is_refused_naming_what_it_lacks(checkpoint, tmp_path, change, problem):
    damaged = with_changes(checkpoint, tmp_path / "damaged.pt", change)
    with pytest.raises(UserError, match=f"^{re.escape(str(damaged))}{problem}"):
        main.restore(parse_test_args(["--checkpoint", str(damaged)]))


def test_a_checkpoint_saved_before_an_option_existed_scores_as_before(checkpoint, tmp_path):
    """An option added since a run was saved (opts.VALUES_BEFORE_ADDED) reads as its earlier behaviour."""
    def saved_before_the_new_options(state):
        for name in VALUES_BEFORE_ADDED:
            del state["options"][name]

    older = with_changes(checkpoint, tmp_path / "older.pt", saved_before_the_new_options)
    assert score(older, tmp_path / "older") == score(checkpoint, tmp_path / "now")
    assert load_scoring_checkpoint(str(older), main.STORED_OPTIONS)["options"]["learning_rate_scaling"] == "none"


def test_a_checkpoint_of_a_removed_study_option_scores_as_any_other(checkpoint, tmp_path):
    """The removed study options (opts.REMOVED_OPTIONS) acted on training alone: a run that used them is
    scored from its weights as it was stored (resuming it is refused, tests/test_resume.py)."""
    study = with_changes(checkpoint, tmp_path / "study.pt", lambda state: state["options"].update(
        label_smoothing=0.1, instance_noise_snr=6.0, pseudo_anomaly_epochs=3))
    assert score(study, tmp_path / "study") == score(checkpoint, tmp_path / "now")


def test_a_checkpoint_saved_inside_an_epoch_is_for_resuming_not_scoring(checkpoint, tmp_path):
    """Its weights are newer than its feature statistics and threshold (the previous epoch's end)."""
    inside = with_changes(checkpoint, tmp_path / "inside.pt", lambda state: state.update(epoch=1, step=5))
    message = (f"{inside}: saved inside epoch 2 (after step 5) to resume training from; its weights have changed "
               "since its feature statistics and threshold were set at the end of the epoch before")
    for score_name in ("encoder_knn", "paper"):
        with pytest.raises(UserError, match=f"^{re.escape(message)}"):
            main.restore(parse_test_args(["--checkpoint", str(inside), "--score", score_name]))


def test_given_options_are_told_from_defaults():
    opt = parse_test_args(["--checkpoint", "x.pt", "--segment_length", "256", "--no-bf16", "--seed", "0"])
    assert opt.given_options == {"checkpoint", "segment_length", "bf16", "seed"}
    assert opt.bf16 is False and opt.mess_length is None


@pytest.mark.parametrize("given, message", [
    (["--segment_length", "128"], "--segment_length 128 differs from the checkpoint's 256"),
    (["--segment_hop", "128"], "--segment_hop 128 differs from the checkpoint's 256"),
    (["--global_filter", "learned"], "--global_filter learned differs from the checkpoint's released"),
    (["--calibration_clips", "2"], "--calibration_clips 2 differs from the checkpoint's 0"),
])
def test_a_given_model_option_must_match_the_checkpoint(checkpoint, given, message):
    with pytest.raises(UserError, match=rf"^{message} \(.*last.pt\); leave it out to use the checkpoint's$"):
        main.restore(parse_test_args(["--checkpoint", str(checkpoint), *given]))


def test_batch_size_precision_and_kernels_come_from_the_checkpoint_unless_given(checkpoint, tmp_path):
    state = load_file(checkpoint)
    # neither the demo preset's batch nor the defaults of bf16 and deterministic
    state["options"].update(batch_size=4, bf16=False, deterministic=True)
    other = tmp_path / "other.pt"
    save_checkpoint(state, other)
    stored = main.restore(parse_test_args(["--checkpoint", str(other)])).scoring
    assert (stored.settings.batch_size, stored.bf16, stored.deterministic) == (4, False, True)
    given = main.restore(parse_test_args(["--checkpoint", str(other), "--batch_size", "16", "--bf16",
                                          "--no-deterministic"])).scoring
    assert (given.settings.batch_size, given.bf16, given.deterministic) == (16, True, False)


def test_given_options_that_agree_with_the_checkpoint_or_name_its_data_are_kept(checkpoint):
    same = main.restore(parse_test_args(["--checkpoint", str(checkpoint), "--segment_length", "256",
                                         "--global_filter", "released", "--bf16", "True"])).scoring
    assert (same.settings.segment_length, same.global_filter, same.data.synthetic_test_clips) == (256, "released", 8)
    fewer = main.restore(parse_test_args(["--checkpoint", str(checkpoint), "--synthetic_test_clips", "4"]))
    assert fewer.scoring.data.synthetic_test_clips == 4


def test_cli_refuses_a_segment_length_the_checkpoint_was_not_trained_with(checkpoint):
    result = run_script("test.py", "--checkpoint", str(checkpoint), "--segment_length", "512", check=False)
    assert result.returncode == 2
    assert result.stdout.splitlines()[-1] == (
        f"error: --segment_length 512 differs from the checkpoint's 256 ({checkpoint}); "
        "leave it out to use the checkpoint's")


def test_output_file_of_input_mode_must_be_a_file_and_gets_its_folder(checkpoint, tmp_path):
    clips = write_clips(tmp_path / "clips", 16000)
    with pytest.raises(UserError, match=f"{re.escape(str(tmp_path))}: --output is a folder; give a file name"):
        score(checkpoint, tmp_path / "out", "--input", str(clips), "--output", str(tmp_path))
    nested = tmp_path / "new" / "folder" / "scores.csv"
    main.test(parse_test_args(["--checkpoint", str(checkpoint), "--input", str(clips), "--output", str(nested),
                               "--output_dir", str(tmp_path / "out"), "--quiet"]))
    assert set(scores_of(nested)) == {path.name for path in clips.iterdir()}


def _score_into(checkpoint: Path, clips: Path, output: Path, *args: str) -> None:
    main.test(parse_test_args(["--checkpoint", str(checkpoint), "--input", str(clips), "--output", str(output),
                               "--output_dir", str(clips.parent / "out"), "--quiet", *args]))


def test_output_that_is_an_input_or_the_checkpoint_is_refused_even_with_overwrite(checkpoint, tmp_path):
    clips = write_clips(tmp_path / "clips", 16000)
    an_input = clips / "normal_id_00_00000000.wav"
    before = an_input.read_bytes(), checkpoint.read_bytes()
    output = tmp_path / "clips" / ".." / "clips" / an_input.name  # another path to a file in the --input folder
    with pytest.raises(UserError, match=f"^{re.escape(str(output))}: --output lies inside {re.escape(str(clips))}, "
                                        r"a folder being read \(--input\); give a file elsewhere$"):
        _score_into(checkpoint, clips, output, "--overwrite")
    with pytest.raises(UserError, match=f"^{re.escape(str(checkpoint))}: --output is one of the files being read "
                                        r"\(an input or the checkpoint\); writing the scores would destroy it"):
        _score_into(checkpoint, clips, checkpoint, "--overwrite")
    assert (an_input.read_bytes(), checkpoint.read_bytes()) == before


def test_an_existing_output_is_replaced_only_when_test_py_wrote_it_or_with_overwrite(checkpoint, tmp_path):
    clips = write_clips(tmp_path / "clips", 16000)
    output = tmp_path / "report.csv"
    output.write_text("name,notes\nmine,keep me\n")
    with pytest.raises(UserError, match=f"^{re.escape(str(output))}: --output exists and is not a score file "
                                        r"written by test.py; give another file name, or --overwrite to replace it$"):
        _score_into(checkpoint, clips, output)
    assert output.read_text() == "name,notes\nmine,keep me\n"
    _score_into(checkpoint, clips, output, "--overwrite")
    first = scores_of(output)
    assert set(first) == {path.name for path in clips.iterdir()}
    _score_into(checkpoint, clips, output)  # its own score file: replaced without --overwrite
    assert scores_of(output) == first


def test_a_training_run_folder_is_refused_as_test_output(checkpoint, tmp_path):
    run = checkpoint.parent.parent
    before = (run / "scores.csv").read_text()
    message = (f"{run}: --output_dir is a training run's folder (it holds options.json, checkpoints/last.pt, "
               "metrics.csv, train.log), whose scores.csv, metrics and figures test.py would replace; give another "
               "--output_dir")
    with pytest.raises(UserError, match=f"^{re.escape(message)}$"):
        score(checkpoint, run)
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "options.json").write_text((run / "options.json").read_text())  # told by its content
    with pytest.raises(UserError, match="--output_dir is a training run's folder"):
        score(checkpoint, copy)
    clips = write_clips(tmp_path / "clips", 16000)
    message = (f"{run / 'scores.csv'}: --output lies in the training run's folder {run} (it holds options.json, "
               "checkpoints/last.pt, metrics.csv, train.log), whose files are the run's own; give a file elsewhere")
    with pytest.raises(UserError, match=f"^{re.escape(message)}$"):
        _score_into(checkpoint, clips, run / "scores.csv", "--overwrite")
    assert (run / "scores.csv").read_text() == before


def test_an_output_folder_with_files_test_py_did_not_write_needs_overwrite(checkpoint, tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "scores.csv").write_text("my own table\n")
    message = (f"{folder}: --output_dir holds files that test.py did not write (it has no test.log), and test.py "
               "writes scores.csv, metrics.json, test.log and figures/ there; give a new or empty folder, or "
               "--overwrite to write there anyway")
    with pytest.raises(UserError, match=f"^{re.escape(message)}$"):
        score(checkpoint, folder)
    assert (folder / "scores.csv").read_text() == "my own table\n"
    first = score(checkpoint, folder, "--overwrite")
    assert score(checkpoint, folder) == first  # its own folder again: no --overwrite needed
