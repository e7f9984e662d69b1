"""Redraw a run's figures from its files (metrics.csv, scores.csv, figures/examples.npz), without the model.

    python -m experiments.redraw runs/RUN     # every figure it can, into runs/RUN/figures/, paths printed
"""
from __future__ import annotations

import argparse

from grlnet.cli import run_cli
from grlnet.plots import redraw


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The run folder to redraw."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_folder", help="a run folder written by train.py or test.py")
    return parser.parse_args(argv)


def print_redrawn(args: argparse.Namespace) -> None:
    """Redraw the figures and print each one's path."""
    for path in redraw(args.run_folder):
        print(path)


if __name__ == "__main__":
    run_cli(print_redrawn, parse_args)
