"""Every stored value a decision uses is checked where it is read (issue 32, part B): a checkpoint's threshold,
feature models, BatchNorm statistics, options and resume state; file names that are not UTF-8; a diverged run's
checkpoint; and a damaged score file named as such by experiments.redraw."""
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY, run_script, tone, write_wav

import main
from data.console import DivergedError, UserError
from data.signals import read_wav
from grlnet import plots, steps
from grlnet.checkpoint import load_train_checkpoint, load_weights
from network import GRLNet
from opts import parse_opts, parse_test_args

NOT_UTF8 = os.fsdecode(b"normal_id_00_\xff.wav")  # a name of bytes that are not UTF-8, as os.listdir gives it
HUGE_RATES = ["--r_g_net_learning_rate", "1e3", "--l_g_net_learning_rate", "1e3", "--d_net_learning_rate", "1e3"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny run on the embedded data set (labelled, 16 kHz): its folder."""
    folder = tmp_path_factory.mktemp("run")
    main.train(parse_opts([*TINY, "--output_dir", str(folder)]))
    return folder


@pytest.fixture
def checkpoint(run) -> Path:
    return run / "checkpoints" / "last.pt"


def edited(checkpoint: Path, path: Path, change) -> Path:
    """A copy of ``checkpoint`` with ``change`` applied to its dict, saved as an edited file would be."""
    state = torch.load(checkpoint, weights_only=True)
    change(state)
    torch.save(state, path)
    return path


def fill(entry: str, value: float, count: int | None = None):
    """A change that sets the first ``count`` values (all: None) of the tensor at ``entry`` (keys joined by /)."""
    def change(state: dict) -> None:
        *keys, last = entry.split("/")
        for key in keys:
            state = state[int(key) if key.isdecimal() else key]  # an optimizer's state is by parameter number
        state[last].view(-1)[:count].fill_(value)
    return change


def set_option(name: str, value: object):
    return lambda state: state["options"].update({name: value})


def set_threshold(value: object):
    return lambda state: state["metrics"][-1].update(threshold=value)


# ---------------------------------------------------------------- scoring: items 6, 10 and 13

@pytest.mark.parametrize("change, problem", [
    (set_threshold(float("nan")), "metrics[-1]['threshold'] is nan, not a finite number"),
    (set_threshold(float("-inf")), "metrics[-1]['threshold'] is -inf, not a finite number"),
    (set_threshold("0.5"), "metrics[-1]['threshold'] is '0.5', not a finite number"),
    (set_threshold(True), "metrics[-1]['threshold'] is True, not a finite number"),
    (fill("feature_models/encoder/scale", 0.0, 3), "feature_models['encoder']['scale'] has 3 values <= 0"),
    (fill("feature_models/discriminator/scale", -1.0, 1), "feature_models['discriminator']['scale'] has 1 values <= 0"),
    (fill("feature_models/encoder/location", float("inf"), 2),
     r"feature_models['encoder']['location'] holds NaN or infinite values (2 of 2048)"),
    (fill("feature_models/discriminator/precision", float("nan"), 1),
     "feature_models['discriminator']['precision'] holds NaN or infinite values (1 of 1048576)"),
    (lambda state: state["feature_models"]["encoder"].update(reference=torch.zeros(0, 2048)),
     "feature_models['encoder']['reference'] holds no windows, and the kNN distance needs one"),
    (set_option("global_filter", "bogus"), "options['global_filter'] is 'bogus', not one of released, learned"),
    (set_option("comprehensive_output_factor", "half"),
     "options['comprehensive_output_factor'] is 'half', not a value --comprehensive_output_factor accepts"),
    (set_option("comprehensive_output_factor", 2.0),
     "options['comprehensive_output_factor'] is 2.0, expected a value in [0, 1], got 2.0"),
    (set_option("score", "bogus"), ("options['score'] is 'bogus', not one of paper, encoder_mahalanobis, "
                                   "encoder_knn, discriminator_mahalanobis, discriminator_knn")),
    (set_option("segment_length", 256.0), "options['segment_length'] is 256.0, not a value --segment_length accepts"),
    (set_option("bf16", "False"), "options['bf16'] is 'False', of type str, not bool"),
    (set_option("threshold_quantile", float("nan")), ("options['threshold_quantile'] is nan, expected a value in "
                                                     "[0, 1], got nan")),
    (set_option("batch_size", None), "options['batch_size'] is None, where a run stores a value"),
    (lambda state: state.update(sample_rate="16000"), "sample_rate is '16000', not a whole number >= 1"),
    (lambda state: state.update(epoch=4), "epoch is 4, but metrics holds the results of 1 epochs"),
])
def test_a_damaged_stored_value_is_refused_naming_the_checkpoint_and_the_entry(checkpoint, tmp_path, change, problem):
    damaged = edited(checkpoint, tmp_path / "ckpt.pt", change)
    expected = f"{damaged}: {problem}; the checkpoint is damaged"
    with pytest.raises(UserError, match=f"^{re.escape(expected)}$"):
        main.restore(parse_test_args(["--checkpoint", str(damaged)]))


@pytest.mark.parametrize("entry, value, problem", [
    ("regional/encoder.1.running_var", -1.0, "encoder.1.running_var has 3 values < 0"),
    ("discriminator/discriminator.1.running_var", float("inf"),
     "discriminator.1.running_var holds NaN or infinite values (3 of 64)"),
    ("local/encoder.4.running_mean", float("nan"), "encoder.4.running_mean holds NaN or infinite values (3 of 128)"),
])
def test_batchnorm_statistics_must_be_finite_and_variances_not_negative(checkpoint, tmp_path, entry, value, problem):
    damaged = edited(checkpoint, tmp_path / "ckpt.pt", fill(f"models/{entry}", value, 3))
    network = entry.split("/")[0]
    expected = f"{damaged} ({network}): {problem} (a diverged or damaged model)"
    with pytest.raises(UserError, match=f"^{re.escape(expected)}$"):
        main.restore(parse_test_args(["--checkpoint", str(damaged)]))


def test_the_release_files_batchnorm_variances_are_checked_too():
    network = GRLNet(256).regional
    state = {**network.state_dict(), "encoder.1.running_var": -torch.ones(64)}
    with pytest.raises(UserError, match=r"^file: encoder.1.running_var has 64 values < 0 \(a diverged or damaged"):
        load_weights(network, state, "file")


def test_a_nan_stored_threshold_never_decides_a_clip(checkpoint, tmp_path):
    """It used to make every clip "normal" with exit status 0; --threshold nan on the command line is refused."""
    damaged = edited(checkpoint, tmp_path / "ckpt.pt", set_threshold(float("nan")))
    clip = write_wav(tmp_path / "clips" / "normal_id_00_00000000.wav", tone(0.05))
    result = run_script("test.py", "--checkpoint", str(damaged), "--input", str(clip), "--output_dir",
                        str(tmp_path / "out"), "--quiet", check=False)
    assert result.returncode == 2
    assert result.stdout.splitlines()[-1] == (f"error: {damaged}: metrics[-1]['threshold'] is nan, not a finite "
                                              "number; the checkpoint is damaged")
    assert not (tmp_path / "out" / "scores.csv").exists()


def test_an_integer_stored_threshold_is_a_threshold(checkpoint, tmp_path):
    whole = edited(checkpoint, tmp_path / "ckpt.pt", set_threshold(300))
    restored = main.restore(parse_test_args(["--checkpoint", str(whole)]))
    assert restored.threshold == 300.0 and type(restored.threshold) is float
    clip = write_wav(tmp_path / "clips" / "normal_id_00_00000000.wav", tone(0.05))
    main.test(parse_test_args(["--checkpoint", str(whole), "--input", str(clip), "--output_dir",
                               str(tmp_path / "out"), "--quiet"]))
    assert "decision" in (tmp_path / "out" / "scores.csv").read_text().splitlines()[0]


# ---------------------------------------------------------------- resuming: items 6 and 10

@pytest.mark.parametrize("change, problem", [
    (fill("optimizers/regional/state/0/exp_avg_sq", -1.0, 4),
     "optimizers['regional']['state'][0]['exp_avg_sq'] has 4 values < 0"),
    (fill("optimizers/discriminator/state/0/exp_avg", float("nan"), 1),
     "optimizers['discriminator']['state'][0]['exp_avg'] holds NaN or infinite values (1 of "),
    (lambda state: state["optimizers"]["local"]["param_groups"][0].update(lr=float("inf")),
     "optimizers['local']['param_groups'] holds the learning rate inf, not a finite number > 0"),
    (lambda state: state.update(step=3, step_stats=torch.full((8, len(steps.STEP_STATS)), float("nan"))),
     f"step_stats[:3] holds NaN or infinite values ({3 * len(steps.STEP_STATS)} of {3 * len(steps.STEP_STATS)})"),
    (lambda state: state.update(world_size=0), "world_size is 0, not a whole number >= 1"),
    (lambda state: state["rng"].update(cpu=torch.zeros(3)), "rng['cpu'] is not the state of torch's random generator"),
    (lambda state: state.update(train_files=[1, 2]), "train_files is not a list of file names"),
])
def test_a_damaged_resume_state_is_refused_naming_the_entry(checkpoint, tmp_path, change, problem):
    damaged = edited(checkpoint, tmp_path / "ckpt.pt", change)
    with pytest.raises(UserError, match=f"^{re.escape(f'{damaged}: {problem}')}.*; the checkpoint is damaged$"):
        load_train_checkpoint(damaged, main.STORED_OPTIONS, main.RESUME_ENTRIES)


def test_resume_refuses_a_damaged_learning_rate_before_training(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    last = copy / "checkpoints" / "last.pt"
    edited(last, last, lambda state: state["optimizers"]["regional"]["param_groups"][0].update(lr=float("nan")))
    with pytest.raises(UserError, match=r"last.pt: optimizers\['regional'\]\['param_groups'\] holds the learning "
                                        r"rate nan, not a finite number > 0; the checkpoint is damaged$"):
        main.train(parse_opts([*TINY, "--epochs", "2", "--output_dir", str(copy), "--resume"]))


# ---------------------------------------------------------------- item 8: file names that are not UTF-8

def test_a_file_name_that_is_not_utf8_is_read(tmp_path):
    plain = write_wav(tmp_path / "plain.wav", tone(0.05))
    odd = tmp_path / NOT_UTF8
    shutil.copyfile(plain, odd)
    signal, rate, channels = read_wav(odd, None)
    assert (rate, channels) == (16000, 1) and (signal == read_wav(plain, None)[0]).all()


def test_input_files_named_in_other_bytes_are_scored_and_named_in_escapes(checkpoint, tmp_path):
    clips = tmp_path / "clips"
    write_wav(clips / "plain.wav", tone(0.05))
    shutil.copyfile(clips / "plain.wav", clips / NOT_UTF8)
    out = tmp_path / "out"
    main.test(parse_test_args(["--checkpoint", str(checkpoint), "--input", str(clips), "--output_dir", str(out),
                               "--quiet", "--no-cache"]))
    rows = (out / "scores.csv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 3 and any(row.startswith(f"{clips}/normal_id_00_\\xff.wav,") for row in rows)
    assert "normal_id_00_\\xff.wav  score" in (out / "test.log").read_text(encoding="utf-8")


def test_training_and_test_files_named_in_other_bytes_train_and_score(tmp_path):
    data = tmp_path / "data"
    for i in range(3):
        write_wav(data / "train" / f"normal_id_00_{i:08d}.wav", tone(0.05, seed=10 + i))
    for i in range(2):
        write_wav(data / "test" / f"normal_id_00_{i:08d}.wav", tone(0.05, seed=20 + i))
        write_wav(data / "test" / f"anomaly_id_00_{i:08d}.wav", tone(0.05, frequency=1500.0, seed=30 + i))
    os.rename(data / "train" / "normal_id_00_00000001.wav", data / "train" / NOT_UTF8)
    os.rename(data / "test" / "anomaly_id_00_00000001.wav", data / "test" / os.fsdecode(b"anomaly_id_00_\xfe.wav"))
    result = run_script("train.py", "--data_root", str(data), "--mess_length", "512", "--segment_length", "256",
                        "--segment_hop", "256", "--epochs", "1", "--quiet", "--no-cache", "--output_dir",
                        str(tmp_path / "run"), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "anomaly_id_00_\\xfe.wav" in (tmp_path / "run" / "scores.csv").read_text(encoding="utf-8")
    assert NOT_UTF8 in torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["train_files"]


# ---------------------------------------------------------------- item 12: divergence

def test_a_diverged_run_keeps_only_finite_weights_and_says_resuming_diverges_again(tmp_path):
    """Learning rates of 1e3 leave the weights finite but so large that the evaluation's features overflow (once a
    traceback from sklearn); the checkpoint kept holds finite weights, and --resume diverges again."""
    options = [*TINY, *HUGE_RATES, "--epochs", "2", "--checkpoint_minutes", "1e-9", "--output_dir", str(tmp_path)]
    kept = tmp_path / "checkpoints" / "last.pt"
    message = (f"; the last checkpoint, {kept}, is kept: its weights and losses are finite, but --resume would repeat "
               "the same steps at the same learning rates and diverge again; start a new run with lower learning "
               "rates (now --r_g_net_learning_rate 1000, --l_g_net_learning_rate 1000, --d_net_learning_rate 1000; "
               "--overwrite replaces this run)")
    with pytest.raises(DivergedError, match=f"^training diverged: .*{re.escape(message)}$"):
        main.train(parse_opts(options))
    state = load_train_checkpoint(kept, main.STORED_OPTIONS, main.RESUME_ENTRIES)
    for name, network in GRLNet(256).named_children():
        load_weights(network, state["models"][name], name)  # finite, or refused
    with pytest.raises(DivergedError, match=re.escape(message)):
        main.train(parse_opts([*options, "--resume"]))


def test_weights_that_become_infinite_are_never_saved(tmp_path, monkeypatch):
    """A step that leaves infinite weights behind finite losses: the save due after it is not made."""
    real_step, calls = steps.STEPS["standard"], {"n": 0}

    def breaking_step(nets, model, *args):
        stats = real_step(nets, model, *args)
        calls["n"] += 1
        if calls["n"] == 3:
            with torch.no_grad():
                model.local.encoder[0].weight[0, 0, 0] = float("inf")
        return stats

    monkeypatch.setitem(steps.STEPS, "standard", breaking_step)
    with pytest.raises(DivergedError, match=r"^training diverged: local.encoder.0.weight holds NaN or infinite values "
                                            r"after 3 steps of epoch 0; the last checkpoint, .*last.pt, is kept"):
        main.train(parse_opts([*TINY, "--checkpoint_minutes", "1e-9", "--output_dir", str(tmp_path)]))
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == (0, 2)
    assert all(torch.isfinite(t).all() for t in state["models"]["local"].values() if t.is_floating_point())


# ---------------------------------------------------------------- item 13: experiments.redraw names the real cause

def _run_copy(run: Path, folder: Path) -> Path:
    shutil.copytree(run, folder)
    return folder / "scores.csv"


def test_a_cut_score_file_is_called_cut_not_diverged(run, tmp_path):
    scores = _run_copy(run, tmp_path / "run")
    text = scores.read_bytes()
    scores.write_bytes(text[:len(text) - 40])  # the last row loses its last cells
    lines = text.decode().count("\n")
    result = run_script("-m", "experiments.redraw", str(tmp_path / "run"), check=False)
    assert result.returncode == 2
    assert re.fullmatch(rf"error: {re.escape(str(scores))}, line {lines}: \d+ cells where the header names 12 "
                        r"columns; the file is cut short or damaged", result.stdout.splitlines()[-1])


@pytest.mark.parametrize("cell, shown", [("nan", "'nan'"), ("0.1.2", "'0.1.2'")])
def test_a_score_that_is_not_a_finite_number_is_called_damaged(run, tmp_path, cell, shown):
    scores = _run_copy(run, tmp_path / "run")
    lines = scores.read_text().splitlines()
    cells = lines[2].split(",")
    cells[-2] = cell  # the score column, before score_name
    lines[2] = ",".join(cells)
    scores.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=f"^{re.escape(str(scores))}, line 3: the score is {shown}, not a finite "
                                        "number; the file is damaged or was edited"):
        plots.redraw(tmp_path / "run")


def test_a_score_file_without_its_columns_is_named(run, tmp_path):
    scores = _run_copy(run, tmp_path / "run")
    scores.write_text("name,value\nx,1\n")
    with pytest.raises(UserError, match=f"^{re.escape(str(scores))}: no 'label' column; not a file train.py or "
                                        "test.py wrote$"):
        plots.redraw(tmp_path / "run")
