"""Reproduce GRLNet against the DCASE 2020 autoencoder baseline on one protocol, over several seeds.

    python reproduce.py --protocol mimii_fan_id02 --seeds 0 1 2
    python reproduce.py --protocol tiny --out /tmp/reproduction      # CI: seconds, synthetic data
    python reproduce.py --protocol dcase2020_slider_id00 --jobs 9    # GPU: all nine runs share the card
    python reproduce.py --protocol folders --data_dir dev_data --jobs 9   # each data set in dev_data/

For every seed it trains and scores three methods on the same split, each in its own run folder
<out>/<protocol>/<method>/seed<k> (lite_smoke, folders: <out>/<protocol>/<data set>/<method>/seed<k>):
  grlnet_standard    GRLNet, --update standard (the project's defaults)
  grlnet_released    GRLNet, --update released (the release's joint update)
  dcase_autoencoder  the DCASE 2020 Task 2 autoencoder baseline (baselines/dcase_autoencoder.py)
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
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import matplotlib
import numpy as np

from baselines.dcase_autoencoder import EPOCHS as BASELINE_EPOCHS
from data.layouts import labelled_wav_items
from errors import UserError, make_folder
from main import run_cli
from metrics import labelled_metrics
from opts import changed_options, non_negative_int, parse_opts, positive_int, total_epochs
from plots import read_columns, read_named_scores, read_scores

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file-only backend)
from matplotlib.ticker import MaxNLocator  # noqa: E402

# Each GRLNet method: the options that make it, given to every one of its runs.
GRLNET_METHODS = {"grlnet_standard": ["--update", "standard"], "grlnet_released": ["--update", "released"],
                  "grlnet_fp32": ["--update", "standard", "--bf16", "False", "--compile", "False"]}
BASELINE = "dcase_autoencoder"
METHODS = (*GRLNET_METHODS, BASELINE)
DEFAULT_METHODS = ("grlnet_standard", "grlnet_released", BASELINE)
LABELS = {"grlnet_standard": "GRLNet, standard update", "grlnet_released": "GRLNet, released update",
          "grlnet_fp32": "GRLNet, standard update, fp32 eager", BASELINE: "DCASE 2020 autoencoder"}
# --quick: fewer windows and epochs, so that a 2-core CPU finishes the real-data protocols.
QUICK_ARGS = ["--epochs", "3", "--segment_hop", "8192"]
# Synthetic clips of 4096 samples (0.26 s): 9 mel frames, 5 stacked vectors for the baseline.
TINY_ARGS = ["--mess_length", "4096", "--segment_length", "256", "--segment_hop", "1024", "--epochs", "1",
             "--synthetic_train_clips", "4", "--synthetic_test_clips", "4"]
LITE_TRAIN_NORMAL = 2
REPO = Path(__file__).resolve().parent
POLL_SECONDS = 0.2  # how often the runs in flight are checked
INTERRUPTED = 130  # exit status of a run stopped by Ctrl-C/SIGINT after saving its checkpoint
GRLNET_ARGS_PROG = "reproduce.py --grlnet_args (train.py's options)"  # names them in their option errors
PER_RUN_OPTIONS = ("--update", "--bf16", "--compile", "--seed", "--output_dir")  # set by reproduce.py for every run
# DCASE's summaries of a test set's groups (metrics.labelled_metrics), kept where the file names give groups.
GROUP_SUMMARIES = {"id_average_auc": "AUC, mean over machine ids", "id_average_pauc": "pAUC, mean over machine ids",
                   "official_score": "DCASE official score"}
# The options of a run's list that the baseline reads (baselines/dcase_autoencoder.run_baseline).
BASELINE_OPTIONS = {"--data_root", "--train_root", "--train_label_path", "--test_root", "--test_label_path",
                    "--train_normal_files", "--sample_rate", "--mess_length", "--synthetic_train_clips",
                    "--synthetic_test_clips", "--seed", "--device", "--output_dir"}


@dataclass
class Task:
    """One data split: a name, the folder its runs go to, and the GRLNet options that select it."""

    name: str
    folder: Path
    data_args: list[str]


@dataclass
class Protocol:
    """What a protocol runs: its tasks, fixed options, default seeds and baseline epochs, and its standing."""

    summary: str
    tasks: Callable[[Path, Path], list[Task]]
    fixed_args: list[str] = field(default_factory=list)
    seeds: tuple[int, ...] = (0, 1, 2)
    baseline_epochs: int = BASELINE_EPOCHS
    standing: str = "result"


def existing(path: Path) -> Path:
    """``path`` if it is a folder, else an error that says where the data were looked for."""
    if not path.is_dir():
        raise UserError(f"{path}: data folder not found (give --data_dir, the folder holding the data sets)")
    return path


def mimii_tasks(data_dir: Path, folder: Path) -> list[Task]:
    """MIMII fan id_02: normal 00-04 train; normal 05-09 and every abnormal clip test."""
    root = existing(data_dir / "mimii_fan_id02")
    return [Task("mimii_fan_id02", folder, ["--data_root", str(root), "--train_normal_files", "5"])]


def slider_tasks(data_dir: Path, folder: Path) -> list[Task]:
    """DCASE 2020 slider id_00: train/ trains, test/ tests."""
    root = existing(data_dir / "dcase2020_slider_id00")
    return [Task("dcase2020_slider_id00", folder, ["--data_root", str(root)])]


def lite_split(test_folder: Path, split_folder: Path) -> Path:
    """A MIMII-layout folder of links to a lite test folder's clips: normal/ and abnormal/."""
    items = labelled_wav_items(test_folder)
    normal = sum(1 for _, label in items if label == 0)
    if normal <= LITE_TRAIN_NORMAL:
        raise UserError(f"{test_folder}: {normal} normal clips; the smoke split needs more than "
                        f"{LITE_TRAIN_NORMAL} (they train, the rest test)")
    shutil.rmtree(split_folder, ignore_errors=True)
    for path, label in items:
        target = split_folder / ("normal" if label == 0 else "abnormal") / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(path.resolve())
    return split_folder


