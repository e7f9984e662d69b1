"""Data layouts on small temporary files and on the real recordings, and the embedded data set."""
import csv
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile
from conftest import csv_opts, tone, write_mimii_set, write_release_csv, write_wav
from sklearn.metrics import roc_auc_score

from data import datasets, layouts, load_datasets, load_unlabelled
from data.console import UserError
from data.synthetic import make_synthetic_set
from experiments.baselines.dcase_autoencoder import main as baseline_main
from experiments.baselines.dcase_autoencoder import parse_baseline_args
from main import test as score_checkpoint
from main import train
from opts import data_settings, parse_opts, parse_test_args, scoring_settings


def test_release_csv_layout(tmp_path):
    rng = np.random.default_rng(0)
    train = write_release_csv(tmp_path / "train", [rng.normal(size=300) for _ in range(3)], [0, 0, 0])
    signals = [rng.normal(size=n) for n in (100, 300, 500, 200)]
    test = write_release_csv(tmp_path / "test", signals, [0, 1, 0, 3])
    opt = csv_opts(*train, *test, "--mess_length", "256")
    assert opt.data_kind == "csv" and opt.epochs == 1 and opt.batch_size == 2
    train_set, test_set = load_datasets(data_settings(opt))
    assert train_set.signals.shape == (3, 256) and test_set.signals.shape == (4, 256)
    np.testing.assert_allclose(test_set.signals[0, :100], signals[0], rtol=1e-6)
    assert not test_set.signals[0, 100:].any()  # zero-padded
    np.testing.assert_allclose(test_set.signals[2], signals[2][:256], rtol=1e-6)  # cut
    assert test_set.labels.tolist() == [0, 1, 0, 3]
    assert test_set.binary_labels().tolist() == [0, 1, 0, 1]


def test_release_csv_files_may_be_named_in_capitals(tmp_path):
    rng = np.random.default_rng(1)
    folder, labels = write_release_csv(tmp_path / "test", [rng.normal(size=256) for _ in range(2)], [0, 1])
    for path in folder.glob("*.csv"):
        path.rename(path.with_suffix(".CSV"))
    assert [(Path(path).name, label) for path, label in layouts.csv_items(folder, labels)] == [("0.CSV", 0), ("1.CSV", 1)]


def test_release_defaults_apply_to_csv_layout(tmp_path):
    train = write_release_csv(tmp_path / "train", [np.ones(10)], [0])
    opt = csv_opts(*train, *train)
    assert (opt.mess_length, opt.segment_length, opt.epochs, opt.batch_size) == (233472, 0, 1, 2)


def test_dcase_layout_and_resampling(tmp_path):
    for i in range(2):
        write_wav(tmp_path / "train" / f"normal_id_00_{i:08d}.wav", tone(seed=i))
    write_wav(tmp_path / "test" / "normal_id_00_00000009.wav", tone(seed=5))
    write_wav(tmp_path / "test" / "anomaly_id_00_00000001.wav", tone(frequency=900, seed=6))
    opt = parse_opts(["--data_root", str(tmp_path), "--mess_length", "1600", "--segment_length", "0"])
    train_set, test_set = load_datasets(data_settings(opt))
    assert len(train_set) == 2 and test_set.labels.tolist() == [1, 0]  # name order: anomaly_ first
    expected = soundfile.read(tmp_path / "test" / "anomaly_id_00_00000001.wav", dtype="float32")[0]
    np.testing.assert_allclose(test_set.signals[0], expected[:1600])
    resampled = parse_opts(["--data_root", str(tmp_path), "--mess_length", "1600", "--sample_rate", "8000",
                           "--segment_length", "512"])
    _, test_8k = load_datasets(data_settings(resampled))
    assert np.count_nonzero(test_8k.signals[0]) == pytest.approx(800, abs=2)  # 0.1 s at 8 kHz, padded


