"""All options of GRLNet and all their defaults.

The release's option names and defaults keep working. A few options depend on the
kind of data: the release's CSV layout keeps the release's values, the embedded demo and WAV
folders use the presets below. A value given on the command line always wins.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import sys
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import NamedTuple, TypeVar

from data import DataSettings
from data.console import UserError
from grlnet.evaluate import Scoring
from grlnet.runtime import LEARNING_RATE_BATCH, LearningRates
from grlnet.scores import DEFAULT_SCORE, PAPER_SCORE, SCORES
from grlnet.scoring import ScoringSettings
from grlnet.steps import StepSettings
from network import GLOBAL_FILTERS, discriminator_feature_length

SettingsT = TypeVar("SettingsT")

# Options whose default depends on the data (None on the parser, filled in by ``resolve_presets``). The
# release's batch is the one its learning rates are set for (runtime.LEARNING_RATE_BATCH).
RELEASE_PRESET = {
    "mess_length": 233472, "segment_length": 0, "segment_hop": 0, "epochs": 1, "batch_size": LEARNING_RATE_BATCH,
    "train_windows_per_clip": 0, "eval_windows_per_clip": 0, "score": PAPER_SCORE,
}
# Embedded synthetic valve data: short clips cut into windows so a 2-core CPU trains in minutes.
DEMO_PRESET = {
    "mess_length": 4096, "segment_length": 1024, "segment_hop": 1024, "epochs": 3, "batch_size": 2,
    "train_windows_per_clip": 0, "eval_windows_per_clip": 0, "score": DEFAULT_SCORE,
}
# Real 10 s recordings at 16 kHz: windows of 1024 samples every 4096, clip score = window mean; each epoch
# trains on 4 windows drawn per clip and evaluates 4 per clip before the last epoch, chosen by the rule in
# REPRODUCTION.md ("The training budget") (docs/METHOD.md, "Presets").
WAV_PRESET = {
    "mess_length": 160000, "segment_length": 1024, "segment_hop": 4096, "epochs": 8, "batch_size": 2,
    "train_windows_per_clip": 4, "eval_windows_per_clip": 4, "score": DEFAULT_SCORE,
}
PRESETS = {"csv": RELEASE_PRESET, "synthetic": DEMO_PRESET, "wav": WAV_PRESET}
WINDOW_BUDGETS = ("train_windows_per_clip", "eval_windows_per_clip")  # how many of a clip's windows an epoch uses


def str2bool(value: str | bool) -> bool:
    """Parse the release's ``--flag True/False`` spelling (its ``type=bool`` read 'False' as True)."""
    if isinstance(value, bool):
        return value
    lowered = value.lower()
    if lowered in ("true", "1", "yes", "y", "on"):
        return True
    if lowered in ("false", "0", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (True/False), got {value!r}")


def _add_flag(parser: argparse.ArgumentParser, name: str, default: bool, help: str) -> None:
    """A boolean option accepting ``--name``, ``--no-name`` and the release's ``--name False``."""
    parser.add_argument(f"--{name}", type=str2bool, nargs="?", const=True, default=default,
                        metavar="BOOL", help=help)
    parser.add_argument(f"--no-{name}", dest=name, action="store_false", help=argparse.SUPPRESS)


def _int_at_least(minimum: int, expected: str, name: str, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum`` (and <= ``maximum``); its error says ``expected``,
    argparse names it ``name``."""
    def parse(value: str) -> int:
        number = int(value)
        if number < minimum:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        if maximum is not None and number > maximum:
            raise argparse.ArgumentTypeError(f"expected at most {maximum}, got {value}")
        return number
    parse.__name__ = name
    return parse


# Also used by experiments/bench.py, reproduce.py and the baseline.
positive_int = _int_at_least(1, "a positive integer", "positive_int")
non_negative_int = _int_at_least(0, "an integer >= 0", "non_negative_int")  # counts that may be 0
seed_value = _int_at_least(0, "an integer >= 0", "seed_value", maximum=2**31 - 1)  # torch's and numpy's seeds
test_clip_count = _int_at_least(2, "at least 2 (a normal and an abnormal clip)", "test_clip_count")


def positive_number(value: str) -> float:
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {value}")
    return number


MAX_DECIBELS = 300.0  # 10 ** (dB / 10) stays a finite float64 well beyond it; any real SNR lies far inside


def _decibels(value: str) -> float:
    """A noise level in dB within ±``MAX_DECIBELS``, or inf (no noise)."""
    number = float(value)
    if abs(number) <= MAX_DECIBELS or number == math.inf:
        return number
    raise argparse.ArgumentTypeError(f"expected a level in dB between -{MAX_DECIBELS:g} and {MAX_DECIBELS:g} "
                                     f"(inf: no noise), got {value}")


def _minutes(value: str) -> float:
    number = float(value)
    if not (math.isfinite(number) and number >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number of minutes >= 0, got {value}")
    return number


def _finite(value: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {value}")
    return number


def _fraction(value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a value in [0, 1], got {value}")
    return number


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """--help keeps the description's line breaks and shows each default that is set and not already
    in the option's text."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, argparse.SUPPRESS) or "default" in text or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


class OptionGroup(NamedTuple):
    """A group of options by purpose: its --help heading (None: accepted, hidden from --help) and the
    function that adds its options."""

    title: str | None
    add: Callable[[argparse._ActionsContainer], None]


def _paths(g: argparse._ActionsContainer) -> None:
    g.add_argument("--train_root", help="training folder: <i>.csv files (release layout) or WAV files")
    g.add_argument("--train_label_path", help="label CSV of the training folder (release layout)")
    g.add_argument("--test_root", help="test folder: <i>.csv files (release layout) or WAV files")
    g.add_argument("--test_label_path", help="label CSV of the test folder (release layout)")
    g.add_argument("--data_root", help="a WAV data set in the MIMII (normal/, abnormal/) or "
                   "DCASE 2020-2024 (train/, test/) layout, split automatically")


def _clips(g: argparse._ActionsContainer) -> None:
    g.add_argument("--train_normal_files", type=positive_int, default=None,
                   help="MIMII layout: the first N normal clips (name order) train; default half")
    g.add_argument("--threshold_clips", type=positive_int, default=None,
                   help="no labelled test set (--train_root alone): hold the last N normal training clips "
                        "(name order) out of training to set the decision threshold on "
                        "(default: a tenth of the training clips, rounded down, at least 2)")
    g.add_argument("--synthetic_train_clips", type=positive_int, default=64,
                   help="embedded data set: normal training clips")
    g.add_argument("--synthetic_test_clips", type=test_clip_count, default=40,
                   help="embedded data set: test clips (half normal, half cavitation)")


def _signal(g: argparse._ActionsContainer) -> None:
    g.add_argument("--sample_rate", type=positive_int, default=None,
                   help="resample WAV files to this rate (Hz); without it all files must share one")
    g.add_argument("--mess_length", type=positive_int, default=None,
                   help="signals are cut or zero-padded to this many samples "
                        f"(release layout {RELEASE_PRESET['mess_length']}, WAV "
                        f"{WAV_PRESET['mess_length']}, demo {DEMO_PRESET['mess_length']})")


def _windows(g: argparse._ActionsContainer) -> None:
    g.add_argument("--segment_length", type=non_negative_int, default=None,
                   help="cut each signal into windows of this length (0: whole signal); "
                        "a clip's score is the mean of its windows'")
    g.add_argument("--segment_hop", type=non_negative_int, default=None,
                   help="hop between windows (0: equal to --segment_length)")
    g.add_argument("--train_windows_per_clip", type=non_negative_int, default=None,
                   help="0: each epoch trains on every window at --segment_hop. K: each epoch draws K windows "
                        "per training clip, one at a random offset in each of K equal parts of the clip, "
                        "seeded by --seed and the epoch, so an epoch costs the same whatever the clip length")
    g.add_argument("--eval_windows_per_clip", type=non_negative_int, default=None,
                   help="0: every epoch's evaluation scores every window. M: the evaluations before the last "
                        "epoch's fit and score M evenly spaced windows (at --segment_hop) per clip, the same "
                        "every epoch; the last epoch, whose numbers are the results, scores every window")


def _model(g: argparse._ActionsContainer) -> None:
    g.add_argument("--global_filter", choices=GLOBAL_FILTERS, default="released",
                   help="released: LayerNorm, FFT, magnitude; learned: phase-preserving filter")
    g.add_argument("--comprehensive_output_factor", type=_fraction, default=0.5,
                   help="the paper's score: weight of D on the reconstructions against D on the input")
    g.add_argument("--calibration_clips", type=non_negative_int, default=0,
                   help="0: the feature scores are fitted on the training windows. N: hold the last N "
                        "normal training clips out of training and fit them on those clips' windows")


def _training(g: argparse._ActionsContainer) -> None:
    g.add_argument("--update", choices=("standard", "released"), default="standard",
                   help="standard: D on detached reconstructions, then G, BCE on logits; "
                        "released: the release's joint update")
    g.add_argument("--noise", choices=("snr", "released"), default="snr",
                   help="snr: Gaussian noise at --snr dB per signal; released: unit variance")
    g.add_argument("--snr", type=_decibels, default=2.0,
                   help="signal-to-noise ratio of the input noise (dB)")
    g.add_argument("--r_g_net_learning_rate", type=positive_number, default=0.001)
    g.add_argument("--l_g_net_learning_rate", type=positive_number, default=0.001)
    g.add_argument("--d_net_learning_rate", type=positive_number, default=0.0001)
    g.add_argument("--alpha", type=_fraction, default=0.5, help="weight of D's real term")
    g.add_argument("--adversarial_training_factor", type=_fraction, default=0.5,
                   help="weight of G's adversarial term against its reconstruction term")
    g.add_argument("--batch_size", type=positive_int, default=None)
    g.add_argument("--learning_rate_scaling", choices=("none", "sqrt"), default="none",
                   help="sqrt: multiply the three learning rates by the square root of the batch of all "
                        f"processes together (--batch_size x processes) over {LEARNING_RATE_BATCH}, the batch "
                        "they are set for; for larger batches (BENCHMARKS.md measures batches 8 and 32)")
    g.add_argument("--seed", type=seed_value, default=0)
    _add_flag(g, "train_batch_shuffle", True, "shuffle training batches")
    _add_flag(g, "train_drop_last", True, "drop the last incomplete training batch")


def _duration(g: argparse._ActionsContainer) -> None:
    g.add_argument("--epochs", type=positive_int, default=None)


def _score(g: argparse._ActionsContainer) -> None:
    g.add_argument("--score", choices=SCORES, default=None,
                   help="the score that metrics, thresholds and decisions use (every one is computed "
                        "and logged): paper, the paper's blend of D's outputs; <space>_<distance>, a "
                        "window's distance from the normal training windows in the encoders' or D's "
                        f"features (release layout {PAPER_SCORE}, WAV and demo {DEFAULT_SCORE})")
    g.add_argument("--threshold_quantile", type=_fraction, default=0.9,
                   help="no labelled test set: the decision threshold is this quantile of the held-out "
                        "clips' scores, so about 1 - q of normal recordings are flagged")


def _speed(g: argparse._ActionsContainer) -> None:
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    _add_flag(g, "bf16", True, "bf16 autocast on CUDA (losses and metrics stay fp32)")
    _add_flag(g, "compile", True, "torch.compile the networks on CUDA, falling back to eager")
    _add_flag(g, "channels_last", True, "run the convolutions as channels-last 2-D convolutions on "
                                        "CUDA (cuDNN's fast layout; same parameters and results)")
    _add_flag(g, "deterministic", False, "repeatable runs: the same seed gives the same numbers on the same "
                                         "machine (deterministic cuDNN, cuBLAS and Inductor kernels, no "
                                         "autotuning; slower on CUDA)")
    _add_flag(g, "sync_batchnorm", False, "SyncBatchNorm across processes under torchrun (CUDA only)")
    _add_flag(g, "cache", True, "keep decoded recordings in ~/.cache/grlnet/decoded ($XDG_CACHE_HOME), so the next "
                                "run on the same files does not decode them again")


def _run_folder(g: argparse._ActionsContainer) -> None:
    g.add_argument("--output_dir", default=None, help="run folder (default runs/<date>-<time>)")
    g.add_argument("--checkpoint_minutes", type=_minutes, default=10.0,
                   help="also save checkpoints/last.pt inside an epoch after this many minutes "
                        "(0: at the end of epochs only)")
    g.add_argument("--resume", nargs="?", const="last", default=None, metavar="PATH",
                   help="resume from a checkpoint; without PATH, the output folder's last one; "
                        "RUN/checkpoints/*.pt continues in RUN unless --output_dir says otherwise")
    _add_flag(g, "overwrite", False, "train.py: replace the run already in --output_dir (without it, such a "
                                     "folder is refused unless --resume continues it); test.py: replace a file "
                                     "--output names that is not a score file test.py wrote, or write into an "
                                     "--output_dir that holds other files")
    _add_flag(g, "save_best", False, "also keep checkpoints/best.pt, chosen by test AUC (says so)")
    _add_flag(g, "quiet", False, "no progress bars")
    _add_flag(g, "debug", False, "show tracebacks for user errors")


def _release(g: argparse._ActionsContainer) -> None:
    """The release's options that change nothing here: --cuda spells --device cuda, the loader's workers
    and the test loader's settings have no loader to act on (data are decoded once into memory, and
    every test item is scored in file order)."""
    g.add_argument("--cuda", action="store_true")
    g.add_argument("--n_threads", type=int, default=1)
    _add_flag(g, "test_batch_shuffle", False, "")
    _add_flag(g, "test_drop_last", False, "")


def _test(g: argparse._ActionsContainer) -> None:
    g.add_argument("--checkpoint", help="a checkpoint written by train.py")
    g.add_argument("--model_dir", default=None,
                   help="folder with the release's Regional_Generator.pth, Local_Generator.pth, "
                        "Discirminator.pth (models/README.md)")
    g.add_argument("--input", nargs="+", default=None, help="score these unlabelled audio or CSV files, or folders of them (in a folder: audio and the release's <index>.csv signals)")
    g.add_argument("--threshold", type=_finite, default=None,
                   help="decision threshold for --input (default: the checkpoint's, its test set's EER "
                        "point or, trained without one, the quantile of its held-out clips' scores)")
    g.add_argument("--output", default=None, help="CSV file for the scores of --input")


OPTION_GROUPS = {
    "paths": OptionGroup("data: where (no path: the embedded synthetic valve data set)", _paths),
    "clips": OptionGroup("data: which clips", _clips),
    "signal": OptionGroup("signal", _signal),
    "windows": OptionGroup("windows (the networks' input)", _windows),
    "model": OptionGroup("model and its scores (a checkpoint brings these)", _model),
    "training": OptionGroup("training", _training),
    "duration": OptionGroup("length of training (a resumed run may extend it)", _duration),
    "score": OptionGroup("score and decision", _score),
    "speed": OptionGroup("speed and precision", _speed),
    "run_folder": OptionGroup("run folder", _run_folder),
    "release": OptionGroup(None, _release),
    "test": OptionGroup("scoring (test.py)", _test),
}
# train.py shows every group but test.py's, which it accepts only to refuse them with a clear message.
TRAIN_GROUPS = tuple(name for name in OPTION_GROUPS if name != "test")


class _Hidden:
    """An argument container that adds options hidden from --help."""

    def __init__(self, container: argparse._ActionsContainer):
        self.container = container

    def add_argument(self, *names: str, **kwargs: object) -> argparse.Action:
        return self.container.add_argument(*names, **{**kwargs, "help": argparse.SUPPRESS})


def build_parser(description: str = "GRLNet", prog: str | None = None,
                 shown: Sequence[str] = TRAIN_GROUPS) -> argparse.ArgumentParser:
    """A parser with every option group, the ``shown`` ones in --help under their headings and the others
    accepted but hidden (``prog`` names the options in its messages when another script passes them on)."""
    p = argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter,
                                allow_abbrev=False)  # an abbreviation would slip past reproduce.py's checks
    for name, group in OPTION_GROUPS.items():
        if group.title is not None and name in shown:
            group.add(p.add_argument_group(group.title))
        else:
            group.add(_Hidden(p))
    return p


def group_options(*groups: str) -> tuple[str, ...]:
    """The options (namespace names) of the named groups, in the order --help lists them."""
    names: dict[str, None] = {}
    for name in groups:
        p = argparse.ArgumentParser(add_help=False)
        OPTION_GROUPS[name].add(p)
        names.update(dict.fromkeys(action.dest for action in p._actions))
    return tuple(names)


# test.py's options: train.py would ignore them, so it refuses them.
TEST_ONLY_OPTIONS = group_options("test")
# Options a resumed run may change: where things are, how long it trains, how it runs, test.py's.
# Every other option defines the run, and a checkpoint resumes only with the values it was saved with.
RESUME_MAY_CHANGE = frozenset(group_options("paths", "duration", "speed", "run_folder", "release", "test"))
# Options added after runs began to store every option, each with the value that reproduces a run saved
# before it existed: such a run's checkpoint and options.json read as holding that value, so a new option
# leaves earlier runs scorable and resumable. An option added later goes here with its earlier behaviour.
VALUES_BEFORE_ADDED = {"learning_rate_scaling": "none", "train_windows_per_clip": 0, "eval_windows_per_clip": 0}
# Study options removed after commit REMOVED_OPTIONS_COMMIT (docs/STUDIES.md, "Superseded studies"), each with
# the value that left its study off. A stored run holding that value reads as any other; one that used the
# study is scored (the options acted on training only), but neither resumed nor taken for a run of today's options.
REMOVED_OPTIONS = {"label_smoothing": 0.0, "instance_noise_snr": None, "pseudo_anomaly_epochs": 0}
REMOVED_OPTIONS_COMMIT = "aed8ce3"


def given_option_names(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> frozenset[str]:
    """The options ``argv`` (None: the command line) sets, by their names in the namespace (``--no-bf16``
    sets ``bf16``), told from defaults by parsing onto a namespace whose every value is a marker that no
    option value equals."""
    unset = object()
    marked = argparse.Namespace(**dict.fromkeys(vars(parser.parse_args(argv)), unset))
    return frozenset(name for name, value in vars(parser.parse_args(argv, marked)).items() if value is not unset)


def data_kind(opt: argparse.Namespace) -> str:
    """'csv' (release layout, named by its label files), 'wav', or 'synthetic' (no data path)."""
    if opt.data_root:
        return "wav"
    if opt.train_label_path or opt.test_label_path:
        return "csv"
    if opt.train_root or opt.test_root:
        return "wav"
    return "synthetic"


def resolve_presets(opt: argparse.Namespace) -> argparse.Namespace:
    """Fill the data-dependent defaults and reject contradictory combinations."""
    opt.data_kind = data_kind(opt)
    if opt.segment_length == 0:  # whole signals: one window a clip, so a preset's window budgets do not apply
        for name in WINDOW_BUDGETS:
            if getattr(opt, name) is None:
                setattr(opt, name, 0)
    for name, value in PRESETS[opt.data_kind].items():
        if getattr(opt, name) is None:
            setattr(opt, name, value)
    if opt.cuda and opt.device == "cpu":
        raise UserError("--cuda (the release's option) asks for the GPU and --device cpu for the CPU; give one")
    if opt.cuda:
        opt.device = "cuda"
    if opt.test_drop_last:
        print("warning: --test_drop_last is ignored; every test item is scored", file=sys.stderr)
    if opt.segment_length and opt.segment_hop == 0:
        opt.segment_hop = opt.segment_length
    if not opt.segment_length and (opt.train_windows_per_clip or opt.eval_windows_per_clip):
        raise UserError("--train_windows_per_clip and --eval_windows_per_clip choose windows of a clip; with "
                        "--segment_length 0 each clip is one window, so give 0 or a --segment_length")
    if opt.segment_length > opt.mess_length:
        raise UserError(f"--segment_length {opt.segment_length} is longer than --mess_length "
                        f"{opt.mess_length}; give --segment_length 0 (whole signals) or a shorter window")
    check_network_length(network_length(opt), "--segment_length" if opt.segment_length else "--mess_length")
    if opt.resume and opt.overwrite:
        raise UserError("--overwrite replaces the run in --output_dir and --resume continues it; give one of them")
    if opt.resume == "last" and not opt.output_dir:
        raise UserError("--resume without a path continues the run in --output_dir; give that folder")
    if opt.resume and not opt.output_dir and Path(opt.resume).parent.name == "checkpoints":
        opt.output_dir = str(Path(opt.resume).parent.parent)  # RUN/checkpoints/last.pt continues in RUN
    if opt.data_root and (opt.train_root or opt.test_root or opt.train_label_path or opt.test_label_path):
        raise UserError("give either --data_root or --train_root/--test_root (with label files for the "
                        "release's CSV layout), not both")
    if opt.train_normal_files is not None and not opt.data_root:
        raise UserError("--train_normal_files splits the normal clips of a --data_root in the MIMII layout; "
                        "give --data_root")
    if has_labelled_test_set(opt) and opt.threshold_clips:
        raise UserError("--threshold_clips sets the decision threshold of a run without a labelled test set; "
                        "with one (--test_root, --data_root or the embedded data) the threshold is its EER point")
    if not has_labelled_test_set(opt) and opt.save_best:
        raise UserError("--save_best picks a checkpoint by test AUC, and this run has no labelled test set "
                        "(give --test_root)")
    return opt


def has_labelled_test_set(opt: argparse.Namespace) -> bool:
    """Whether the data named include a labelled test set (else training holds out clips for a threshold)."""
    return opt.data_kind == "synthetic" or bool(opt.data_root or opt.test_root)


def network_length(opt: argparse.Namespace) -> int:
    """The length the networks are built for: the window length, or the whole signal."""
    return opt.segment_length or opt.mess_length


def option_defaults() -> dict:
    """Every option's default as the parser holds it (data-dependent ones None, before the presets)."""
    return vars(build_parser().parse_args([]))


def completed_options(stored: dict) -> dict:
    """A run's stored options (checkpoint or options.json), with each option added since it was saved at
    the value that reproduces it (``VALUES_BEFORE_ADDED``)."""
    return {**VALUES_BEFORE_ADDED, **stored}


def options_of_every_run() -> frozenset[str]:
    """The options every options.json train.py wrote holds: all but those added later (VALUES_BEFORE_ADDED)."""
    return frozenset(option_defaults()) - VALUES_BEFORE_ADDED.keys()


def stored_option_problems(stored: dict) -> list[str]:
    """The stored options (a checkpoint's) that no command line parses into, each as "options['name'] is
    VALUE, why": a run stores parsed values only, so each must have its option's type, choices and range."""
    actions: dict[str, argparse.Action] = {}
    for action in build_parser()._actions:  # --name before --no-name, which shares its namespace name
        actions.setdefault(action.dest, action)
    problems = []
    for name, action in actions.items():
        problem = _stored_value_problem(action, stored[name]) if name in stored else None
        if problem:
            problems.append(f"options[{name!r}] is {stored[name]!r}, {problem}")
    return problems


def _stored_value_problem(action: argparse.Action, value: object) -> str | None:
    """Why ``value`` is not a value ``action`` stores (None: it is one)."""
    if value is None:
        return None if action.default is None and action.dest not in RELEASE_PRESET else "where a run stores a value"
    if isinstance(action, argparse._StoreConstAction):  # --cuda: store_true
        return None if type(value) is bool else "not True or False"
    if action.nargs == "+":
        if not isinstance(value, list):
            return "not a list"
        return next(filter(None, (_parsed_problem(action, item) for item in value)), None)
    return _parsed_problem(action, value)


def _parsed_problem(action: argparse.Action, value: object) -> str | None:
    """Why ``value`` is not what ``action`` parses its text into (an int stands for a float), or None."""
    option = action.option_strings[0]
    try:
        parsed = (action.type or str)(str(value))
    except argparse.ArgumentTypeError as err:
        return str(err)
    except (ValueError, TypeError):
        return f"not a value {option} accepts"
    if parsed != value or not (type(parsed) is type(value) or (type(parsed), type(value)) == (float, int)):
        return f"of type {type(value).__name__}, not {type(parsed).__name__}"
    if action.choices is not None and parsed not in action.choices:
        return f"not one of {', '.join(map(str, action.choices))}"
    return None


def changed_options(stored: dict, opt: argparse.Namespace, ignore: Collection[str] = ()) -> list[str]:
    """The options, all but ``ignore``, whose values in ``opt`` differ from ``stored`` (a run's
    options.json or checkpoint) or that ``stored`` lacks, each as "--name: stored -> now", and the removed
    study options ``stored`` used (``removed_options_used``), which no run of today's options does."""
    changed = []
    for name in option_defaults():
        before, now = stored.get(name, "absent"), getattr(opt, name)
        if name not in ignore and before != now:
            changed.append(f"--{name}: {before!r} -> {now!r}")
    return changed + [f"{used} -> removed" for used in removed_options_used(stored)]


def removed_options_used(stored: dict) -> list[str]:
    """The removed study options (``REMOVED_OPTIONS``) that ``stored`` (a run's options) sets to other than
    the value that left its study off, each as "--name VALUE"."""
    return [f"--{name} {stored[name]}" for name, off in REMOVED_OPTIONS.items() if stored.get(name, off) != off]


def check_network_length(length: int, option: str) -> None:
    """Refuse a signal length the discriminator's four strided convolutions cannot take."""
    if discriminator_feature_length(length) < 1:
        shortest = next(n for n in itertools.count(1) if discriminator_feature_length(n) >= 1)
        raise UserError(f"{option} {length} is too short: the discriminator needs at least {shortest} samples")


def parse_opts(argv: Sequence[str] | None = None, description: str = "GRLNet",
               prog: str | None = None) -> argparse.Namespace:
    """Parse train.py's command line, refuse test.py's options, and resolve the data-dependent defaults."""
    parser = build_parser(description, prog)
    opt = parser.parse_args(argv)
    refuse_test_options(given_option_names(parser, argv))
    return resolve_presets(opt)


def refuse_test_options(given: Collection[str]) -> None:
    """Refuse test.py's options on train.py's command line: training would ignore them without a word."""
    ignored = [f"--{name}" for name in TEST_ONLY_OPTIONS if name in given]
    if ignored:
        raise UserError(f"{', '.join(ignored)}: test.py's option{'s' * (len(ignored) > 1)}, which training would "
                        "ignore; train without it, then score with python test.py")


def settings(kind: type[SettingsT], opt: argparse.Namespace) -> SettingsT:
    """One of the library's frozen settings dataclasses, each field the option of its name: the library
    takes the values it uses, and only the scripts see the parsed options."""
    return kind(**{field.name: getattr(opt, field.name) for field in dataclasses.fields(kind)})


def data_settings(opt: argparse.Namespace) -> DataSettings:
    """What the data layer reads: which clips, and how they are decoded and cut."""
    return settings(DataSettings, opt)


def scoring_settings(opt: argparse.Namespace) -> ScoringSettings:
    """What scoring reads: the windows, the batch, the paper's blend factor and the chosen score."""
    return settings(ScoringSettings, opt)


def step_settings(opt: argparse.Namespace) -> StepSettings:
    """What a training step computes with: the update, the generators' noise and the losses' weights."""
    return settings(StepSettings, opt)


def learning_rates(opt: argparse.Namespace) -> LearningRates:
    """The three learning rates and how they follow the batch (``--learning_rate_scaling``)."""
    return LearningRates(opt.r_g_net_learning_rate, opt.l_g_net_learning_rate, opt.d_net_learning_rate,
                         opt.learning_rate_scaling, opt.batch_size)


def test_scoring(opt: argparse.Namespace) -> Scoring:
    """What test.py scores and where it writes, from its resolved options (``checkpoint_test_options`` or
    ``released_test_options``)."""
    return Scoring(checkpoint=opt.checkpoint, model_dir=opt.model_dir, inputs=tuple(opt.input or ()),
                   threshold=opt.threshold, output=opt.output, output_dir=opt.output_dir, overwrite=opt.overwrite,
                   score=opt.score, network_length=network_length(opt), global_filter=opt.global_filter,
                   deterministic=opt.deterministic, run_options=options_of_every_run(), data=data_settings(opt),
                   settings=scoring_settings(opt), device=opt.device, bf16=opt.bf16, channels_last=opt.channels_last)


# test.py's --help: what scoring reads; the training options stay accepted (a checkpoint brings them).
TEST_GROUPS = ("paths", "clips", "signal", "windows", "model", "score", "speed", "run_folder", "test")
# Stored options that define the networks and the score: a checkpoint always brings its own, and one
# given on the command line must agree with it. The sample rate is checked on its own (_sample_rate).
MODEL_OPTIONS = tuple(name for name in group_options("signal", "windows", "model") if name != "sample_rate")
# Stored options of how it was run: used unless the command line gives them (another --score ranks a
# labelled test set by another stored score; a larger batch scores faster; --no-bf16 scores in fp32,
# within rounding of the bf16 scores; a --deterministic run is scored with the same repeatable kernels).
RUN_OPTIONS = (*group_options("score"), "batch_size", "bf16", "deterministic")
# Options that name a data set: scoring --input files reads none, so it refuses them.
DATA_SET_OPTIONS = group_options("paths", "clips")
# Stored options that name the data: used when the command line names no data, unless it gives them
# (the seed draws the embedded data set).
DATA_OPTIONS = (*DATA_SET_OPTIONS, "seed")
# Options only scoring --input files uses.
INPUT_OPTIONS = ("threshold", "output")


def parse_test_args(argv: Sequence[str] | None = None, description: str = "GRLNet") -> argparse.Namespace:
    """test.py's options, with ``given_options``: the names the command line sets, which a checkpoint's
    stored values must never silently replace (a default looks the same as a given value otherwise)."""
    parser = build_parser(description, shown=TEST_GROUPS)
    opt = parser.parse_args(argv)
    opt.given_options = given_option_names(parser, argv)
    _refuse_ignored_options(opt)
    return opt


def _refuse_ignored_options(opt: argparse.Namespace) -> None:
    """Refuse options the chosen mode would ignore: data sets when scoring --input files, and --threshold
    or --output when evaluating a test set."""
    given = opt.given_options
    if opt.input:
        ignored, why = [name for name in DATA_SET_OPTIONS if name in given], "--input files are scored, not a data set"
    else:
        ignored, why = [name for name in INPUT_OPTIONS if name in given], "used only when scoring --input files"
    if ignored:
        raise UserError(f"{', '.join(f'--{name}' for name in ignored)}: would be ignored ({why}); leave "
                        f"{'them' if len(ignored) > 1 else 'it'} out")


def _refuse_other_value(opt: argparse.Namespace, name: str, stored_value: object, source: str) -> None:
    """Refuse an option given on the command line that the checkpoint's value would overrule."""
    value = getattr(opt, name)
    if name in opt.given_options and value != stored_value:
        raise UserError(f"--{name} {value} differs from the checkpoint's {stored_value} ({source}); "
                        "leave it out to use the checkpoint's")


def _sample_rate(opt: argparse.Namespace, stored: dict, trained: int | None, source: str) -> int | None:
    """The rate to resample WAV files to: a given --sample_rate, which must be the rate ``trained`` at
    (None: unknown), or else the checkpoint's own option (its training data were resampled to it)."""
    if "sample_rate" not in opt.given_options:
        return stored["sample_rate"]
    if trained is not None and opt.sample_rate != trained:
        raise UserError(f"--sample_rate {opt.sample_rate} differs from the {trained} Hz the checkpoint was "
                        f"trained at ({source}); give --sample_rate {trained}")
    return opt.sample_rate


def checkpoint_test_options(opt: argparse.Namespace, stored: dict, trained_rate: int | None,
                            source: str) -> argparse.Namespace:
    """test.py's options for a checkpoint's networks, as a new namespace with the presets resolved: the
    checkpoint's model options and sample rate, its run options unless given, and its data (seed included)
    unless the command line names data or gives them; ``opt`` stays as parsed."""
    values = {}
    for name in MODEL_OPTIONS:
        _refuse_other_value(opt, name, stored[name], source)
        values[name] = stored[name]
    values.update((name, stored[name]) for name in RUN_OPTIONS if name not in opt.given_options)
    values["sample_rate"] = _sample_rate(opt, stored, trained_rate, source)
    if not (opt.input or opt.data_root or opt.train_root or opt.test_root):
        values.update((name, stored[name]) for name in DATA_OPTIONS if name not in opt.given_options)
    return resolve_presets(argparse.Namespace(**{**vars(opt), **values}))


def released_test_options(opt: argparse.Namespace) -> argparse.Namespace:
    """test.py's options for the release's files, as a new namespace with the presets resolved: the
    release's length unless given (the authors' weights are for it), and the paper's score, the only one
    they can score with; ``opt`` stays as parsed."""
    if opt.score not in (None, PAPER_SCORE):
        raise UserError(f"--score {opt.score}: the release's files hold no statistics of normal windows; they "
                        f"score with the paper's score only (--score {PAPER_SCORE})")
    unset = {name: value for name, value in RELEASE_PRESET.items() if getattr(opt, name) is None}
    return resolve_presets(argparse.Namespace(**{**vars(opt), **unset}))
