"""reproduce.py end to end on its tiny protocol: results files, consistent numbers, two figures,
interruption and continuation."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from conftest import REPO, run_script
from sklearn.metrics import roc_auc_score

from data.console import UserError
from data.layouts import split_data_root
from experiments.repro.protocols import folder_tasks, lite_tasks, mimii_rotation_tasks, mimii_tasks
from experiments.repro.report import latex_text
from experiments.repro.runs import LABELS, run_result
from grlnet.checkpoint import load_file
from grlnet.results import read_columns

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
METHODS = ("grlnet_standard", "grlnet_released", "dcase_autoencoder")


@pytest.fixture(scope="module")
def serial_out(tmp_path_factory):
    """The tiny protocol run once, one run at a time."""
    out = tmp_path_factory.mktemp("serial")
    run_script("reproduce.py", "--protocol", "tiny", "--out", str(out), timeout=120)
    return out


def test_tiny_protocol_writes_results_and_figures(serial_out):
    folder = serial_out / "tiny"
    assert (folder / "results.md").is_file()
    results = json.loads((folder / "results.json").read_text())
    methods = results["tasks"]["tiny"]["methods"]
    assert set(methods) == set(METHODS)
    for method in METHODS:
        auc = methods[method]["auc"]
        assert len(auc["per_seed"]) == len(results["seeds"]) == 1
        for run, value, pauc in zip(methods[method]["runs"], auc["per_seed"], methods[method]["pauc"]["per_seed"],
                                    strict=True):  # each seed's figures recomputed from its scores.csv
            scores = read_columns(Path(run["output_dir"]) / "scores.csv", ("label", "score"))
            assert value == pytest.approx(roc_auc_score(scores["label"], scores["score"]), abs=1e-12)
            assert pauc == pytest.approx(roc_auc_score(scores["label"], scores["score"], max_fpr=0.1), abs=1e-12)
        assert auc["mean"] == pytest.approx(np.mean(auc["per_seed"]))
    markdown = (folder / "results.md").read_text()
    assert "python reproduce.py --protocol tiny" in markdown
    option_lines = {line.split(":")[0][2:]: line for line in markdown.splitlines() if line.startswith("- ")}
    assert "--segment_length 256" in option_lines["grlnet_standard"]
    assert "--seed 0" in option_lines["dcase_autoencoder"]
    assert "--segment_length" not in option_lines["dcase_autoencoder"]  # GRLNet-only: the baseline ignores it
    latex = (folder / "results.tex").read_text()
    assert "\\caption{tiny: final-epoch AUC" in latex and latex.count("\\begin{tabular}") == 1
    for method in METHODS:  # each method's row holds the mean and std of results.json
        auc, pauc = methods[method]["auc"], methods[method]["pauc"]
        assert (f"{LABELS[method]} & ${auc['mean']:.4f} \\pm {auc['std']:.4f}$ & "
                f"${pauc['mean']:.4f} \\pm {pauc['std']:.4f}$ \\\\") in latex.splitlines()
    for name in ("auc_per_epoch.png", "score_distributions.png"):
        assert (folder / name).read_bytes().startswith(PNG_SIGNATURE)
    baseline_run = methods["dcase_autoencoder"]["runs"][0]
    assert baseline_run["seconds"] > 0
    # GRLNet's diagnostic: each score term's AUC alone, from the run's metrics.csv; the baseline has none
    lines, keys = markdown.splitlines(), ("auc_d_real", "auc_d_regional", "auc_d_local")
    assert "| method | D(x) alone | D(R(x)) alone | D(Lo(x)) alone |" in lines
    for method in ("grlnet_standard", "grlnet_released"):
        run = methods[method]["runs"][0]
        final = read_columns(Path(run["output_dir"]) / "metrics.csv")
        assert [run[key] for key in keys] == [final[key][-1] for key in keys]
        cells = " | ".join(f"{methods[method][key]['mean']:.4f} ± 0.0000" for key in keys)
        assert f"| {LABELS[method]} | {cells} |" in lines
    assert not [line for line in lines if line.startswith(f"| {LABELS['dcase_autoencoder']} | n/a")]
    # every score's AUC, mean ± std and per seed, from the run's metrics.csv, beside the baseline's AUC
    for method in ("grlnet_standard", "grlnet_released"):
        final = read_columns(Path(methods[method]["runs"][0]["output_dir"]) / "metrics.csv")
        for name in ("paper", "encoder_mahalanobis", "discriminator_knn"):
            value = final[f"auc_{name}"][-1]
            assert f"| {LABELS[method]}: {name} | {value:.4f} ± 0.0000 | {value:.4f} |" in lines
    auc = methods["dcase_autoencoder"]["auc"]["mean"]
    assert f"| {LABELS['dcase_autoencoder']} | {auc:.4f} ± 0.0000 | {auc:.4f} |" in lines
    assert f"| DCASE 2020 autoencoder | seed 0: {baseline_run['seconds'] / 60:.1f} min |" in markdown


def test_parallel_runs_give_the_serial_results(serial_out, tmp_path):
    run_script("reproduce.py", "--protocol", "tiny", "--out", str(tmp_path), "--jobs", "3", timeout=120)
    serial, parallel = (json.loads((out / "tiny" / "results.json").read_text())["tasks"]["tiny"]["methods"]
                        for out in (serial_out, tmp_path))
    for method in METHODS:
        assert parallel[method]["auc"]["per_seed"] == serial[method]["auc"]["per_seed"]
        assert parallel[method]["pauc"]["per_seed"] == serial[method]["pauc"]["per_seed"]
        assert parallel[method]["runs"][0]["output_dir"].startswith(str(tmp_path))


def test_reuse_keeps_finished_runs_and_reruns_changed_ones(tmp_path):
    """A run is kept when its stored options match, and run again when they differ."""
    first = ["reproduce.py", "--protocol", "tiny", "--out", str(tmp_path), "--methods", "grlnet_standard"]
    run_script(*first, timeout=120)
    metrics_csv = tmp_path / "tiny" / "grlnet_standard" / "seed0" / "metrics.csv"
    written = metrics_csv.stat().st_mtime_ns
    auc = json.loads((tmp_path / "tiny" / "results.json").read_text())["tasks"]["tiny"]["methods"][
        "grlnet_standard"]["auc"]["per_seed"]

    again = run_script(*first, "--reuse", timeout=120)
    assert "(earlier run, --reuse)" in again.stdout
    assert metrics_csv.stat().st_mtime_ns == written
    results = json.loads((tmp_path / "tiny" / "results.json").read_text())
    assert results["methods"] == ["grlnet_standard"]
    assert results["tasks"]["tiny"]["methods"]["grlnet_standard"]["auc"]["per_seed"] == auc
    assert results["tasks"]["tiny"]["methods"]["grlnet_standard"]["runs"][0]["seconds"] is None
    assert "| GRLNet, standard update | seed 0: earlier |" in (tmp_path / "tiny" / "results.md").read_text()
    assert not (tmp_path / "tiny" / "dcase_autoencoder").exists()

    options_json = metrics_csv.parent / "options.json"  # as written before --learning_rate_scaling existed
    options = json.loads(options_json.read_text())
    del options["learning_rate_scaling"]
    options_json.write_text(json.dumps(options))
    assert "(earlier run, --reuse)" in run_script(*first, "--reuse", timeout=120).stdout

    changed = run_script(*first, "--reuse", "--grlnet_args", "--alpha 0.4", timeout=120)
    assert "(earlier run, --reuse)" not in changed.stdout
    assert metrics_csv.stat().st_mtime_ns != written


def test_ctrl_c_stops_every_run_at_a_checkpoint_and_reuse_continues_them(tmp_path):
    """SIGINT to reproduce.py alone: it passes it on to the runs in flight, each saves and stops;
    --reuse then continues each from its checkpoint instead of training it again."""
    command = ["reproduce.py", "--protocol", "tiny", "--out", str(tmp_path), "--methods", "grlnet_standard",
               "--seeds", "0", "1", "--jobs", "2", "--epochs", "8"]
    runs = [tmp_path / "tiny" / "grlnet_standard" / f"seed{seed}" for seed in (0, 1)]
    process = subprocess.Popen([sys.executable, *command], cwd=REPO, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not all((run / "metrics.csv").is_file() for run in runs) and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output
    assert "interrupted: run the same command with --reuse to continue" in output
    first_epochs = [(run / "metrics.csv").read_text().splitlines()[1] for run in runs]
    assert all(load_file(run / "checkpoints" / "last.pt")["epoch"] < 8 for run in runs)

    continued = run_script(*command, "--reuse", timeout=300)
    for seed, run, first_epoch in zip((0, 1), runs, first_epochs, strict=True):
        continuing = f"grlnet_standard seed {seed}: continuing the interrupted run from its last checkpoint"
        assert continuing in continued.stdout
        assert "resumed from" in (run / "train.log").read_text()
        lines = (run / "metrics.csv").read_text().splitlines()
        assert len(lines) == 9 and lines[1] == first_epoch  # epoch 0, with its timing, was not trained again
    results = json.loads((tmp_path / "tiny" / "results.json").read_text())
    assert all(run["resumed"] for run in results["tasks"]["tiny"]["methods"]["grlnet_standard"]["runs"])
    assert " min (resumed)" in (tmp_path / "tiny" / "results.md").read_text()

    again = run_script(*command, "--reuse", timeout=120)  # finished now, though resumed
    assert "(earlier run, --reuse)" in again.stdout


def test_a_failing_run_is_named(tmp_path):
    result = run_script("reproduce.py", "--protocol", "tiny", "--out", str(tmp_path), "--methods",
                        "grlnet_standard", "--grlnet_args", f"--resume {tmp_path / 'missing.pt'}", check=False)
    assert result.returncode == 2
    assert ("error: [tiny] grlnet_standard seed 0 failed (exit status 2, its output is above)"
            in result.stdout), result.stdout
    assert f"error: {tmp_path / 'missing.pt'}: checkpoint not found" in result.stdout


def test_fp32_method_runs_without_bf16_and_compile_and_matches_on_cpu(tmp_path):
    """grlnet_fp32 (the GPU precision comparison) turns bf16 and compile off; on CPU, where neither
    applies, it is the same run as grlnet_standard, so the two must agree exactly."""
    run_script("reproduce.py", "--protocol", "tiny", "--out", str(tmp_path),
               "--methods", "grlnet_standard", "grlnet_fp32", timeout=120)
    folder = tmp_path / "tiny"
    options = {method: json.loads((folder / method / "seed0" / "options.json").read_text())
               for method in ("grlnet_standard", "grlnet_fp32")}
    assert (options["grlnet_fp32"]["bf16"], options["grlnet_fp32"]["compile"]) == (False, False)
    assert (options["grlnet_standard"]["bf16"], options["grlnet_standard"]["compile"]) == (True, True)
    for method in ("grlnet_standard", "grlnet_fp32"):
        assert "device cpu, fp32" in (folder / method / "seed0" / "train.log").read_text()
    methods = json.loads((folder / "results.json").read_text())["tasks"]["tiny"]["methods"]
    assert methods["grlnet_fp32"]["runs"][0]["auc_per_epoch"] == methods["grlnet_standard"]["runs"][0]["auc_per_epoch"]
    assert "GRLNet, standard update, fp32 eager" in (folder / "results.md").read_text()


def test_latex_tables_escape_the_names_latex_reads_as_commands():
    assert latex_text("mimii_fan_id02: 50% & #1 for $5") == r"mimii\_fan\_id02: 50\% \& \#1 for \$5"


def _write_tone(path, frequency: float, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(800) / 16000
    noise = np.random.default_rng(seed).normal(0, 0.01, t.size)
    soundfile.write(path, (0.3 * np.sin(2 * np.pi * frequency * t) + noise).astype(np.float32), 16000)


def test_folders_protocol_runs_each_data_set_of_a_folder(tmp_path):
    """Your own data: each sub-folder in a DCASE or MIMII layout is a task; other folders are skipped."""
    data = tmp_path / "data"
    for i in range(3):
        _write_tone(data / "fan" / "train" / f"normal_id_00_{i:08d}.wav", 440, i)
        _write_tone(data / "pump" / "normal" / f"{i:08d}.wav", 440, i)
    for i, label in enumerate(("normal", "anomaly")):
        _write_tone(data / "fan" / "test" / f"{label}_id_00_{i:08d}.wav", 440 + 500 * i, 10 + i)
    _write_tone(data / "pump" / "abnormal" / "00000000.wav", 940, 20)
    (data / "notes").mkdir()
    run_script("reproduce.py", "--protocol", "folders", "--data_dir", str(data), "--out", str(tmp_path / "out"),
               "--methods", "grlnet_standard", "--seeds", "0", "--epochs", "1", "--mess_length", "768",
               "--grlnet_args", "--segment_length 256 --segment_hop 256", timeout=120)
    tasks = json.loads((tmp_path / "out" / "folders" / "results.json").read_text())["tasks"]
    assert list(tasks) == ["fan", "pump"]
    for name in ("fan", "pump"):
        (only,) = tasks[name]["methods"]["grlnet_standard"]["runs"]
        assert only["output_dir"] == str(tmp_path / "out" / "folders" / name / "grlnet_standard" / "seed0")
        assert f"--data_root {data / name}" in " ".join(only["argv"])
    assert (tmp_path / "out" / "folders" / "fan" / "grlnet_standard" / "seed0" / "machine_ids.csv").is_file()
    fan, pump = (tasks[name]["methods"]["grlnet_standard"] for name in ("fan", "pump"))
    assert fan["runs"][0]["id_average_auc"] == fan["runs"][0]["auc"]  # one machine id: its mean is the pooled AUC
    assert fan["id_average_auc"]["mean"] == fan["auc"]["mean"] and "id_average_auc" not in pump
    assert "| method | AUC, mean over machine ids | pAUC, mean over machine ids |" in (
        tmp_path / "out" / "folders" / "results.md").read_text()
    latex = (tmp_path / "out" / "folders" / "results.tex").read_text().splitlines()
    assert "Method & AUC & pAUC & AUC, mean over machine ids & pAUC, mean over machine ids \\\\" in latex
    assert "Method & AUC & pAUC \\\\" in latex  # pump: MIMII names give no machine ids
    with pytest.raises(UserError, match="notes: neither a data set nor a folder of data sets"):
        folder_tasks(data / "notes", tmp_path / "out")
    assert [task.name for task in folder_tasks(data / "pump", tmp_path / "out")] == ["pump"]


def test_the_baselines_result_has_the_mean_over_machine_ids(tmp_path):
    """From its scores.csv alone (it writes no metrics.csv): id 00 AUC 0.5, id 02 AUC 1.0, pooled 7/9."""
    rows = [("normal_id_00_0.wav", 0, 0.1), ("normal_id_00_1.wav", 0, 0.5), ("anomaly_id_00_0.wav", 1, 0.3),
            ("normal_id_02_0.wav", 0, 0.4), ("anomaly_id_02_0.wav", 1, 0.6), ("anomaly_id_02_1.wav", 1, 0.9)]
    (tmp_path / "scores.csv").write_text("file,label,score\n" + "".join(f"test/{n},{y},{v}\n" for n, y, v in rows))
    result = run_result("dcase_autoencoder", str(tmp_path))
    assert result["auc"] == pytest.approx(7 / 9)
    assert result["id_average_auc"] == pytest.approx(0.75)
    assert result["id_average_pauc"] == pytest.approx((9 / 19 + 1) / 2)  # id 00: 9/19, as in test_metrics
    assert "official_score" not in result


def test_lite_smoke_splits_each_machines_test_folder_into_links(tmp_path):
    """Two normal clips of <machine>/test/ train, the rest test, as links to the originals in split/."""
    lite = tmp_path / "data" / "dcase2020_lite"
    for i in range(3):
        _write_tone(lite / "valve" / "test" / f"normal_id_00_{i:08d}.wav", 440, i)
    for i in range(2):
        _write_tone(lite / "valve" / "test" / f"anomaly_id_00_{i:08d}.wav", 940, 10 + i)
        _write_tone(lite / "fan" / "test" / f"normal_id_00_{i:08d}.wav", 440, i)
    _write_tone(lite / "fan" / "test" / "anomaly_id_00_00000000.wav", 940, 20)
    with pytest.raises(UserError, match=r"fan/test: 2 normal clips; the smoke split needs more than 2"):
        lite_tasks(tmp_path / "data", tmp_path / "out")
    for clip in (lite / "fan" / "test").iterdir():
        clip.unlink()
    (lite / "fan" / "test").rmdir()  # a machine without test/ is not a task
    (task,) = lite_tasks(tmp_path / "data", tmp_path / "out")
    split = tmp_path / "out" / "valve" / "split"
    assert (task.name, task.folder) == ("valve", tmp_path / "out" / "valve")
    assert task.data_args == ["--data_root", str(split), "--train_normal_files", "2"]
    normal, abnormal = (sorted((split / kind).iterdir()) for kind in ("normal", "abnormal"))
    assert [p.name for p in normal] == [f"normal_id_00_{i:08d}.wav" for i in range(3)]
    assert [p.name for p in abnormal] == [f"anomaly_id_00_{i:08d}.wav" for i in range(2)]
    assert all(p.is_symlink() and p.resolve() == (lite / "valve" / "test" / p.name).resolve()
               for p in normal + abnormal)


def test_mimii_rotations_train_five_other_normal_clips_in_each_split(shared_data, tmp_path):
    normal = sorted(p.resolve() for p in (shared_data / "mimii_fan_id02" / "normal").iterdir())
    tasks = mimii_rotation_tasks(shared_data, tmp_path)
    assert [task.name for task in tasks] == [f"mimii_fan_id02_split{r}" for r in range(5)]
    for rotation, task in enumerate(tasks):
        train, test = split_data_root(task.data_args[1], int(task.data_args[3]))
        trained = [path.resolve() for path, _ in train]
        assert trained == [normal[(2 * rotation + i) % 10] for i in range(5)]
        assert sorted(p.resolve() for p, label in test if label == 0) == sorted(set(normal) - set(trained))
        assert sum(label for _, label in test) == 10
    first, _ = split_data_root(shared_data / "mimii_fan_id02", 5)
    assert [p.resolve() for p, _ in first] == [p.resolve() for p, _ in split_data_root(tasks[0].data_args[1], 5)[0]]


@pytest.mark.parametrize("grlnet_args, stream, message", [
    ("--no-bf16", "stdout", "error: --grlnet_args may not set --bf16: reproduce.py sets it for every run"),
    ("--seed=3", "stdout", "error: --grlnet_args may not set --seed"),
    ("--overwrite", "stdout", "error: --grlnet_args may not set --overwrite"),
    ("--upd released", "stderr", "error: unrecognized arguments: --upd released"),
])
def test_grlnet_args_may_not_set_what_each_run_sets(grlnet_args, stream, message, tmp_path):
    """reproduce.py sets these per run; the negated and abbreviated spellings are caught too."""
    result = run_script("reproduce.py", "--protocol", "tiny", "--out", str(tmp_path),
                        f"--grlnet_args={grlnet_args}", check=False)
    assert result.returncode == 2
    assert message in getattr(result, stream), (result.stdout, result.stderr)
    assert not (tmp_path / "tiny" / "results.json").exists()


def test_a_missing_data_set_names_the_folder_and_the_option(tmp_path):
    with pytest.raises(UserError, match=r"mimii_fan_id02: data folder not found \(give --data_dir"):
        mimii_tasks(tmp_path, tmp_path / "out")
