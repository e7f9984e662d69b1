"""The arithmetic rate one device reaches on large matrix products, fp32 and bf16: the yardstick that
BENCHMARKS.md sets GRLNet's training steps against ("The WAV preset on a CPU").

    OMP_NUM_THREADS=1 python -m experiments.tools.matmul_peak
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

from experiments.bench import time_steps


def tflops(size: int, dtype: torch.dtype, device: torch.device, repeats: int) -> float:
    """TFLOP/s of ``repeats`` products of two ``size`` x ``size`` matrices, after one untimed product."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    torch.mm(a, b)
    return 2 * size ** 3 / time_steps(lambda: torch.mm(a, b), repeats, device) / 1e12


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2048, help="rows and columns of each matrix")
    parser.add_argument("--repeats", type=int, default=10, help="timed products per precision")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    print(f"{args.size} x {args.size} matrix products on {device.type} ({torch.get_num_threads()} threads)")
    for dtype in (torch.float32, torch.bfloat16):
        print(f"{str(dtype).removeprefix('torch.'):<9} {tflops(args.size, dtype, device, args.repeats):.4f} TFLOP/s",
              flush=True)


if __name__ == "__main__":
    main()
