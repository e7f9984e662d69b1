"""Recordings and label files that would otherwise give a traceback or a silently wrong result are refused."""
import logging
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile
from conftest import csv_opts, tone, write_mimii_set, write_release_csv, write_wav

from data import load_datasets
from data.console import UserError
from opts import data_settings, parse_opts


def _load_wav(root: Path, *extra: str):
    return load_datasets(data_settings(parse_opts(["--data_root", str(root), "--mess_length", "1024", "--segment_length",
                                     "256", "--train_normal_files", "1", "--quiet", *extra])))


def _refused(message: str, call) -> None:
    with pytest.raises(UserError, match=f"^{re.escape(message)}$"):
        call()


# ---------------------------------------------------------------- NaN and Inf in float WAV files

@pytest.mark.parametrize("channels, bad, message", [
    (1, np.nan, "sample 100 is nan (NaN or infinite values in 1 samples)"),
    (1, np.inf, "sample 100 is inf (NaN or infinite values in 1 samples)"),
    (2, -np.inf, "sample 100 is -inf (NaN or infinite values in 1 samples)"),  # stereo: the frame index
])
def test_non_finite_float_wav_names_the_sample_before_librosa(tmp_path, channels, bad, message):
    root = write_mimii_set(tmp_path)
    samples = np.stack([tone()] * channels, axis=1)
    samples[100, -1] = bad
    path = root / "normal" / "0.wav"
    soundfile.write(path, samples, 16000, subtype="FLOAT")
    _refused(f"{path}: {message}", lambda: _load_wav(root))


# ---------------------------------------------------------------- the release's label file

