#!/usr/bin/env bash
# A DCASE machine type on a CPU (BENCHMARKS.md, "The training budget on a CPU"): train.py's whole default run
# at the WAV preset (8 epochs, every evaluation) on 1000 training clips and 200 test clips grown from the slider
# set, on both cores (torch's default threads). Writes the bench's output, the run's metrics.csv and train.log
# to the folder given (default experiments/benchmarks/cpu-dcase1000). About two hours on a 2-core CPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-experiments/benchmarks/cpu-dcase1000}"
run="$(mktemp -d)/run"
mkdir -p "$out"
python -m experiments.bench --preset wav --device cpu --steps 3 --warmup 1 --epoch_data ../shared/data/dcase2020_slider_id00 \
    --epoch_clips 1000 --epoch_test_clips 200 --epoch_epochs 8 --epoch_output "$run" | tee "$out/bench_wav_dcase1000.txt"
cp "$run/metrics.csv" "$run/train.log" "$out/"
