"""experiments/bench.py runs both training paths and ends with the ratio; bf16 autocast agrees with fp32."""
import re
import sys

import pytest
import torch
from conftest import run_script

from data.console import UserError
from experiments import bench
from network import GRLNet

# Measured on 5 seeds (fresh networks, eval mode, input 0.05-0.1 * randn [2, 1, 1024], PyTorch 2.13
# CPU): relative L2 error of the reconstructions at most 0.007, largest D difference 0.0017. The
# tolerances below leave about four times that margin.
RECONSTRUCTION_RTOL = 0.03
D_ATOL = 0.01
NUMBER = r"(\d+\.\d+)"


def printed_rate(lines: list[str], pattern: str) -> float:
    """The one number ``pattern`` (with one group) finds in the lines, as printed."""
    (value,) = [float(m.group(1)) for line in lines if (m := re.search(pattern, line))]
    return value


def quotient_bounds(numerator: float, denominator: float, half_unit: float) -> tuple[float, float]:
    """The smallest and largest quotient of two numbers printed as these, each rounded by at most ``half_unit``."""
    return ((numerator - half_unit) / (denominator + half_unit), (numerator + half_unit) / (denominator - half_unit))


def assert_quotient(printed: float, decimals: int, numerator: float, denominator: float) -> None:
    """``printed`` (rounded to ``decimals``) is the quotient of two rates printed with three decimals."""
    low, high = quotient_bounds(numerator, denominator, 0.0005)
    assert low - 0.5 * 10 ** -decimals <= printed <= high + 0.5 * 10 ** -decimals, (printed, numerator, denominator)


def assert_speedups_are_the_printed_rates_quotients(lines: list[str], unit: str, batches: tuple[int, ...]) -> None:
    """Each batch's fast / release line and the last line's ratio (at batch 2) follow from the rates printed."""
    for batch in batches:
        fast, release = (printed_rate(lines, rf"^{path} +batch {batch}: {NUMBER} {unit}/s")
                         for path in ("fast", "release"))
        assert_quotient(printed_rate(lines, rf"^batch {batch}: fast / release {unit}/s = {NUMBER}$"), 3, fast, release)
        if batch == 2:
            assert re.fullmatch(rf"ratio {NUMBER}", lines[-1]), lines[-1]
            assert_quotient(float(lines[-1].split()[1]), 4, fast, release)


def test_the_ratio_is_the_quotient_whatever_the_rounding():
    assert quotient_bounds(3.0, 2.0, 0.0005) == pytest.approx((2.9995 / 2.0005, 3.0005 / 1.9995))
    assert_quotient(1.5, 4, 3.0, 2.0)
    with pytest.raises(AssertionError):
        assert_quotient(1.5010, 4, 3.0, 2.0)  # beyond what rounding the rates to 3 decimals can explain


def test_bench_prints_both_paths_and_the_ratio_last():
    result = run_script("-m", "experiments.bench", "--device", "cpu", "--mess_length", "512", "--batch_sizes", "2",
                        "--steps", "2", "--warmup", "1", "--clips", "6")
    lines = result.stdout.strip().splitlines()
    for path in ("release", "fast"):
        assert any(line.startswith(path) and "samples/s" in line for line in lines), result.stdout
    assert_speedups_are_the_printed_rates_quotients(lines, "samples", (2,))


def test_bench_wav_preset_times_training_windows_and_scoring_clips_of_both_paths_at_each_batch():
    result = run_script("-m", "experiments.bench", "--device", "cpu", "--preset", "wav", "--mess_length", "8192",
                        "--clips", "2", "--test_clips", "2", "--steps", "1", "--warmup", "0", "--batch_sizes", "2", "4")
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("device cpu") and "wav preset: length 8192, windows of 1024 every 4096" in lines[1]
    for path in ("release", "fast"):
        batch_lines = [line for line in lines if line.startswith(path)]
        assert len(batch_lines) == 2, result.stdout
        for batch, line in zip((2, 4), batch_lines, strict=True):
            assert re.search(rf"batch {batch}: \d+\.\d+ windows/s, .*; scoring \d+\.\d+ clips/s", line), line
            assert ("after fitting the feature statistics in" in line) == (path == "fast")
    fast, release = (printed_rate([line for line in lines if line.startswith(f"{path} ") and "batch 2:" in line],
                                  rf"scoring {NUMBER} clips/s") for path in ("fast", "release"))
    assert_quotient(printed_rate(lines, rf"^scoring at batch 2: fast / release clips/s = {NUMBER}$"), 3, fast, release)
    assert any(line.startswith("peak host memory of the process: ") for line in lines)
    assert_speedups_are_the_printed_rates_quotients(lines, "windows", (2, 4))


