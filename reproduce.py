"""Reproduce GRLNet against the DCASE 2020 autoencoder baseline on one protocol, over several seeds.

    python reproduce.py --protocol mimii_fan_id02 --seeds 0 1 2
    python reproduce.py --protocol tiny --out /tmp/reproduction      # CI: seconds, synthetic data
    python reproduce.py --protocol dcase2020_slider_id00 --jobs 9    # GPU: all nine runs share the card
    python reproduce.py --protocol folders --data_dir dev_data --jobs 9   # each data set in dev_data/

For every seed it trains and scores three methods on the same split, each in its own run folder
<out>/<protocol>/<method>/seed<k> (lite_smoke, folders: <out>/<protocol>/<data set>/<method>/seed<k>):
  grlnet_standard    GRLNet, --update standard (the project's defaults)
  grlnet_released    GRLNet, --update released (the release's joint update)
  dcase_autoencoder  the DCASE 2020 Task 2 autoencoder baseline (experiments/baselines/dcase_autoencoder.py)
and on request (--methods) a fourth, to compare precisions on a GPU (BENCHMARKS.md):
  grlnet_fp32        GRLNet's defaults without bf16 and torch.compile (the same run as grlnet_standard on CPU)
Metrics are those of the final epoch of every run: no epoch and no setting is chosen on test clips.
It writes <out>/<protocol>/results.md, results.json, results.tex (booktabs tables for a paper),
score_distributions.png and (with a GRLNet method) auc_per_epoch.png. --reuse keeps finished runs
found in the run folders and continues interrupted GRLNet runs from their last checkpoint (saved
after every epoch and every --checkpoint_minutes), so an interrupted protocol continues where it
stopped.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from data.console import UserError, make_folder
from data.files import write_json, write_text
from experiments.baselines.dcase_autoencoder import EPOCHS as BASELINE_EPOCHS
from experiments.repro.protocols import PROTOCOLS, Protocol
from experiments.repro.report import plot_auc_per_epoch, plot_score_distributions, results_latex, results_markdown
from experiments.repro.runs import (
    DEFAULT_METHODS,
    GRLNET_ARGS_PROG,
    GRLNET_METHODS,
    METHODS,
    check_argv,
    per_run_options,
    run_task,
)
from grlnet.cli import run_cli
from opts import build_parser as build_grlnet_parser
from opts import given_option_names, positive_int, seed_value

# --quick: fewer windows and epochs, so that a 2-core CPU finishes the real-data protocols.
QUICK_ARGS = ["--epochs", "3", "--segment_hop", "8192"]


def build_parser() -> argparse.ArgumentParser:
    """The options of reproduce.py; the protocols are described in the epilog."""
    epilog = "protocols:\n" + "\n".join(
        textwrap.fill(f"{name}: {p.summary}", 100, initial_indent="  ", subsequent_indent="      ")
        for name, p in PROTOCOLS.items())
    p = argparse.ArgumentParser(description=__doc__, epilog=epilog,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--protocol", required=True, choices=PROTOCOLS, help="which data and split (below)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(DEFAULT_METHODS),
                   help="methods to run (default: " + " ".join(DEFAULT_METHODS) + ")")
    p.add_argument("--seeds", type=seed_value, nargs="+", default=None,
                   help="seeds to run (default 0 1 2; tiny: 0)")
    p.add_argument("--data_dir", default="../shared/data",
                   help="folder holding the data sets (default %(default)s)")
    p.add_argument("--out", default="reproduction", help="output folder (default %(default)s)")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="GRLNet epochs (default: GRLNet's preset for the data, 8 for WAV; tiny 1)")
    p.add_argument("--baseline_epochs", type=positive_int, default=None,
                   help=f"autoencoder epochs (default {BASELINE_EPOCHS}; tiny 2)")
    p.add_argument("--mess_length", type=positive_int, default=None,
                   help="clip length in samples for all three methods (default: GRLNet's preset, "
                        "160000 for WAV; tiny 4096, the baseline needs at least 2048)")
    p.add_argument("--quick", action="store_true",
                   help="reduced GRLNet settings for a CPU (" + " ".join(QUICK_ARGS) + "); labelled as such")
    p.add_argument("--jobs", type=positive_int, default=1,
                   help="runs at a time, each in its own process (default 1); on a GPU several small "
                        "runs share the card, e.g. --jobs 9 runs every method and seed of a task at once")
    p.add_argument("--reuse", action="store_true",
                   help="keep earlier finished runs found in the run folders (GRLNet: same options and "
                        "every epoch in metrics.csv; baseline: its scores.csv), continue interrupted GRLNet "
                        "runs with the same options from their checkpoints/last.pt, and run only the rest")
    p.add_argument("--grlnet_args", default="",
                   help="extra options for every run, after all others, e.g. \"--epochs 3 --segment_hop "
                        "8192\" or \"--device cpu\" (the baseline reads the data options and --device)")
    return p


def run_args(protocol: Protocol, args: argparse.Namespace) -> list[str]:
    """Options shared by every run of the protocol, later ones overriding earlier ones."""
    extra = list(protocol.fixed_args) + (QUICK_ARGS if args.quick else [])
    if args.epochs is not None:
        extra += ["--epochs", str(args.epochs)]
    if args.mess_length is not None:
        extra += ["--mess_length", str(args.mess_length)]
    try:
        passed = shlex.split(args.grlnet_args)
    except ValueError as err:
        raise UserError(f"--grlnet_args {args.grlnet_args!r}: {err}") from None
    given = given_option_names(build_grlnet_parser(prog=GRLNET_ARGS_PROG), passed)  # --no-bf16 sets bf16
    clashes = [f"--{name}" for name in sorted(given & per_run_options())]
    if clashes:
        raise UserError(f"--grlnet_args may not set {', '.join(clashes)}: reproduce.py sets it for every run")
    return extra + passed


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """reproduce.py's options, with the command line itself kept as ``argv`` for results.json."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    return args


