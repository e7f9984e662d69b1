#!/usr/bin/env bash
# The GPU checks of the speed issue as one device call (BENCHMARKS.md, last GPU section; run on an H200 on 2026-11-29):
#   1. experiments/bench.py at the paper's settings with its bf16-against-fp32 equivalence check: `ratio` and figures,
#      re-measured since every step also computes three gradient norms;
#   2. the embedded data set: the default CUDA path (bf16, torch.compile) against fp32 eager, 10 seeds
#      each, so the two paths' mean AUCs can be compared against their spread over seeds.
#
# Here, once, where pip reaches the registry (the GPU machine's image lacks librosa and soundfile):
#   experiments/benchmarks/gpu_checks.sh wheels
# On the GPU machine (with .whl/ copied beside the repository's files, at most 600 s):
#   experiments/benchmarks/gpu_checks.sh run "$OUT"
# The bench gets all but 200 s of the time (its length on this GPU is not known beforehand; the ratio comes
# first). The command stops cleanly before GPU_CHECKS_SECONDS (default 560) and copies what it has to the output
# folder; the same command again, on the still-warm machine, skips a finished bench and continues the
# training runs (reproduce.py --reuse). DEVICE (default cuda) and SEEDS (default 0 to 9) exist for a dry run
# on a CPU: DEVICE=cpu SEEDS=0 experiments/benchmarks/gpu_checks.sh run /tmp/out
#
# A third check, `experiments/benchmarks/gpu_checks.sh deterministic "$OUT"`: the demo trained with --deterministic twice
# per update, all runs at once beside a default run, must give the same metrics and scores to the bit.
# TRAIN_ARGS adds train.py options for a short dry run: DEVICE=cpu TRAIN_ARGS="--epochs 1" ...
#
# The WAV preset (BENCHMARKS.md, "The WAV preset on a CPU" and "Larger batches"), `... wav "$OUT"`: experiments/bench.py
# --preset wav at batches 2, 32 and 128 (training windows/s and scoring clips/s of both paths), then one
# end-to-end epoch of 1000 clips grown from EPOCH_DATA (default ../shared/data/dcase2020_slider_id00) at batch 32
# with --learning_rate_scaling sqrt. BENCH_ARGS and EPOCH_CLIPS shrink it for a dry run:
# DEVICE=cpu BENCH_ARGS="--mess_length 8192 --clips 2 --test_clips 2 --steps 1 --warmup 0 --batch_sizes 2 4" EPOCH_CLIPS=2 ...
#
# CUDA graphs (torch.compile's "reduce-overhead" mode, which train.py does not use yet), `... overhead "$OUT"`: experiments/bench.py
# at the WAV preset (batches 2 and 32) and at the paper's settings (batch 2) with --compile_mode reduce-overhead, to set
# against the default mode's figures of `wav` and `run`; a failure of one is reported and the other still runs.
# PAPER_ARGS shrinks the second for a dry run: DEVICE=cpu BENCH_ARGS="... --batch_sizes 2" PAPER_ARGS="--mess_length 512" ...
set -uo pipefail
cd "$(dirname "$0")/../.."

WHEELS=".whl"
# librosa 0.11.0 and soundfile 0.14.0 with what they need beyond the GPU machine's image
PACKAGES=(librosa==0.11.0 soundfile==0.14.0 soxr==1.1.0 audioread==3.1.0 pooch==1.9.0 cffi==2.0.0
          decorator==5.2.1 platformdirs==4.14.8 pycparser==3.0)
WORK="reproduction/gpu_checks"  # git-ignored; kept between calls while the machine stays warm

download_wheels() {
    local platforms=() tag
    for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
               manylinux1_x86_64; do
        platforms+=(--platform "$tag")
    done
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${platforms[@]}" -d "$WHEELS" "${PACKAGES[@]}"
    ls "$WHEELS"
}