def lite_tasks(data_dir: Path, folder: Path) -> list[Task]:
    """Per machine of dcase2020_lite: two normal test clips train, the others test (links in split/)."""
    machines = sorted(p for p in existing(data_dir / "dcase2020_lite").iterdir() if (p / "test").is_dir())
    if not machines:
        raise UserError(f"{data_dir / 'dcase2020_lite'}: no <machine>/test/ folders")
    return [Task(m.name, folder / m.name,
                 ["--data_root", str(lite_split(m / "test", folder / m.name / "split")),
                  "--train_normal_files", str(LITE_TRAIN_NORMAL)]) for m in machines]


def is_data_set(path: Path) -> bool:
    """Whether ``path`` holds a WAV data set in a layout --data_root reads (DCASE or MIMII)."""
    return any(all((path / part).is_dir() for part in parts) for parts in (("train", "test"), ("normal", "abnormal")))


def folder_tasks(data_dir: Path, folder: Path) -> list[Task]:
    """``data_dir`` itself if it is a data set, else each of its sub-folders that is one, as --data_root."""
    root = existing(data_dir)
    roots = [root] if is_data_set(root) else sorted(p for p in root.iterdir() if is_data_set(p))
    if not roots:
        raise UserError(f"{root}: neither a data set nor a folder of data sets (DCASE: <name>/train/ and "
                        "<name>/test/; MIMII: <name>/normal/ and <name>/abnormal/)")
    return [Task(r.name, folder / r.name, ["--data_root", str(r)]) for r in roots]


def synthetic_task(name: str) -> Callable[[Path, Path], list[Task]]:
    """The embedded synthetic data set (no data path), as task ``name``."""
    return lambda data_dir, folder: [Task(name, folder, [])]


