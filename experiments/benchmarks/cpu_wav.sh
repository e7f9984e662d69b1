#!/usr/bin/env bash
# The WAV preset on a CPU (BENCHMARKS.md, "The WAV preset on a CPU"): run from anywhere; writes one output
# file per command to the folder given (default experiments/benchmarks/cpu-wav). THREADS (default 1) sets
# OMP_NUM_THREADS; EPOCH_CLIPS (default 50) the size of the end-to-end epoch.
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-experiments/benchmarks/cpu-wav}"
export OMP_NUM_THREADS="${THREADS:-1}"
mkdir -p "$out"
{ lscpu | grep -E "Model name|^CPU\(s\)|Flags" | sed -E 's/(Flags:).*(avx512_bf16|amx_bf16).*/\1 ... avx512_bf16 amx_bf16 .../'
  python -c "import torch; print('PyTorch', torch.__version__, '| AMX', torch.cpu._is_amx_tile_supported(), '| threads', torch.get_num_threads())"
} > "$out/environment.txt"
python -m experiments.bench --device cpu --preset wav --test_clips 8                                                  | tee "$out/bench_wav.txt"
python -m experiments.bench --device cpu --preset wav --test_clips 8 --cpu_bf16                                       | tee "$out/bench_wav_cpu_bf16.txt"
ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 python -m experiments.bench --device cpu --preset wav --test_clips 8 --cpu_bf16   | tee "$out/bench_wav_cpu_bf16_without_amx.txt"
python -m experiments.bench --device cpu --preset wav --test_clips 8 --batch_sizes 2 32 --steps 3                     | tee "$out/bench_wav_batch32.txt"
python -m experiments.tools.scoring_batches                                                              | tee "$out/scoring_batches.txt"
{ python -m experiments.bench --device cpu --preset wav --test_clips 2; python -m experiments.tools.matmul_peak; }       | tee "$out/step_and_matmul.txt"
python -m experiments.bench --device cpu --preset wav --test_clips 8 --epoch_data ../shared/data/dcase2020_slider_id00 --epoch_clips "${EPOCH_CLIPS:-50}" \
    | tee "$out/bench_wav_epoch.txt"
python -m experiments.bench --device cpu --preset wav --test_clips 8 --epoch_data ../shared/data/dcase2020_slider_id00 --epoch_seconds 180 \
    | tee "$out/bench_wav_epoch1000.txt"
