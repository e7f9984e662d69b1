"""The runs of a protocol: each method and seed trained and scored in its own process, several at a
time, kept or continued from an earlier invocation (--reuse), and read back into results."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from data.console import UserError
from experiments.repro.protocols import Task
from grlnet.metrics import SCORE_AUC_COLUMNS, TERM_AUC_COLUMNS, labelled_metrics
from grlnet.results import read_columns, read_named_scores
from opts import build_parser, changed_options, completed_options, given_option_names, parse_opts

# Each GRLNet method: the options that make it, given to every one of its runs.
GRLNET_METHODS = {"grlnet_standard": ["--update", "standard"], "grlnet_released": ["--update", "released"],
                  "grlnet_fp32": ["--update", "standard", "--bf16", "False", "--compile", "False"]}
BASELINE = "dcase_autoencoder"
METHODS = (*GRLNET_METHODS, BASELINE)
DEFAULT_METHODS = ("grlnet_standard", "grlnet_released", BASELINE)
LABELS = {"grlnet_standard": "GRLNet, standard update", "grlnet_released": "GRLNet, released update",
          "grlnet_fp32": "GRLNet, standard update, fp32 eager", BASELINE: "DCASE 2020 autoencoder"}
# DCASE's summaries of a test set's groups (metrics.labelled_metrics), kept where the file names give groups.
GROUP_SUMMARIES = {"id_average_auc": "AUC, mean over machine ids", "id_average_pauc": "pAUC, mean over machine ids",
                   "official_score": "DCASE official score"}
# GRLNet's diagnostic: the AUC of each of its score's terms alone (metrics.score_aucs).
TERM_AUCS = {column: f"{label} alone" for column, label in TERM_AUC_COLUMNS.items()}
# GRLNet's scores, each one's AUC (metrics.score_aucs): --score picks one, every one is reported.
SCORE_AUCS = dict(SCORE_AUC_COLUMNS)
REPO = Path(__file__).resolve().parents[2]
POLL_SECONDS = 0.2  # how often the runs in flight are checked
INTERRUPTED = 130  # exit status of a run stopped by Ctrl-C/SIGINT after saving its checkpoint
GRLNET_ARGS_PROG = "reproduce.py --grlnet_args (train.py's options)"  # names them in their option errors


def own_args(method: str, seed: int, run_folder: Path) -> list[str]:
    """The options reproduce.py sets for one run itself: the method's, the seed, the run folder."""
    return [*GRLNET_METHODS.get(method, []), "--seed", str(seed), "--output_dir", str(run_folder)]


def method_argv(task: Task, method: str, seed: int, shared: list[str]) -> list[str]:
    """The GRLNet option list of one run (the baseline parses the same list for its data)."""
    return [*task.data_args, *own_args(method, seed, task.folder / method / f"seed{seed}"), "--quiet", *shared]


def per_run_options() -> frozenset[str]:
    """The options reproduce.py sets for every run (``own_args`` of each method, and ``start_option``'s
    --overwrite), which the options it passes on to every run may not set."""
    argv = [arg for method in GRLNET_METHODS for arg in own_args(method, 0, Path("run"))]
    return given_option_names(build_parser(), [*argv, "--overwrite"])


def run_command(method: str, argv: list[str], baseline_epochs: int) -> list[str]:
    """The command line of one run, in a fresh Python process: train.py, or the baseline's module."""
    if method == BASELINE:
        return [sys.executable, "-m", "experiments.baselines.dcase_autoencoder", *argv,
                "--baseline_epochs", str(baseline_epochs)]
    return [sys.executable, str(REPO / "train.py"), *argv]


def start_option(method: str, argv: list[str], resumed: bool) -> list[str]:
    """How a GRLNet run starts in its folder: ``--resume`` continues an interrupted run, ``--overwrite``
    replaces whatever an earlier invocation left there (train.py refuses a folder holding a run otherwise),
    unless its options already resume a checkpoint."""
    if resumed:
        return ["--resume"]
    return ["--overwrite"] if method in GRLNET_METHODS and not parse_opts(argv).resume else []


def run_result(method: str, output_dir: str) -> dict:
    """A finished run's result, read from its folder: GRLNet's metrics.csv, the baseline's scores.csv."""
    if method == BASELINE:
        names, labels, scores = read_named_scores(Path(output_dir) / "scores.csv")
        return result(output_dir, labelled_metrics(labels, scores, names))
    return grlnet_result(output_dir)


def run_commands(commands: list[list[str]], names: list[str], jobs: int) -> list[float]:
    """Run each command in its own process, ``jobs`` at a time; return each one's wall time (s).

    Ctrl-C, or a run that fails, stops the runs still going with SIGINT: a GRLNet run finishes its
    step, saves a checkpoint and exits, so ``--reuse`` continues it.
    """
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH")))))
    waiting, running, seconds = list(range(len(commands))), {}, [0.0] * len(commands)
    try:
        while waiting or running:
            while waiting and len(running) < jobs:
                index = waiting.pop(0)
                running[index] = (subprocess.Popen(commands[index], env=env), time.perf_counter())
            for index, (process, started) in list(running.items()):
                if process.poll() is None:
                    continue
                del running[index]
                if process.returncode == INTERRUPTED:
                    raise KeyboardInterrupt
                if process.returncode != 0:
                    stopped = "; the runs in flight were stopped at a checkpoint" if running else ""
                    raise UserError(f"{names[index]} failed (exit status {process.returncode}, its output is "
                                    f"above){stopped}: fix the cause and continue with --reuse")
                seconds[index] = round(time.perf_counter() - started, 1)
            time.sleep(POLL_SECONDS)
    finally:
        for process, _ in running.values():
            process.send_signal(signal.SIGINT)
        for process, _ in running.values():
            process.wait()
    return seconds