def test_dcase_2021_to_2024_names(tmp_path):
    """Sections and domains in the names (DCASE 2021-2024); a name without a label token is refused."""
    for i, domain in enumerate(("source", "target")):
        write_wav(tmp_path / "train" / f"section_00_{domain}_train_normal_{i:04d}_a1.wav", tone(seed=i))
    names = ["section_00_source_test_normal_0000_vel_8.wav", "section_01_target_test_anomaly_0003_vel_4.wav",
             "Section_02_Source_Test_Anomaly_0001.wav"]
    for i, name in enumerate(names):
        write_wav(tmp_path / "test" / name, tone(frequency=300 + 300 * i, seed=i))
    train_set, test_set = load_datasets(data_settings(parse_opts(["--data_root", str(tmp_path), "--mess_length", "1024"])))
    assert len(train_set) == 2 and train_set.labels.tolist() == [0, 0]
    assert {Path(n).name: y for n, y in zip(test_set.names, test_set.labels.tolist(), strict=True)} == {
        names[0]: 0, names[1]: 1, names[2]: 1}
    unlabelled = tmp_path / "test" / "section_00_source_test_0004.wav"
    write_wav(unlabelled, tone(seed=9))
    with pytest.raises(UserError, match="section_00_source_test_0004.wav: cannot tell its label"):
        load_datasets(data_settings(parse_opts(["--data_root", str(tmp_path), "--mess_length", "1024"])))


def write_dcase_2021_set(root: Path, seconds: float) -> Path:
    """Three normal training clips and five test clips of section 00, both domains, DCASE 2021-2024 names."""
    for i in range(3):
        write_wav(root / "train" / f"section_00_source_train_normal_{i:04d}.wav", tone(seconds, seed=i))
    for i, (domain, label) in enumerate([("source", "normal"), ("target", "normal"), ("source", "anomaly"),
                                         ("target", "anomaly"), ("target", "normal")]):
        write_wav(root / "test" / f"section_00_{domain}_test_{label}_{i:04d}.wav",
                  tone(seconds, frequency=300 + 200 * i, seed=10 + i))
    return root


def assert_sections_recomputed_from_scores(run: Path) -> None:
    """sections.csv's AUC per domain = that domain's normal clips against every anomaly, from scores.csv."""
    with open(run / "scores.csv") as handle:
        rows = list(csv.DictReader(handle))
    score = {}  # (domain, label) -> scores
    for r in rows:
        score.setdefault((Path(r["file"]).name.split("_")[2], r["label"]), []).append(float(r["score"]))
    anomalies = score["source", "1"] + score["target", "1"]
    with open(run / "sections.csv") as handle:
        (section,) = csv.DictReader(handle)
    assert section["section"] == "00"
    for domain in ("source", "target"):
        normals = score[domain, "0"]
        expected = roc_auc_score([0] * len(normals) + [1] * len(anomalies), normals + anomalies)
        assert float(section[f"auc_{domain}"]) == pytest.approx(expected, abs=1e-12)


def test_dcase_2021_to_2024_sets_get_per_section_metrics(tmp_path, capsys):
    """train.py and test.py report each section's AUC per domain and pAUC, from the final scores."""
    write_dcase_2021_set(tmp_path, 0.05)
    run = tmp_path / "run"
    train(parse_opts(["--data_root", str(tmp_path), "--mess_length", "768", "--segment_length", "256",
                      "--epochs", "1", "--quiet", "--output_dir", str(run)]))
    assert "DCASE official score (harmonic mean of the above)" in capsys.readouterr().out
    assert_sections_recomputed_from_scores(run)
    with open(run / "metrics.csv") as handle:
        assert "official_score" in next(csv.DictReader(handle))

    score_checkpoint(parse_test_args(["--checkpoint", str(run / "checkpoints" / "last.pt"), "--output_dir",
                                      str(tmp_path / "again"), "--quiet"]))
    assert (tmp_path / "again" / "sections.csv").read_text() == (run / "sections.csv").read_text()
    assert "section 00: AUC source" in capsys.readouterr().out