def _csv_sets(tmp_path: Path, test_files: int = 4):
    rng = np.random.default_rng(0)
    train = write_release_csv(tmp_path / "train", [rng.normal(size=64)], [0])
    test = write_release_csv(tmp_path / "test", [rng.normal(size=64) for _ in range(test_files)],
                             [0, 1] * (test_files // 2))
    return train, test


def _load_csv(train, test):
    return load_datasets(data_settings(csv_opts(*train, *test, "--mess_length", "64")))


def test_blank_label_line_is_refused_not_skipped(tmp_path):
    train, test = _csv_sets(tmp_path)
    test[1].write_text("label\n0\n\n1\n0\n1\n")
    _refused(f"{test[1]}, line 3: blank line; row i labels <i>.csv, so a skipped row would shift every "
             "later label onto the wrong file", lambda: _load_csv(train, test))


def test_blank_lines_at_the_end_shift_nothing(tmp_path):
    train, test = _csv_sets(tmp_path)
    test[1].write_text("label\n0\n1\n0\n3\n\n \n")
    assert _load_csv(train, test)[1].labels.tolist() == [0, 1, 0, 3]


@pytest.mark.parametrize("labels, count", [("0\n1\n0\n", 3), ("0\n1\n0\n1\n1\n1\n1\n", 7)])
def test_label_count_must_match_the_files(tmp_path, labels, count):
    train, test = _csv_sets(tmp_path)
    test[1].write_text("label\n" + labels)
    _refused(f"{test[1]}: {count} labels for 4 files in {test[0]}", lambda: _load_csv(train, test))


@pytest.mark.parametrize("label", ["inf", "-inf", "1e400", "nan"])
def test_infinite_or_huge_label_is_refused(tmp_path, label):
    train, test = _csv_sets(tmp_path)
    test[1].write_text(f"label\n0\n1\n{label}\n1\n")
    _refused(f"{test[1]}, line 4: label {label!r} is not one of 0, 1, 2, 3", lambda: _load_csv(train, test))


@pytest.mark.parametrize("header", ["\ufefflabel", " label ", "\ufeffid, label"])
def test_label_header_with_bom_or_spaces_is_read(tmp_path, header):
    train, test = _csv_sets(tmp_path)
    rows = "0\n1\n2\n3\n" if "," not in header else "a,0\nb,1\nc,2\nd,3\n"
    test[1].write_text(header + "\n" + rows, encoding="utf-8")
    assert _load_csv(train, test)[1].labels.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("content, problem", [
    ("\ufeffLabel, kind \n0,1\n", "the label file has no 'label' column (columns: 'Label', 'kind')"),  # as written
    ("label,label\n0,1\n1,0\n0,1\n1,0\n", "2 columns are named 'label'; which one labels the files is ambiguous"),
])
def test_a_label_column_is_found_once_or_refused(tmp_path, content, problem):
    train, test = _csv_sets(tmp_path)
    test[1].write_text(content)
    _refused(f"{test[1]}: {problem}", lambda: _load_csv(train, test))


def test_label_file_that_is_not_utf8_is_refused(tmp_path):
    train, test = _csv_sets(tmp_path)
    test[1].write_bytes(b"label\n0\n\xff\n")
    _refused(f"{test[1]}: the label file is not UTF-8 text (invalid start byte at byte 8)",
             lambda: _load_csv(train, test))


# ---------------------------------------------------------------- two data files for one index

def test_two_files_with_one_index_are_refused(tmp_path):
    train, test = _csv_sets(tmp_path)
    (test[0] / "01.csv").write_bytes((test[0] / "1.csv").read_bytes())
    _refused(f"{test[0] / '1.csv'}: same index 1 as 01.csv (row i of the label file labels one <i>.csv); "
             "remove or rename one of them", lambda: _load_csv(train, test))


# ---------------------------------------------------------------- truncated WAV files of any encoding

def _cut_data(path: Path, keep_bytes: int) -> None:
    """Cut a WAV file ``keep_bytes`` into its data chunk, leaving the header's size as it was."""
    content = path.read_bytes()
    start = content.index(b"data") + 8
    path.write_bytes(content[:start + keep_bytes])


@pytest.mark.parametrize("subtype, wav_format, channels, keep, message", [
    ("PCM_16", "WAV", 1, 2 * 500, "1600 samples but only 500"),
    ("PCM_24", "WAV", 2, 6 * 500 + 4, "1600 samples but only 500"),
    ("FLOAT", "WAV", 1, 4 * 500, "1600 samples but only 500"),
    ("FLOAT", "WAVEX", 2, 8 * 500 + 3, "1600 samples but only 500"),
    ("PCM_16", "WAVEX", 1, 2 * 700, "1600 samples but only 700"),
    ("IMA_ADPCM", "WAV", 1, 700, "1024 bytes of audio but only 700"),  # compressed: counted in bytes
])
def test_truncated_wav_of_any_encoding_is_refused(tmp_path, subtype, wav_format, channels, keep, message):
    root = write_mimii_set(tmp_path)
    path = root / "abnormal" / "0.wav"
    soundfile.write(path, np.stack([tone()] * channels, axis=1), 16000, subtype=subtype, format=wav_format)
    _cut_data(path, keep)
    _refused(f"{path}: truncated, the header announces {message} are in the file", lambda: _load_wav(root))


@pytest.mark.parametrize("subtype, wav_format", [("FLOAT", "WAVEX"), ("IMA_ADPCM", "WAV"), ("PCM_U8", "WAV")])
def test_complete_wav_of_any_encoding_is_accepted(tmp_path, subtype, wav_format):
    root = write_mimii_set(tmp_path)
    path = root / "abnormal" / "0.wav"
    soundfile.write(path, tone()[:1599], 16000, subtype=subtype, format=wav_format)  # odd: a pad byte
    _, test_set = _load_wav(root)
    assert test_set.names[-1] == str(path) and np.abs(test_set.signals[-1]).max() > 0.2


def test_wav_streamed_without_a_data_size_is_accepted(tmp_path):
    root = write_mimii_set(tmp_path)
    path = root / "abnormal" / "0.wav"
    write_wav(path, tone())
    content = path.read_bytes()
    size_at = content.index(b"data") + 4
    path.write_bytes(content[:size_at] + struct.pack("<I", 0xFFFFFFFF) + content[size_at + 4:])
    _, test_set = _load_wav(root)
    expected = soundfile.read(root / "normal" / "1.wav", dtype="float32")[0][:1024]
    np.testing.assert_allclose(test_set.signals[0], expected)  # the normal clip the split keeps for test
    assert np.abs(test_set.signals[-1]).max() > 0.2


# ---------------------------------------------------------------- too short, mostly padding, constant

def test_clip_shorter_than_one_window_is_refused(tmp_path):
    root = write_mimii_set(tmp_path)
    path = write_wav(root / "normal" / "1.wav", tone()[:255])
    _refused(f"{path}: 255 samples, shorter than one window (--segment_length 256); give a smaller "
             "--segment_length or longer recordings", lambda: _load_wav(root))


def test_window_length_counts_after_resampling(tmp_path):
    root = write_mimii_set(tmp_path)
    path = write_wav(root / "normal" / "1.wav", tone(rate=8000)[:200], rate=8000)  # 400 at 16 kHz
    _, test_set = _load_wav(root, "--sample_rate", "16000")
    assert np.count_nonzero(test_set.signals[0]) == pytest.approx(400, abs=2)
    _refused(f"{path}: 200 samples, shorter than one window (--segment_length 256); give a smaller "
             "--segment_length or longer recordings", lambda: _load_wav(root, "--sample_rate", "8000"))


def test_one_warning_for_clips_mostly_zero_padding(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("grlnet"), "propagate", True)  # cli.configure_logging stops it
    root = write_mimii_set(tmp_path)
    first = write_wav(root / "normal" / "1.wav", tone()[:300])
    write_wav(root / "abnormal" / "0.wav", tone(frequency=900)[:511])
    write_wav(root / "abnormal" / "1.wav", tone(frequency=900)[:512])  # exactly half: not reported
    with caplog.at_level(logging.WARNING, logger="grlnet.data"):
        train_set, test_set = _load_wav(root)
    assert [r.getMessage() for r in caplog.records] == [
        (f"warning: 2 of 3 test files are shorter than half of --mess_length 1024 and are zero-padded to it "
         f"(the first: {first}, 300 samples)")]
    assert len(train_set) == 1 and not test_set.signals[0, 300:].any()  # padded, as the release does


def test_one_warning_for_clips_cut_to_less_than_half(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("grlnet"), "propagate", True)
    root = write_mimii_set(tmp_path)
    first = write_wav(root / "normal" / "1.wav", tone(seconds=0.3))  # 4800 samples
    write_wav(root / "abnormal" / "1.wav", tone(seconds=0.128, frequency=900))  # 2048: exactly twice
    with caplog.at_level(logging.WARNING, logger="grlnet.data"):
        _, test_set = _load_wav(root)
    assert [r.getMessage() for r in caplog.records] == [
        (f"warning: 1 of 3 test files are more than twice --mess_length 1024; only their first 1024 samples "
         f"are used (the first: {first}, 4800 samples)")]
    np.testing.assert_allclose(test_set.signals[0], tone(seconds=0.3)[:1024], atol=2 ** -15)  # 16-bit PCM


def test_whole_signal_windows_keep_short_clips_with_the_warning(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("grlnet"), "propagate", True)
    root = write_mimii_set(tmp_path)
    write_wav(root / "normal" / "1.wav", tone()[:2])
    with caplog.at_level(logging.WARNING, logger="grlnet.data"):
        _, test_set = _load_wav(root, "--segment_length", "0")
    assert len(caplog.records) == 1 and "1 of 2 test files" in caplog.records[0].getMessage()
    assert np.count_nonzero(test_set.signals[0]) == 2


@pytest.mark.parametrize("samples, message", [
    (np.full(1600, 0.5, np.float32), ("every sample is 0.5 (a constant, DC-only recording; LayerNorm of a "
                                      "constant signal carries no information)")),
    (np.full(1600, -0.25, np.float32), ("every sample is -0.25 (a constant, DC-only recording; LayerNorm "
                                        "of a constant signal carries no information)")),
    (np.zeros(1600, np.float32), ("every sample is zero (a silent or broken recording; LayerNorm of a "
                                  "constant signal carries no information)")),
    (np.full(1, 0.3, np.float32), "the signal holds a single sample"),
])
def test_constant_or_single_sample_wav_is_refused(tmp_path, samples, message):
    root = write_mimii_set(tmp_path)
    path = root / "normal" / "0.wav"
    soundfile.write(path, samples, 16000, subtype="FLOAT")
    _refused(f"{path}: {message}", lambda: _load_wav(root))


def test_constant_csv_signal_is_refused(tmp_path):
    train, test = _csv_sets(tmp_path)
    np.savetxt(test[0] / "2.csv", np.full(64, 3.0))
    _refused(f"{test[0] / '2.csv'}: every sample is 3 (a constant, DC-only recording; LayerNorm of a "
             "constant signal carries no information)", lambda: _load_csv(train, test))


# ---------------------------------------------------------------- values, names and folders that slipped through

@pytest.mark.parametrize("value", ["1e20", "-1e300"])
def test_samples_beyond_float32_arithmetic_are_refused_not_reported_as_divergence(tmp_path, value):
    train, test = _csv_sets(tmp_path)
    samples = np.random.default_rng(5).normal(size=64)
    np.savetxt(test[0] / "2.csv", samples)
    (test[0] / "2.csv").write_text((test[0] / "2.csv").read_text().replace(f"{samples[9]:.18e}", value, 1))
    _refused(f"{test[0] / '2.csv'}: sample 9 is {float(value):g}, beyond ±1e+15, where float32 arithmetic "
             "(signal power, noise) overflows (1 such samples); rescale the recording",
             lambda: _load_csv(train, test))


def test_a_recording_silent_over_the_part_used_is_refused(tmp_path):
    root = write_mimii_set(tmp_path)
    samples = np.zeros(1600, np.float32)
    samples[-1] = 0.5  # not constant as a whole, but its first 1024 samples (--mess_length) are
    path = root / "normal" / "1.wav"
    soundfile.write(path, samples, 16000, subtype="FLOAT")
    _refused(f"{path}: its first 1024 samples (--mess_length), the part that is used, are all 0; trim the "
             "silence, or give a longer --mess_length", lambda: _load_wav(root))


def test_a_link_to_a_file_that_is_gone_is_named_as_such(tmp_path):
    root = write_mimii_set(tmp_path)
    dangling = root / "abnormal" / "1.wav"
    dangling.symlink_to(tmp_path / "gone.wav")
    _refused(f"{dangling}: file not found (a link to a file that is gone?)", lambda: _load_wav(root))


def test_mimii_abnormal_names_are_abnormal_in_a_training_folder(tmp_path):
    write_wav(tmp_path / "flat" / "normal_id_02_00000000.wav", tone())
    abnormal = write_wav(tmp_path / "flat" / "abnormal_id_02_00000000.wav", tone(frequency=900))
    write_wav(tmp_path / "test" / "normal_id_02_00000001.wav", tone(seed=1))
    write_wav(tmp_path / "test" / "anomaly_id_02_00000001.wav", tone(frequency=900, seed=1))
    with pytest.raises(UserError, match=f"^{re.escape(str(abnormal))}: the training set holds 1 abnormal file"):
        load_datasets(data_settings(parse_opts(["--train_root", str(tmp_path / "flat"), "--test_root", str(tmp_path / "test"),
                                  "--mess_length", "1024"])))


def test_a_file_both_trained_on_and_tested_is_refused(tmp_path):
    root = write_mimii_set(tmp_path)
    shared = root / "normal" / "0.wav"
    _refused(f"{shared}: in the training set and in the test set (2 such files); a model scores its own "
             "training clips as more normal than new ones, so the metrics would flatter it: keep the test "
             "files out of --train_root",
             lambda: load_datasets(data_settings(parse_opts(["--train_root", str(root / "normal"), "--test_root", str(root),
                                               "--mess_length", "1024"]))))


def test_a_folder_or_a_superscript_named_like_a_signal_file_is_no_signal_file(tmp_path):
    train, test = _csv_sets(tmp_path)
    (test[0] / "3.csv").unlink()
    (test[0] / "3.csv").mkdir()
    (test[0] / "².csv").write_text("0.5\n0.25\n")
    _refused(f"{test[1]}: 4 labels for 3 files in {test[0]}", lambda: _load_csv(train, test))  # 0-2.csv


# ---------------------------------------------------------------- formats other than WAV

def test_flac_and_ogg_recordings_are_read_like_wav(tmp_path):
    root = write_mimii_set(tmp_path)
    wav = root / "normal" / "1.wav"
    samples = soundfile.read(wav, dtype="float32")[0]
    soundfile.write(root / "normal" / "1.flac", samples, 16000, subtype="PCM_16")
    wav.unlink()
    soundfile.write(root / "abnormal" / "1.ogg", tone(frequency=900, seed=5), 16000, format="OGG")
    train, test = _load_wav(root)
    assert test.names == [str(root / "normal" / "1.flac"), str(root / "abnormal" / "0.wav"),
                          str(root / "abnormal" / "1.ogg")]
    assert np.array_equal(test.signals[0], samples[:1024])  # lossless: the WAV's samples, to --mess_length 1024
    assert test.signals[2].std() > 0.1  # the OGG's tone, decoded


def test_an_ogg_stream_cut_short_is_refused_with_both_counts(tmp_path):
    """An OGG named .wav, cut inside a page: libsndfile decodes the complete pages and says nothing."""
    root = write_mimii_set(tmp_path)
    path = root / "abnormal" / "0.wav"
    soundfile.write(path, np.tile(tone(frequency=900), 30), 16000, format="OGG")
    whole = path.read_bytes()
    path.write_bytes(whole[:len(whole) * 2 // 3])
    assert 0 < soundfile.read(path)[0].size < 48000  # decoded in part, without a word
    with pytest.raises(UserError, match=f"^{re.escape(str(path))}: truncated, its last Ogg page announces "
                                        r"(\d+) bytes but only (\d+) are in the file$") as info:
        _load_wav(root)
    announced, present = map(int, re.search(r"announces (\d+) bytes but only (\d+)", str(info.value)).groups())
    assert present < announced


def test_a_decode_shorter_than_the_header_announces_is_refused(tmp_path):
    """An MP3 cut short: its header announces every frame, the decoder finds fewer."""
    root = write_mimii_set(tmp_path)
    path = root / "abnormal" / "0.mp3"
    (root / "abnormal" / "0.wav").unlink()
    soundfile.write(path, np.tile(tone(frequency=900), 10), 16000, format="MP3")
    path.write_bytes(path.read_bytes()[:2 * path.stat().st_size // 3])
    decoded = soundfile.read(path)[0].size
    with pytest.raises(UserError, match=f"^{re.escape(str(path))}: truncated, the header announces 16000 samples but "
                                        f"only {decoded} could be decoded$"):
        _load_wav(root)


# ---------------------------------------------------------------- messages that say what is true

@pytest.mark.parametrize("kind", ["wav", "csv"])
def test_a_file_without_read_permission_says_permission_denied(tmp_path, monkeypatch, kind):
    """The tests run as root, whom permissions do not stop: the file's opening is made to fail as they would."""
    if kind == "wav":
        root = write_mimii_set(tmp_path)
        path, load = root / "abnormal" / "0.wav", lambda: _load_wav(root)
    else:
        train, test = _csv_sets(tmp_path)
        path, load = test[0] / "1.csv", lambda: _load_csv(train, test)
    real_open = Path.open

    def denied(self, *args, **kwargs):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", denied)
    _refused(f"{path}: permission denied, this user may not read the file", load)


def test_stereo_channels_that_cancel_are_named_as_such_not_silent(tmp_path):
    root = write_mimii_set(tmp_path)
    path = root / "abnormal" / "0.wav"
    soundfile.write(path, np.stack([tone(), -tone()], axis=1), 16000, subtype="FLOAT")
    _refused(f"{path}: the average of its 2 channels is 0 in every sample (channels are mixed to mono by "
             "averaging, and these cancel out); give one channel of the recording", lambda: _load_wav(root))


def test_one_note_per_set_counts_the_files_mixed_to_mono(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("grlnet"), "propagate", True)
    root = write_mimii_set(tmp_path)
    first = root / "normal" / "1.wav"
    for path, frequency in ((first, 440.0), (root / "abnormal" / "0.wav", 900.0)):
        soundfile.write(path, np.stack([tone(frequency=frequency), tone(frequency=frequency, seed=3)], axis=1),
                        16000, subtype="PCM_16")
    with caplog.at_level(logging.INFO, logger="grlnet.data"):
        _, test_set = _load_wav(root)
    assert [r.getMessage() for r in caplog.records] == [
        f"note: 2 of 2 test files have several channels, mixed to mono by averaging channels (the first: {first})"]
    left, right = soundfile.read(first, dtype="float32")[0][:1024].T
    np.testing.assert_allclose(test_set.signals[0], (left + right) / 2, atol=1e-7)


def test_a_label_file_with_a_file_column_labels_the_files_it_names(tmp_path):
    train, test = _csv_sets(tmp_path)  # 0.csv .. 3.csv
    test[1].write_text("file,label\n3.csv,1\n0.csv,0\nsub/2.csv,1\n1.csv,0\n")  # any order, folders dropped
    _, test_set = _load_csv(train, test)
    assert test_set.labels.tolist() == [0, 0, 1, 1]
    for text, message in [
        ("file,label\n0.csv,0\n1.csv,1\n0.csv,1\n3.csv,0\n", f"{test[1]}, line 4: '0.csv' is labelled twice"),
        ("file,label\n0.csv,0\n1.csv,1\n2.csv,0\n7.csv,1\n", (f"{test[1]}: the 'file' column names '7.csv', which is "
                                                             f"not in {test[0]} (1 such names)")),
        ("file,label\n0.csv,0\n1.csv,1\n2.csv,0\n", f"{test[1]}: no row labels '3.csv' (1 files without a label)"),
        ("file,file,label\n0.csv,0.csv,1\n", f"{test[1]}: 2 columns are named 'file'"),
    ]:
        test[1].write_text(text)
        with pytest.raises(UserError, match=f"^{re.escape(message)}"):
            _load_csv(train, test)