install_wheels() {
    if python3 -c "import librosa, soundfile" 2>/dev/null; then
        return 0
    fi
    if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
        echo "error: librosa or soundfile is missing and $WHEELS/ holds no wheels: run '$0 wheels' first" >&2
        exit 2
    fi
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "$WHEELS"/*.whl || exit 2
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
}

seconds_left() {
    echo $((DEADLINE - SECONDS))
}

enough_time() {  # whether $1 seconds are left before the deadline; says so when not
    [ "$(seconds_left)" -ge "$1" ] || { echo "stopped: under $1 s left (run the same command again)"; return 1; }
}

run_checks() {
    local out="$1" device="${DEVICE:-cuda}" seeds="${SEEDS:-0 1 2 3 4 5 6 7 8 9}"
    DEADLINE=$((SECONDS + ${GPU_CHECKS_SECONDS:-560}))
    export PYTHONUNBUFFERED=1
    mkdir -p "$out" "$WORK"
    install_wheels
    write_environment "$out"

    if ! grep -q "^ratio " "$WORK/bench.txt" 2>/dev/null && enough_time 320; then
        echo "== experiments/bench.py --device $device --check_equivalence"
        timeout -s INT $(($(seconds_left) - 200)) python3 -m experiments.bench --device "$device" --check_equivalence \
            2>&1 | tee "$WORK/bench.txt"
    fi
    cp "$WORK/bench.txt" "$out/bench.txt" 2>/dev/null
    enough_time 60 || return 0
    echo "== reproduce.py --protocol demo, grlnet_standard against grlnet_fp32, seeds $seeds"
    # shellcheck disable=SC2086  # the seeds are separate arguments
    timeout -s INT $(($(seconds_left) - 15)) python3 reproduce.py --protocol demo \
        --methods grlnet_standard grlnet_fp32 --seeds $seeds --jobs 10 --out "$WORK" --reuse \
        --grlnet_args "--device $device" 2>&1 | tee "$out/reproduce.txt"
    for name in results.md results.json auc_per_epoch.png; do
        cp "$WORK/demo/$name" "$out/" 2>/dev/null || echo "not finished: $name (run the same command again)"
    done
}

write_environment() {  # date, commit, GPU, driver and PyTorch into $1/environment.txt
    {
        date -u +"%Y-%m-%d %H:%M UTC"
        git rev-parse HEAD 2>/dev/null
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
        python3 -c "import sys, torch; print('Python', sys.version.split()[0], 'PyTorch', torch.__version__)"
    } | tee "$1/environment.txt"
}

run_deterministic_check() {  # --deterministic: two runs of each update, at once, must agree to the bit
    local out="$1" device="${DEVICE:-cuda}" name pids=()
    export PYTHONUNBUFFERED=1
    mkdir -p "$out"
    install_wheels
    write_environment "$out"
    declare -A args=([standard_a]="--deterministic" [standard_b]="--deterministic" [standard_default]=""
                     [released_a]="--deterministic --update released" [released_b]="--deterministic --update released")
    rm -rf "$WORK/det" && mkdir -p "$WORK/det"
    for name in "${!args[@]}"; do
        # shellcheck disable=SC2086  # the options are separate arguments
        python3 train.py --device "$device" --seed 0 --quiet ${args[$name]} ${TRAIN_ARGS:-} --output_dir "$WORK/det/$name" \
            > "$WORK/det/$name.log" 2>&1 &
        pids+=($!)
    done
    wait "${pids[@]}"
    for name in "${!args[@]}"; do
        [ -f "$WORK/det/$name/metrics.csv" ] || { echo "$name failed:"; tail -20 "$WORK/det/$name.log"; return 1; }
    done
    python3 - "$WORK/det" "$out" <<'PYTHON' | tee "$out/deterministic.txt"
import shutil, sys
from pathlib import Path
runs, out = Path(sys.argv[1]), Path(sys.argv[2])
def table(name):  # metrics.csv without its wall-time column, and scores.csv
    lines = (runs / name / "metrics.csv").read_text().splitlines()
    seconds = lines[0].split(",").index("seconds")
    rows = [",".join(v for i, v in enumerate(line.split(",")) if i != seconds) for line in lines]
    return rows, (runs / name / "scores.csv").read_text()
differ = [update for update in ("standard", "released") if table(f"{update}_a") != table(f"{update}_b")]
for update in ("standard", "released"):
    print(f"{update} --deterministic, two runs: metrics and scores {'DIFFER' if update in differ else 'identical'}")
for name in ("standard_a", "standard_b", "standard_default", "released_a", "released_b"):
    lines = (runs / name / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in lines[1:]]
    print(f"{name}: AUC per epoch {' '.join(r['auc'][:6] for r in rows)}, seconds per epoch "
          f"{' '.join(r['seconds'] for r in rows)}")
    shutil.copy(runs / name / "metrics.csv", out / f"{name}_metrics.csv")
sys.exit(1 if differ else 0)
PYTHON
}

run_wav_checks() {  # the WAV preset's speed, then (in the same bench run) a 1000-clip epoch at batch 32
    local out="$1" device="${DEVICE:-cuda}" data="${EPOCH_DATA:-../shared/data/dcase2020_slider_id00}" epoch=()
    export PYTHONUNBUFFERED=1
    mkdir -p "$out"
    install_wheels
    write_environment "$out"
    if [ -d "$data/train" ]; then
        epoch=(--epoch_data "$data" --epoch_clips "${EPOCH_CLIPS:-1000}"
               --epoch_args "--batch_size 32 --learning_rate_scaling sqrt")
    else
        echo "no epoch: $data/train not found (set EPOCH_DATA)" | tee "$out/bench_wav.txt"
    fi
    # shellcheck disable=SC2086  # the options are separate arguments
    python3 -m experiments.bench --device "$device" --preset wav ${BENCH_ARGS:-} "${epoch[@]}" 2>&1 | tee -a "$out/bench_wav.txt"
}

run_overhead_checks() {  # experiments/bench.py with CUDA graphs at the WAV preset and at the paper's settings
    local out="$1" device="${DEVICE:-cuda}"
    export PYTHONUNBUFFERED=1
    mkdir -p "$out"
    install_wheels
    write_environment "$out"
    # shellcheck disable=SC2086  # the options are separate arguments
    python3 -m experiments.bench --device "$device" --preset wav --batch_sizes 2 32 --compile_mode reduce-overhead ${BENCH_ARGS:-} \
        2>&1 | tee "$out/bench_wav_reduce_overhead.txt" || echo "failed: the WAV preset with reduce-overhead"
    # shellcheck disable=SC2086
    python3 -m experiments.bench --device "$device" --batch_sizes 2 --compile_mode reduce-overhead ${PAPER_ARGS:-} \
        2>&1 | tee "$out/bench_paper_reduce_overhead.txt" || echo "failed: the paper's settings with reduce-overhead"
}

case "${1:-}" in
    wheels) download_wheels ;;
    run) [ $# -eq 2 ] || { echo "usage: $0 run OUTPUT_FOLDER" >&2; exit 2; }; run_checks "$2" ;;
    deterministic) [ $# -eq 2 ] || { echo "usage: $0 deterministic OUTPUT_FOLDER" >&2; exit 2; }
                   run_deterministic_check "$2" ;;
    wav) [ $# -eq 2 ] || { echo "usage: $0 wav OUTPUT_FOLDER" >&2; exit 2; }; run_wav_checks "$2" ;;
    overhead) [ $# -eq 2 ] || { echo "usage: $0 overhead OUTPUT_FOLDER" >&2; exit 2; }; run_overhead_checks "$2" ;;
    *) echo "usage: $0 wheels | run OUTPUT_FOLDER | deterministic OUTPUT_FOLDER | wav OUTPUT_FOLDER | overhead OUTPUT_FOLDER" >&2
       exit 2 ;;
esac