def test_dcase_2020_sets_get_metrics_per_machine_id(tmp_path, capsys):
    """DCASE 2020 names: each machine id's AUC and pAUC and their mean, as the DCASE 2020 baseline's result.csv."""
    for machine_id in ("00", "02"):
        for i in range(2):
            write_wav(tmp_path / "train" / f"normal_id_{machine_id}_{i:08d}.wav", tone(0.05, seed=i))
        for i, label in enumerate(("normal", "normal", "anomaly", "anomaly")):
            write_wav(tmp_path / "test" / f"{label}_id_{machine_id}_{i:08d}.wav",
                      tone(0.05, frequency=300 + 200 * i, seed=20 + i + int(machine_id)))
    run = tmp_path / "run"
    train(parse_opts(["--data_root", str(tmp_path), "--mess_length", "768", "--segment_length", "256",
                      "--epochs", "1", "--quiet", "--output_dir", str(run)]))
    assert "machine id 02: AUC" in capsys.readouterr().out
    with open(run / "scores.csv") as handle:
        by_id = {}  # id -> (labels, scores)
        for r in csv.DictReader(handle):
            labels, scores = by_id.setdefault(Path(r["file"]).name.split("_")[2], ([], []))
            labels.append(int(r["label"]))
            scores.append(float(r["score"]))
    with open(run / "machine_ids.csv") as handle:
        rows = {r["id"]: r for r in csv.DictReader(handle)}
    assert list(rows) == ["00", "02", "average"]
    for machine_id, (labels, scores) in by_id.items():
        assert float(rows[machine_id]["auc"]) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
        assert float(rows[machine_id]["pauc"]) == pytest.approx(roc_auc_score(labels, scores, max_fpr=0.1),
                                                                abs=1e-12)
    for column in ("auc", "pauc"):
        assert float(rows["average"][column]) == pytest.approx(
            (float(rows["00"][column]) + float(rows["02"][column])) / 2, abs=1e-12)


def test_the_baseline_gets_the_same_per_section_metrics(tmp_path, capsys):
    """The DCASE autoencoder baseline on DCASE 2021-2024 names: sections.csv from its scores, on screen too."""
    write_dcase_2021_set(tmp_path, 0.3)
    run = tmp_path / "baseline"
    baseline_main(parse_baseline_args(["--data_root", str(tmp_path), "--mess_length", "4096", "--output_dir",
                                       str(run), "--baseline_epochs", "2"]))
    assert "DCASE official score (harmonic mean of the above)" in capsys.readouterr().out
    assert_sections_recomputed_from_scores(run)


def test_training_folder_names_need_no_label(tmp_path):
    """Training folders hold normal recordings only, so any name is normal there; not in a test folder."""
    for i, name in enumerate(("pump_2026-11-01.wav", "pump_2026-11-02.wav")):
        write_wav(tmp_path / "mine" / name, tone(seed=i))
    write_wav(tmp_path / "test" / "normal" / "a.wav", tone(seed=3))
    write_wav(tmp_path / "test" / "abnormal" / "b.wav", tone(frequency=900))
    opt = parse_opts(["--train_root", str(tmp_path / "mine"), "--test_root", str(tmp_path / "test"),
                      "--mess_length", "1024"])
    train_set, _ = load_datasets(data_settings(opt))
    assert [Path(n).name for n in train_set.names] == ["pump_2026-11-01.wav", "pump_2026-11-02.wav"]
    assert train_set.labels.tolist() == [0, 0]
    write_wav(tmp_path / "mine" / "anomaly_0001.wav", tone(frequency=900))
    with pytest.raises(UserError, match="anomaly_0001.wav: the training set holds 1 abnormal file"):
        load_datasets(data_settings(opt))
    swapped = parse_opts(["--train_root", str(tmp_path / "test"), "--test_root", str(tmp_path / "mine"),
                          "--mess_length", "1024"])
    with pytest.raises(UserError, match="pump_2026-11-01.wav: cannot tell its label"):
        load_datasets(data_settings(swapped))


def test_mimii_layout_split(tmp_path):
    for i in range(4):
        write_wav(tmp_path / "normal" / f"{i:08d}.wav", tone(seed=i))
    write_wav(tmp_path / "abnormal" / "00000000.wav", tone(frequency=900))
    opt = parse_opts(["--data_root", str(tmp_path), "--mess_length", "1024", "--train_normal_files", "3"])
    train_set, test_set = load_datasets(data_settings(opt))
    assert [Path(n).name for n in train_set.names] == ["00000000.wav", "00000001.wav", "00000002.wav"]
    assert test_set.labels.tolist() == [0, 1]
    assert opt.segment_length == 1024 and opt.data_kind == "wav"


def test_a_dcase_folder_is_split_already(tmp_path):
    write_wav(tmp_path / "train" / "normal_id_00_00000000.wav", tone())
    write_wav(tmp_path / "test" / "anomaly_id_00_00000000.wav", tone(frequency=900))
    with pytest.raises(UserError, match=r"--train_normal_files splits normal/ in the MIMII layout; this folder's "
                                        r"train/ and test/ \(DCASE layout\) are already split"):
        load_datasets(data_settings(parse_opts(["--data_root", str(tmp_path), "--train_normal_files", "1"])))