def run_protocol(args: argparse.Namespace) -> dict:
    """The body of reproduce.py, for options from ``parse_args``."""
    protocol = PROTOCOLS[args.protocol]
    seeds = args.seeds or list(protocol.seeds)
    folder = Path(args.out) / args.protocol
    tasks = protocol.tasks(Path(args.data_dir), folder)
    make_folder(folder, "output folder (--out)")
    shared = run_args(protocol, args)
    methods = [m for m in METHODS if m in args.methods]
    check_argv(tasks, methods, seeds, shared)
    baseline_epochs = args.baseline_epochs or protocol.baseline_epochs
    standing = protocol.standing + (" (reduced --quick settings)" if args.quick else "")
    results = {"protocol": args.protocol, "standing": standing,
               "command": shlex.join(["python", "reproduce.py", *args.argv]), "methods": methods, "seeds": seeds,
               "baseline_epochs": baseline_epochs,
               "tasks": {t.name: run_task(t, methods, seeds, shared, baseline_epochs, args.jobs, args.reuse)
                         for t in tasks}}
    write_json(folder / "results.json", results, "results file")
    write_text(folder / "results.md", results_markdown(results), "results file")
    write_text(folder / "results.tex", results_latex(results), "results file")
    figures = ["score_distributions.png"]
    plot_score_distributions(results, folder / "score_distributions.png")
    if any(m in GRLNET_METHODS for m in methods):
        figures.insert(0, "auc_per_epoch.png")
        plot_auc_per_epoch(results, folder / "auc_per_epoch.png")
    print(f"wrote {folder / 'results.md'}, results.json, results.tex, {', '.join(figures)}")
    return results


if __name__ == "__main__":  # Ctrl-C, or SIGINT to the process group: each run saves a checkpoint
    run_cli(run_protocol, parse_args, interrupted="interrupted: run the same command with --reuse to continue")