@pytest.mark.parametrize("options, message", [
    (["--preset", "wav", "--mess_length", "512"], "--mess_length 512 is shorter than one window of the WAV preset"),
    (["--preset", "wav", "--clips", "1", "--batch_sizes", "2", "64"],
     "--clips 1 give 39 training items, fewer than the largest batch size 64"),
    (["--clips", "4", "--batch_sizes", "2", "8"], "--clips 4 give 4 training items, fewer than the largest batch size 8"),
])
def test_bench_refuses_settings_it_cannot_run(options, message):
    with pytest.raises(UserError, match=re.escape(message)):
        bench.resolve_defaults(bench.parse_args(options), torch.device("cpu"))


def test_the_epoch_data_set_repeats_the_training_clips_under_new_names(tmp_path):
    source = tmp_path / "source"
    (source / "train").mkdir(parents=True)
    (source / "test").mkdir()
    for name in ("normal_id_00_00000001.wav", "normal_id_00_00000000.wav"):
        (source / "train" / name).write_bytes(name.encode())
    grown = bench.grown_data_set(source, 5, tmp_path / "grown")
    clips = sorted((grown / "train").iterdir())
    assert [clip.name for clip in clips] == [f"normal_id_00_{i:08d}.wav" for i in range(5)]
    assert [clip.read_text()[-6:-4] for clip in clips] == ["00", "01", "00", "01", "00"]  # name order, repeated
    assert (grown / "test").resolve() == (source / "test").resolve()
    with pytest.raises(UserError, match="needs a DCASE-layout folder with train/"):
        bench.grown_data_set(tmp_path / "empty", 5, tmp_path / "other")
    with pytest.raises(UserError, match=r"test: --epoch_test_clips needs test clips to repeat"):
        bench.grown_data_set(source, 5, tmp_path / "no_tests", test_clips=4)


def test_the_epoch_data_set_grows_the_test_clips_keeping_their_labels(tmp_path):
    source = tmp_path / "source"
    (source / "train").mkdir(parents=True)
    (source / "test").mkdir()
    (source / "train" / "normal_id_00_00000000.wav").write_bytes(b"")
    for name in ("anomaly_id_00_00000096.wav", "normal_id_00_00000013.wav", "normal_id_00_00000036.wav"):
        (source / "test" / name).write_bytes(name.encode())
    grown = bench.grown_data_set(source, 2, tmp_path / "grown", test_clips=7)
    clips = sorted((grown / "test").iterdir(), key=lambda clip: clip.name[-12:])  # in the order they were made
    assert [clip.name for clip in clips] == [
        "anomaly_id_00_00000000.wav", "normal_id_00_00000001.wav", "normal_id_00_00000002.wav",
        "anomaly_id_00_00000003.wav", "normal_id_00_00000004.wav", "normal_id_00_00000005.wav",
        "anomaly_id_00_00000006.wav"]
    assert [clip.read_text()[:-4] for clip in clips] == [
        "anomaly_id_00_00000096", "normal_id_00_00000013", "normal_id_00_00000036"] * 2 + ["anomaly_id_00_00000096"]


