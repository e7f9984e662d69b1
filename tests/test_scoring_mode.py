"""Scoring new recordings (test.py --input) and progress-bar behaviour."""
import csv
import io

import torch
from conftest import run_script, tone, write_wav

from data.console import progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_only_on_a_terminal_and_never_when_quiet():
    assert not progress(range(3), quiet=False, file=_Terminal()).disable
    assert progress(range(3), quiet=True, file=_Terminal()).disable
    assert progress(range(3), quiet=False, file=io.StringIO()).disable


def _scores(path) -> dict[str, float]:
    with open(path) as handle:
        return {row["file"]: float(row["score"]) for row in csv.DictReader(handle)}


def test_input_mode_agrees_with_test_mode(tmp_path):
    data = tmp_path / "data"
    for i in range(3):
        write_wav(data / "train" / f"normal_id_00_{i:08d}.wav", tone(0.05, seed=i))
    write_wav(data / "test" / "normal_id_00_00000010.wav", tone(0.05, seed=10))
    write_wav(data / "test" / "anomaly_id_00_00000011.wav", tone(0.05, frequency=1500, seed=11))
    run = tmp_path / "run"
    run_script("train.py", "--data_root", str(data), "--mess_length", "768", "--segment_length", "256",
               "--segment_hop", "128", "--epochs", "1", "--quiet", "--output_dir", str(run))
    checkpoint = str(run / "checkpoints" / "last.pt")
    out = tmp_path / "new.csv"
    scored = run_script("test.py", "--checkpoint", checkpoint, "--input", str(data / "test"),
                        "--output", str(out), "--output_dir", str(tmp_path / "score"), "--quiet")
    in_test_mode = _scores(run / "scores.csv")
    assert _scores(out) == in_test_mode
    threshold = torch.load(checkpoint, weights_only=True)["metrics"][-1]["threshold"]
    for name, score in in_test_mode.items():
        decision = "ABNORMAL" if score >= threshold else "normal"
        assert any(line.startswith(name) and line.endswith(decision) for line in scored.stdout.splitlines())
    with open(out) as handle:
        assert {row["label"] for row in csv.DictReader(handle)} == {""}

    forced = run_script("test.py", "--checkpoint", checkpoint, "--input", str(data / "test"),
                        "--threshold", "1e300", "--output_dir", str(tmp_path / "forced"), "--quiet")
    assert "ABNORMAL" not in forced.stdout