def test_windows_and_clip_index():
    from data import ClipSet
    clips = ClipSet(["a", "b"], np.arange(20, dtype=np.float32).reshape(2, 10), np.array([0, 1]))
    windows, index = clips.windows(4, 3)  # starts 0, 3, 6 in each clip
    assert windows.shape == (6, 1, 4) and index.tolist() == [0, 0, 0, 1, 1, 1]
    assert windows[4, 0].tolist() == [13, 14, 15, 16]
    whole, index = clips.windows(0, 0)
    assert whole.shape == (2, 1, 10) and index.tolist() == [0, 1]


def test_unlabelled_files_and_folders(tmp_path):
    write_wav(tmp_path / "a" / "x.wav", tone())
    np.savetxt(tmp_path / "y.csv", tone()[:300])
    opt = parse_opts(["--mess_length", "512", "--segment_length", "0", "--quiet"])
    clips = load_unlabelled([str(tmp_path / "a"), str(tmp_path / "y.csv")], data_settings(opt))
    assert clips.labels is None and clips.signals.shape == (2, 512)


def test_a_folder_to_score_gives_its_audio_and_signal_files_not_other_csv_files(tmp_path):
    """A score file written into the folder, a label file and DCASE's attribute tables are not signals."""
    write_wav(tmp_path / "in" / "x.WAV", tone())
    (tmp_path / "in" / "more").mkdir()
    np.savetxt(tmp_path / "in" / "more" / "2.CSV", tone()[:300])
    (tmp_path / "in" / "scores.csv").write_text("file,label,score\nx.WAV,,0.5\n")
    (tmp_path / "in" / "attributes_00.csv").write_text("file_name,d1p,d1v\nx.wav,a,1\n")
    opt = parse_opts(["--mess_length", "512", "--segment_length", "0", "--quiet"])
    clips = load_unlabelled([str(tmp_path / "in")], data_settings(opt))
    assert [Path(name).name for name in clips.names] == ["2.CSV", "x.WAV"]
    np.testing.assert_allclose(clips.signals[0, :300], tone()[:300], rtol=1e-6)
    only_other = tmp_path / "other"
    only_other.mkdir()
    (only_other / "labels.csv").write_text("label\n0\n")
    with pytest.raises(UserError, match=f"^{only_other}: no audio .* or <index>.csv signal files"):
        load_unlabelled([str(only_other)], data_settings(opt))


def test_synthetic_set_is_deterministic_and_not_separable_by_level():
    a, labels = make_synthetic_set(7, 4096, 100, 100)
    b, _ = make_synthetic_set(7, 4096, 100, 100)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, make_synthetic_set(8, 4096, 100, 100)[0])
    rms_auc = roc_auc_score(labels, np.sqrt((a ** 2).mean(1)))
    assert 0.35 < rms_auc < 0.65  # the gain is random: loudness says nothing about the class


def test_real_mimii_recordings(shared_data):
    opt = parse_opts(["--data_root", str(shared_data / "mimii_fan_id02"), "--train_normal_files", "5",
                      "--mess_length", "16000", "--quiet"])
    train_set, test_set = load_datasets(data_settings(opt))
    assert len(train_set) == 5 and len(test_set) == 15 and test_set.binary_labels().sum() == 10
    assert train_set.sample_rate == test_set.sample_rate == 16000
    assert np.abs(train_set.signals).max() <= 1.0 and train_set.signals.std() > 1e-4


def test_real_dcase_recordings(shared_data):
    opt = parse_opts(["--data_root", str(shared_data / "dcase2020_slider_id00"), "--mess_length", "4096",
                      "--quiet"])
    train_set, test_set = load_datasets(data_settings(opt))
    assert len(train_set) == 75 and test_set.binary_labels().tolist().count(1) == 3


def test_real_lite_folder_labelled_by_names(shared_data):
    opt = parse_opts(["--train_root", str(shared_data / "dcase2020_lite" / "valve" / "test"),
                      "--test_root", str(shared_data / "dcase2020_lite" / "valve" / "test"),
                      "--mess_length", "2048"])
    with pytest.raises(UserError, match="training set holds 3 abnormal"):
        load_datasets(data_settings(opt))