def _finite_or_none(value: object) -> float | None:
    """``value`` as a finite float, else None (an empty metrics.csv cell, an undefined metric)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def result(output_dir: str, metrics: dict, auc_per_epoch: list[float] | None = None) -> dict:
    """What results.json keeps of one run: AUC, pAUC, and DCASE's per-group summaries and GRLNet's
    score terms' and scores' AUCs where defined (``seconds``, its wall time, is None for an earlier run)."""
    extras = {key: value for key in (*GROUP_SUMMARIES, *TERM_AUCS, *SCORE_AUCS)
              if (value := _finite_or_none(metrics.get(key))) is not None}
    return {"output_dir": output_dir, "auc": float(metrics["auc"]), "pauc": float(metrics["pauc"]), **extras,
            "auc_per_epoch": auc_per_epoch, "seconds": None}


def grlnet_result(output_dir: str) -> dict:
    """A GRLNet run's result as its metrics.csv records it: the last epoch's metrics, AUC per epoch."""
    columns = read_columns(Path(output_dir) / "metrics.csv")
    return result(output_dir, {name: values[-1] for name, values in columns.items()}, columns["auc"].tolist())


def summarise(values: list[float]) -> dict:
    """Per-seed values, their mean and population standard deviation."""
    return {"per_seed": values, "mean": float(np.mean(values)), "std": float(np.std(values))}


def stored_options_match(argv: list[str]) -> bool:
    """Whether a GRLNet run folder's options.json holds these options (``--resume`` and ``--overwrite``,
    which only say how the run started, are not compared)."""
    opt = parse_opts(argv)
    options_json = Path(opt.output_dir) / "options.json"
    if not options_json.is_file():
        return False
    stored = completed_options(json.loads(options_json.read_text()))
    return not changed_options(stored, opt, ignore={"resume", "overwrite"})


def finished_run(method: str, argv: list[str]) -> dict | None:
    """The result of an earlier, finished run in this run's folder (``--reuse``), else None.

    A GRLNet run counts when its options match (``stored_options_match``) and metrics.csv holds
    every epoch; a baseline run when its scores.csv exists (written only at its end).
    """
    opt = parse_opts(argv)
    folder = Path(opt.output_dir)
    if method == BASELINE:
        return run_result(method, opt.output_dir) if (folder / "scores.csv").is_file() else None
    if not (stored_options_match(argv) and (folder / "metrics.csv").is_file()):
        return None
    if len(read_columns(folder / "metrics.csv")["epoch"]) != opt.epochs:
        return None
    return grlnet_result(opt.output_dir)


def interrupted_run(method: str, argv: list[str]) -> bool:
    """Whether this run's folder holds an interrupted GRLNet run with these options and a checkpoint
    (``--reuse`` continues it with ``--resume`` instead of starting again)."""
    checkpoint = Path(parse_opts(argv).output_dir) / "checkpoints" / "last.pt"
    return method in GRLNET_METHODS and checkpoint.is_file() and stored_options_match(argv)


def run_task(task: Task, methods: Sequence[str], seeds: Sequence[int], shared: list[str], baseline_epochs: int,
             jobs: int, reuse: bool) -> dict:
    """Every method on every seed of one task, ``jobs`` runs at a time, summarised per method."""
    planned = [(method, seed, method_argv(task, method, seed, shared)) for method in methods for seed in seeds]
    earlier = {index: finished_run(method, argv) if reuse else None
               for index, (method, _, argv) in enumerate(planned)}
    to_run = [index for index, result in earlier.items() if result is None]
    resumed = set()
    for index in to_run:
        method, seed, argv = planned[index]
        if not (reuse and interrupted_run(method, argv)):
            continue
        resumed.add(index)
        print(f"[{task.name}] {method} seed {seed}: continuing the interrupted run from its last checkpoint",
              flush=True)
    commands = []
    for index in to_run:
        method, _, argv = planned[index]
        commands.append(run_command(method, argv + start_option(method, argv, index in resumed), baseline_epochs))
    names = [f"[{task.name}] {planned[i][0]} seed {planned[i][1]}" for i in to_run]
    seconds = dict(zip(to_run, run_commands(commands, names, jobs), strict=True))
    runs = {}
    for index, (method, seed, argv) in enumerate(planned):
        result = earlier[index] or {**run_result(method, parse_opts(argv).output_dir), "seconds": seconds[index]}
        note = "  (earlier run, --reuse)" if earlier[index] else ""
        print(f"[{task.name}] {method} seed {seed}: AUC {result['auc']:.4f}  pAUC {result['pauc']:.4f}{note}",
              flush=True)
        runs.setdefault(method, []).append({"seed": seed, "argv": argv, "resumed": index in resumed, **result})
    return {"methods": {method: {**{key: summarise([r[key] for r in method_runs])
                                    for key in ("auc", "pauc", *GROUP_SUMMARIES, *TERM_AUCS, *SCORE_AUCS)
                                    if all(key in r for r in method_runs)},
                                 "runs": method_runs}
                        for method, method_runs in runs.items()}}


def check_argv(tasks: list[Task], methods: Sequence[str], seeds: Sequence[int], shared: list[str]) -> None:
    """Parse every run's options before training anything, so a typo fails at once."""
    for task in tasks:
        for method in methods:
            parse_opts(method_argv(task, method, seeds[0], shared), prog=GRLNET_ARGS_PROG)