@pytest.mark.parametrize("options, message", [
    (["--peak_tflops", "0"], "argument --peak_tflops: expected a finite number > 0, got 0"),
    (["--warmup", "-1"], "argument --warmup: expected an integer >= 0, got -1"),
    (["--test_clips", "1"], "argument --test_clips: expected at least 2"),
    (["--preset", "mp3"], "argument --preset: invalid choice: 'mp3'"),
])
def test_bench_refuses_bad_values_where_they_are_parsed(options, message, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(options)
    assert message in capsys.readouterr().err


def _relative_l2(reference: torch.Tensor, other: torch.Tensor) -> float:
    return ((reference - other.float()).norm() / reference.norm()).item()


@torch.no_grad()
def test_bf16_autocast_forward_agrees_with_fp32_on_cpu():
    torch.manual_seed(0)
    model = GRLNet(1024).eval()
    x = 0.05 * torch.randn(2, 1, 1024)
    fp32 = [model.regional(x), model.local(x), model.discriminator(x)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = [model.regional(x), model.local(x), model.discriminator(x)]
    assert _relative_l2(fp32[0], bf16[0]) < RECONSTRUCTION_RTOL
    assert _relative_l2(fp32[1], bf16[1]) < RECONSTRUCTION_RTOL
    assert (fp32[2] - bf16[2].float()).abs().max().item() < D_ATOL


def one_clip_dcase_folder(source):
    """A DCASE-layout folder, train/ with one (empty) clip and test/, enough to grow an epoch's data set from."""
    (source / "train").mkdir(parents=True)
    (source / "test").mkdir()
    (source / "train" / "normal_id_00_00000000.wav").write_bytes(b"")
    return source


def test_the_epoch_runs_train_py_with_the_epoch_args_added(tmp_path, monkeypatch, capsys):
    source = one_clip_dcase_folder(tmp_path / "source")
    commands = []
    monkeypatch.setattr(bench, "run_measured", lambda command, stop_after: commands.append(command) or (2.0, 0.5))
    args = bench.parse_args(["--epoch_data", str(source), "--epoch_clips", "3",
                             "--epoch_args", "--batch_size 32 --learning_rate_scaling sqrt"])
    bench.time_epoch(args, torch.device("cpu"), tmp_path / "root")
    (command,) = commands
    assert command[1].endswith("train.py") and command[command.index("--epochs") + 1] == "1"
    assert command[-4:] == ["--batch_size", "32", "--learning_rate_scaling", "sqrt"]
    assert ("train.py --batch_size 32 --learning_rate_scaling sqrt), end to end: 2.0 s, 1.50 clips/s "
            "(decoding and evaluation included); peak host memory of train.py 0.50 GiB") in capsys.readouterr().out


def test_a_whole_run_kept_in_its_folder_counts_the_clips_of_every_epoch(tmp_path, monkeypatch, capsys):
    source = one_clip_dcase_folder(tmp_path / "source")
    (source / "test" / "normal_id_00_00000001.wav").write_bytes(b"")
    commands = []
    monkeypatch.setattr(bench, "run_measured", lambda command, stop_after: commands.append(command) or (2.0, 0.5))
    args = bench.parse_args(["--epoch_data", str(source), "--epoch_clips", "3", "--epoch_test_clips", "2",
                             "--epoch_epochs", "8", "--epoch_output", str(tmp_path / "kept")])
    bench.time_epoch(args, torch.device("cpu"), tmp_path / "root")
    (command,) = commands
    assert command[command.index("--epochs") + 1] == "8"
    assert command[command.index("--output_dir") + 1] == str(tmp_path / "kept")
    assert len(list((tmp_path / "root" / "data" / "test").iterdir())) == 2
    out = capsys.readouterr().out
    assert "run of 8 epochs of 3 training clips, 2 test clips (" in out
    assert "end to end: 2.0 s, 12.00 clips/s (decoding and evaluation included)" in out


def test_a_stopped_epoch_reports_the_step_train_py_saved(tmp_path, monkeypatch, capsys):
    source = one_clip_dcase_folder(tmp_path / "source")
    stops = []
    monkeypatch.setattr(bench, "run_measured", lambda command, stop_after: stops.append(stop_after) or (60.5, 1.25))
    args = bench.parse_args(["--epoch_data", str(source), "--epoch_clips", "3", "--epoch_seconds", "60"])
    bench.time_epoch(args, torch.device("cpu"), tmp_path / "before")
    assert "stopped after 60.5 s, before its first training step; peak host memory of train.py 1.25 GiB" in \
        capsys.readouterr().out
    (tmp_path / "saved" / "run" / "checkpoints").mkdir(parents=True)
    torch.save({"step": 17}, tmp_path / "saved" / "run" / "checkpoints" / "last.pt")
    bench.time_epoch(args, torch.device("cpu"), tmp_path / "saved")
    assert "stopped after 60.5 s at training step 17 (decoding included); peak host memory of train.py 1.25 GiB" \
        in capsys.readouterr().out
    assert stops == [60.0, 60.0]


def test_run_measured_stops_a_process_with_ctrl_c_after_the_time_given():
    saves_and_exits = "import signal, sys, time; signal.signal(signal.SIGINT, lambda *_: sys.exit(130)); time.sleep(60)"
    seconds, _ = bench.run_measured([sys.executable, "-c", saves_and_exits], stop_after=2)
    assert 2 <= seconds < 30
    with pytest.raises(UserError, match=r"exited with status -2$"):  # killed by the Ctrl-C it did not handle
        bench.run_measured([sys.executable, "-c", "import time; time.sleep(60)"], stop_after=2)


def test_run_measured_reads_the_peak_memory_of_its_own_process_and_refuses_a_failure():
    touch_300_mib = "b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096])"
    seconds, peak = bench.run_measured([sys.executable, "-c", touch_300_mib])
    assert seconds > 0 and 0.29 < peak < 1.5  # 300 MiB touched, plus the interpreter
    with pytest.raises(UserError, match=r"exited with status 3$"):
        bench.run_measured([sys.executable, "-c", "raise SystemExit(3)"])


def test_scoring_batches_prints_a_rate_for_each_batch(capsys):
    from experiments.tools import scoring_batches
    scoring_batches.main(["--batches", "4", "8", "--windows", "8"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("8 windows of 1024 samples on cpu")
    rates = [re.fullmatch(r"batch +(\d+): +(\d+\.\d) windows/s", line) for line in lines[1:]]
    assert [int(m.group(1)) for m in rates] == [4, 8] and all(float(m.group(2)) > 0 for m in rates)


def test_matmul_peak_prints_a_rate_for_fp32_and_bf16(capsys):
    from experiments.tools import matmul_peak
    matmul_peak.main(["--size", "64", "--repeats", "2"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == f"64 x 64 matrix products on cpu ({torch.get_num_threads()} threads)"
    rates = [re.fullmatch(r"(float32|bfloat16) +(\d+\.\d{4}) TFLOP/s", line) for line in lines[1:]]
    assert [m.group(1) for m in rates] == ["float32", "bfloat16"] and all(float(m.group(2)) > 0 for m in rates)