def test_untrained_model_scores_the_demo_set_near_chance_with_the_papers_score():
    import torch

    from grlnet.metrics import compute_metrics
    from grlnet.scoring import score_clips
    from network import GRLNet
    from opts import network_length

    opt = parse_opts(["--quiet", "--score", "paper"])  # the demo preset
    torch.manual_seed(0)
    _, test_set = load_datasets(data_settings(opt))
    scores = score_clips(GRLNet(network_length(opt)), test_set, scoring_settings(opt), torch.device("cpu"))
    assert 0.35 < compute_metrics(test_set.binary_labels(), scores["paper"])["auc"] < 0.65


def test_memory_needed_counts_signals_twice_and_the_training_windows():
    opt = parse_opts(["--mess_length", "1000", "--segment_length", "100", "--segment_hop", "50"])
    assert datasets.memory_needed(10, data_settings(opt)) == 2 * 10 * 1000 * 4 + 10 * 1000 * 4 * 2  # windows overlap by half
    whole = parse_opts(["--mess_length", "1000", "--segment_length", "0"])
    assert datasets.memory_needed(10, data_settings(whole)) == 3 * 10 * 1000 * 4


def test_a_data_set_larger_than_the_memory_available_is_refused_before_decoding(tmp_path, monkeypatch):
    root = write_mimii_set(tmp_path)
    opt = parse_opts(["--data_root", str(root), "--mess_length", "1024", "--segment_length", "1024"])
    files = len(list(root.rglob("*.wav")))
    monkeypatch.setattr(datasets, "available_memory", lambda: datasets.memory_needed(files, data_settings(opt)) - 1)
    monkeypatch.setattr(datasets, "read_wav", lambda *args: pytest.fail("decoded a file"))
    with pytest.raises(UserError, match=rf"^{files} files of 1024 samples need about 0.0 GiB of memory and 0.0 GiB "
                                        "is available; use fewer files, a shorter --mess_length or a larger "
                                        "--segment_hop$"):
        load_datasets(data_settings(opt))
    monkeypatch.undo()
    train_set, test_set = load_datasets(data_settings(opt))
    assert len(train_set) + len(test_set) == files


def test_a_second_load_reads_the_decoded_cache_and_repeats_the_first_loads_checks(tmp_path, monkeypatch, caplog,
                                                                                  request):
    root = write_mimii_set(tmp_path / "data")
    write_wav(root / "normal" / "2.wav", tone(seconds=0.02, seed=2))  # shorter than half of --mess_length
    opt = parse_opts(["--data_root", str(root), "--mess_length", "1024", "--segment_length", "256", "--quiet"])
    data_log = logging.getLogger("grlnet.data")  # the scripts' log may not reach the root logger caplog reads
    data_log.addHandler(caplog.handler)
    request.addfinalizer(lambda: data_log.removeHandler(caplog.handler))
    first = load_datasets(data_settings(opt))
    first_warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("shorter than half of --mess_length 1024" in message for message in first_warnings)
    caplog.clear()
    monkeypatch.setattr(datasets, "read_wav", lambda *args: pytest.fail("decoded a file again"))
    again = load_datasets(data_settings(opt))
    for before, after in zip(first, again, strict=True):
        assert after.names == before.names and np.array_equal(after.signals, before.signals)
        assert np.array_equal(after.labels, before.labels) and after.sample_rate == before.sample_rate == 16000
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == first_warnings
    with pytest.raises(UserError, match=r"2.wav: 320 samples, shorter than one window \(--segment_length 512\)"):
        load_datasets(data_settings(parse_opts(["--data_root", str(root), "--mess_length", "1024", "--segment_length", "512"])))
    write_wav(root / "normal" / "0.wav", tone(seed=7))  # a changed file is decoded again
    monkeypatch.undo()
    assert not np.array_equal(load_datasets(data_settings(opt))[0].signals[0], first[0].signals[0])


def test_no_cache_neither_reads_nor_writes_the_decoded_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = write_mimii_set(tmp_path / "data")
    load_datasets(data_settings(parse_opts(["--data_root", str(root), "--mess_length", "1024", "--no-cache"])))
    assert not (tmp_path / "cache").exists()
    load_datasets(data_settings(parse_opts(["--data_root", str(root), "--mess_length", "1024"])))
    assert len(list((tmp_path / "cache" / "grlnet" / "decoded").glob("*.npz"))) == 2  # training and test files