PROTOCOLS = {
    "mimii_fan_id02": Protocol(
        "MIMII fan id_02 (0 dB): --data_root <data_dir>/mimii_fan_id02 --train_normal_files 5, so "
        "normal 00-04 train; normal 05-09 and all 10 abnormal clips test.", mimii_tasks),
    "dcase2020_slider_id00": Protocol(
        "DCASE 2020 slider id_00: --data_root <data_dir>/dcase2020_slider_id00; train/ (75 normal "
        "clips) trains, test/ (3 normal, 3 anomalous) tests.", slider_tasks),
    "folders": Protocol(
        "Your data: --data_dir DIR, a data set or a folder of them (DCASE: <name>/train/ and <name>/test/, "
        "e.g. a DCASE development set's machine types; MIMII: <name>/normal/ and <name>/abnormal/, the first "
        "half of normal/ trains); one task per data set, at the WAV preset.", folder_tasks),
    "lite_smoke": Protocol(
        "SMOKE TEST, never a result: for each <data_dir>/dcase2020_lite/<machine>/test/ (3 normal, 3 "
        "anomalous clips) two normal clips train and the rest test (links in <machine>/split/, "
        "--train_normal_files 2).", lite_tasks, standing="smoke test, never a result"),
    "demo": Protocol(
        "The embedded synthetic valve data set at the demo preset (what `python train.py` runs); with "
        "--methods grlnet_standard grlnet_fp32 on a GPU it compares bf16 + compile with fp32.",
        synthetic_task("demo")),
    "tiny": Protocol(
        "CI: the embedded synthetic data set with minimal settings (" + " ".join(TINY_ARGS) + "), one "
        "seed, baseline 2 epochs; checks the pipeline in seconds, never a result.", synthetic_task("tiny"),
        fixed_args=TINY_ARGS, seeds=(0,), baseline_epochs=2,
        standing="CI check on synthetic data, never a result"),
}


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
    p.add_argument("--seeds", type=non_negative_int, nargs="+", default=None,
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
    clashes = sorted({token.split("=")[0] for token in passed} & set(PER_RUN_OPTIONS))
    if clashes:
        raise UserError(f"--grlnet_args may not set {', '.join(clashes)}: reproduce.py sets it for every run")
    return extra + passed


def method_argv(task: Task, method: str, seed: int, shared: list[str]) -> list[str]:
    """The GRLNet option list of one run (the baseline parses the same list for its data)."""
    run_folder = task.folder / method / f"seed{seed}"
    return [*task.data_args, *GRLNET_METHODS.get(method, []), "--seed", str(seed),
            "--output_dir", str(run_folder), "--quiet", *shared]


def run_command(method: str, argv: list[str], baseline_epochs: int) -> list[str]:
    """The command line of one run, in a fresh Python process: train.py, or the baseline's module."""
    if method == BASELINE:
        return [sys.executable, "-m", "baselines.dcase_autoencoder", *argv, "--baseline_epochs", str(baseline_epochs)]
    return [sys.executable, str(REPO / "train.py"), *argv]


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
    """What results.json keeps of one run: AUC, pAUC and DCASE's per-group summaries where defined
    (``seconds``, its wall time, is None for an earlier run)."""
    groups = {key: value for key in GROUP_SUMMARIES if (value := _finite_or_none(metrics.get(key))) is not None}
    return {"output_dir": output_dir, "auc": float(metrics["auc"]), "pauc": float(metrics["pauc"]), **groups,
            "auc_per_epoch": auc_per_epoch, "seconds": None}


def grlnet_result(output_dir: str) -> dict:
    """A GRLNet run's result as its metrics.csv records it: the last epoch's metrics, AUC per epoch."""
    columns = read_columns(Path(output_dir) / "metrics.csv")
    return result(output_dir, {name: values[-1] for name, values in columns.items()}, columns["auc"].tolist())


def summarise(values: list[float]) -> dict:
    """Per-seed values, their mean and population standard deviation."""
    return {"per_seed": values, "mean": float(np.mean(values)), "std": float(np.std(values))}


def stored_options_match(argv: list[str]) -> bool:
    """Whether a GRLNet run folder's options.json holds these options (an option it predates counts
    at its default; ``--resume``, which only says how the run was continued, is not compared)."""
    opt = parse_opts(argv)
    options_json = Path(opt.output_dir) / "options.json"
    if not options_json.is_file():
        return False
    return not changed_options(json.loads(options_json.read_text()), opt, ignore={"resume"})


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
    if len(read_columns(folder / "metrics.csv")["epoch"]) != total_epochs(opt):
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
    commands = [run_command(planned[i][0], planned[i][2] + (["--resume"] if i in resumed else []),
                            baseline_epochs) for i in to_run]
    names = [f"[{task.name}] {planned[i][0]} seed {planned[i][1]}" for i in to_run]
    seconds = dict(zip(to_run, run_commands(commands, names, jobs)))
    runs = {}
    for index, (method, seed, argv) in enumerate(planned):
        result = earlier[index] or {**run_result(method, parse_opts(argv).output_dir), "seconds": seconds[index]}
        note = "  (earlier run, --reuse)" if earlier[index] else ""
        print(f"[{task.name}] {method} seed {seed}: AUC {result['auc']:.4f}  pAUC {result['pauc']:.4f}{note}",
              flush=True)
        runs.setdefault(method, []).append({"seed": seed, "argv": argv, "resumed": index in resumed, **result})
    return {"methods": {method: {**{key: summarise([r[key] for r in method_runs])
                                    for key in ("auc", "pauc", *GROUP_SUMMARIES) if all(key in r for r in method_runs)},
                                 "runs": method_runs}
                        for method, method_runs in runs.items()}}


def check_argv(tasks: list[Task], methods: Sequence[str], seeds: Sequence[int], shared: list[str]) -> None:
    """Parse every run's options before training anything, so a typo fails at once."""
    for task in tasks:
        for method in methods:
            parse_opts(method_argv(task, method, seeds[0], shared), prog=GRLNET_ARGS_PROG)


def options_shown(method: str, argv: list[str]) -> list[str]:
    """A run's option list as results.md shows it: for the baseline only the options it reads."""
    if method != BASELINE:
        return argv
    shown, keep = [], False
    for token in argv:
        if token.startswith("--"):
            keep = token.split("=")[0] in BASELINE_OPTIONS
        if keep:
            shown.append(token)
    return shown


def _fmt(summary: dict) -> tuple[str, str]:
    return (f"{summary['mean']:.4f} ± {summary['std']:.4f}",
            ", ".join(f"{v:.4f}" for v in summary["per_seed"]))


def wall_times(runs: list[dict]) -> str:
    """Each run's wall time in minutes, in seed order ("earlier" for a run kept by --reuse; a resumed
    run's time is that of its rest)."""
    return ", ".join(f"seed {r['seed']}: "
                     + ("earlier" if r["seconds"] is None else f"{r['seconds'] / 60:.1f} min")
                     + (" (resumed)" if r.get("resumed") else "") for r in runs)


def group_summary_table(methods: dict) -> list[str]:
    """results.md's lines for DCASE's per-group summaries (mean ± std over seeds), where a method has them."""
    keys = [key for key in GROUP_SUMMARIES if any(key in summary for summary in methods.values())]
    if not keys:
        return []
    lines = ["", "DCASE's summaries over the machine ids or sections of the test clips' names, mean ± std over "
             "seeds (each run's machine_ids.csv or sections.csv has every group):", "",
             "| method | " + " | ".join(GROUP_SUMMARIES[key] for key in keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for method, summary in methods.items():
        cells = [_fmt(summary[key])[0] if key in summary else "n/a" for key in keys]
        lines.append(f"| {LABELS[method]} | " + " | ".join(cells) + " |")
    return lines


def results_markdown(results: dict) -> str:
    """results.md: one table per task, its standing, the command and every run's options."""
    lines = [f"# Reproduction: {results['protocol']}", "",
             f"Standing: **{results['standing']}**.", "",
             f"Command: `{results['command']}`", "",
             f"Seeds: {', '.join(map(str, results['seeds']))}. AUC and pAUC (max FPR 0.1) at the final "
             "epoch of every run; no epoch or setting was chosen on test clips. Mean ± population std "
             "over seeds.", ""]
    for task_name, task in results["tasks"].items():
        lines += [f"## {task_name}", "", "| method | AUC | pAUC | AUC per seed | pAUC per seed |",
                  "|---|---|---|---|---|"]
        for method, summary in task["methods"].items():
            (auc, auc_seeds), (pauc, pauc_seeds) = _fmt(summary["auc"]), _fmt(summary["pauc"])
            lines.append(f"| {LABELS[method]} | {auc} | {pauc} | {auc_seeds} | {pauc_seeds} |")
        lines += group_summary_table(task["methods"])
        lines += ["", "Options of the first seed's runs (other seeds differ in --seed and --output_dir):", ""]
        lines += [f"- {method}: `{shlex.join(options_shown(method, summary['runs'][0]['argv']))}`"
                  for method, summary in task["methods"].items()]
        if BASELINE in task["methods"]:
            lines.append(f"  (the autoencoder reads only its data options, --seed and --device, and trains "
                         f"{results['baseline_epochs']} epochs)")
        lines += ["", "| method | wall time per run (this invocation; runs kept by --reuse: earlier) |",
                  "|---|---|"]
        lines += [f"| {LABELS[method]} | {wall_times(summary['runs'])} |"
                  for method, summary in task["methods"].items()]
        lines.append("")
    return "\n".join(lines)


def latex_text(text: str) -> str:
    """``text`` with the characters LaTeX reads as commands escaped (names such as mimii_fan_id02)."""
    return "".join("\\" + char if char in "_&%#$" else char for char in text)


def results_latex(results: dict) -> str:
    """results.tex: one booktabs table per task (mean ± population std over seeds; DCASE's summaries where
    the test names give groups), for a paper."""
    def cell(summary: dict) -> str:
        return f"${summary['mean']:.4f} \\pm {summary['std']:.4f}$"

    seeds = ", ".join(map(str, results["seeds"]))
    blocks = [r"% written by python reproduce.py; needs \usepackage{booktabs}"]
    for task_name, task in results["tasks"].items():
        caption = latex_text(f"{task_name}: final-epoch AUC and pAUC (max FPR 0.1), mean ± population standard "
                             f"deviation over seeds {seeds} ({results['standing']}).").replace("±", r"$\pm$")
        keys = ["auc", "pauc", *(k for k in GROUP_SUMMARIES if any(k in m for m in task["methods"].values()))]
        header = " & ".join(["Method", "AUC", "pAUC", *(GROUP_SUMMARIES[k] for k in keys[2:])])
        rows = [" & ".join([LABELS[method], *(cell(summary[k]) if k in summary else "--" for k in keys)]) + r" \\"
                for method, summary in task["methods"].items()]
        blocks += [r"\begin{table}[t]", r"\centering", f"\\caption{{{caption}}}",
                   f"\\begin{{tabular}}{{l{'c' * len(keys)}}}", r"\toprule", header + r" \\", r"\midrule", *rows,
                   r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(blocks)


def plot_auc_per_epoch(results: dict, path: Path) -> None:
    """AUC after each epoch, one line per seed, one panel per task and GRLNet method."""
    tasks, methods = results["tasks"], [m for m in results["methods"] if m in GRLNET_METHODS]
    fig, axes = plt.subplots(len(tasks), len(methods), squeeze=False,
                             figsize=(5 * len(methods), 3.2 * len(tasks)))
    for row, (task_name, task) in zip(axes, tasks.items()):
        for ax, method in zip(row, methods):
            for run in task["methods"][method]["runs"]:
                epochs = np.arange(1, len(run["auc_per_epoch"]) + 1)
                ax.plot(epochs, run["auc_per_epoch"], marker="o", label=f"seed {run['seed']}")
            ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
            ax.set(title=f"{LABELS[method]}\n{task_name}", xlabel="epoch", ylabel="test AUC",
                   ylim=(-0.02, 1.02))
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_score_distributions(results: dict, path: Path) -> None:
    """Histograms of the final scores, normal against abnormal, per task and method, first seed."""
    tasks, methods = results["tasks"], results["methods"]
    fig, axes = plt.subplots(len(tasks), len(methods), squeeze=False,
                             figsize=(4.5 * len(methods), 3.2 * len(tasks)))
    for row, (task_name, task) in zip(axes, tasks.items()):
        for ax, method in zip(row, methods):
            run = task["methods"][method]["runs"][0]
            labels, scores = read_scores(Path(run["output_dir"]) / "scores.csv")
            bins = np.histogram_bin_edges(scores, bins=20)
            ax.hist(scores[labels == 0], bins=bins, alpha=0.6, label="normal")
            ax.hist(scores[labels == 1], bins=bins, alpha=0.6, label="abnormal")
            ax.set(title=f"{LABELS[method]}\n{task_name}, seed {run['seed']}, AUC {run['auc']:.3f}",
                   xlabel="anomaly score", ylabel="clips")
            ax.xaxis.set_major_locator(MaxNLocator(4))
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """reproduce.py's options, with the command line itself kept as ``argv`` for results.json."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the protocol, write results.md, results.json and the two figures; return the results."""
    return run_protocol(parse_args(argv))


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
    (folder / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (folder / "results.md").write_text(results_markdown(results))
    (folder / "results.tex").write_text(results_latex(results))
    figures = ["score_distributions.png"]
    plot_score_distributions(results, folder / "score_distributions.png")
    if any(m in GRLNET_METHODS for m in methods):
        figures.insert(0, "auc_per_epoch.png")
        plot_auc_per_epoch(results, folder / "auc_per_epoch.png")
    print(f"wrote {folder / 'results.md'}, results.json, results.tex, {', '.join(figures)}")
    return results


if __name__ == "__main__":  # Ctrl-C, or SIGINT to the process group: each run saves a checkpoint
    run_cli(run_protocol, parse_args, interrupted="interrupted: run the same command with --reuse to continue")
