"""All options of GRLNet and all their defaults.

The release's option names and defaults keep working (SPEC section 5). A few options depend on the
kind of data: the release's CSV layout keeps the release's values, the embedded demo and WAV
folders use the presets below. A value given on the command line always wins.
"""
from __future__ import annotations

import argparse
import itertools
import math
import sys
from pathlib import Path
from typing import Callable, Collection, Sequence

from errors import UserError
from features import PAPER_SCORE, SCORES
from network import GLOBAL_FILTERS, discriminator_feature_length

# The score of WAV data and the embedded set, chosen by the rule in README.md ("Which score"); the
# release's CSV layout keeps the paper's score, the faithful reproduction.
FEATURE_SCORE_DEFAULT = "encoder_knn"
# Options whose default depends on the data (None on the parser, filled in by ``resolve_presets``).
RELEASE_PRESET = {
    "mess_length": 233472, "segment_length": 0, "segment_hop": 0, "epochs": 1, "batch_size": 2,
    "score": PAPER_SCORE,
}
# Embedded synthetic valve data: short clips cut into windows so a 2-core CPU trains in minutes.
DEMO_PRESET = {
    "mess_length": 4096, "segment_length": 1024, "segment_hop": 1024, "epochs": 3, "batch_size": 2,
    "score": FEATURE_SCORE_DEFAULT,
}
# Real 10 s recordings at 16 kHz: windows of 1024 samples every 4096, clip score = window mean
# (the most stable setting measured on real recordings, SPEC section 9; REPRODUCTION.md revisits it).
WAV_PRESET = {
    "mess_length": 160000, "segment_length": 1024, "segment_hop": 4096, "epochs": 8, "batch_size": 2,
    "score": FEATURE_SCORE_DEFAULT,
}
PRESETS = {"csv": RELEASE_PRESET, "synthetic": DEMO_PRESET, "wav": WAV_PRESET}
# dB below --snr for the pseudo-anomaly phase's inputs: noisier than training makes poor reconstructions.
PSEUDO_ANOMALY_SNR_DROP = 10.0
# test.py's options: train.py would ignore them, so it refuses them.
TEST_ONLY_OPTIONS = ("checkpoint", "model_dir", "input", "threshold", "output")
# Options a resumed run may change: where things are, how long it trains, how it runs, test.py's.
# Every other option defines the run, and a checkpoint resumes only with the values it was saved with.
RESUME_MAY_CHANGE = frozenset({
    "train_root", "train_label_path", "test_root", "test_label_path", "data_root", "epochs",
    "pseudo_anomaly_epochs", "device", "cuda", "n_threads", "bf16", "compile", "channels_last",
    "deterministic", "sync_batchnorm", "test_batch_shuffle", "test_drop_last", "output_dir", "checkpoint_minutes",
    "resume", "overwrite", "save_best", "quiet", "debug", "checkpoint", "model_dir", "input", "threshold", "output",
})


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


# Also used by bench.py, reproduce.py and the baseline.
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


def _decibels(inf_is_no_noise: bool) -> Callable[[str], float]:
    """An argparse type: a noise level in dB within ±``MAX_DECIBELS``, and with ``inf_is_no_noise`` also
    inf (an option that is off by default has no use for it)."""
    def parse(value: str) -> float:
        number = float(value)
        if abs(number) <= MAX_DECIBELS or (inf_is_no_noise and number == math.inf):
            return number
        raise argparse.ArgumentTypeError(f"expected a level in dB between -{MAX_DECIBELS:g} and {MAX_DECIBELS:g}"
                                         f"{' (inf: no noise)' if inf_is_no_noise else ''}, got {value}")
    parse.__name__ = "decibels"
    return parse


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


def _smoothing(value: str) -> float:
    number = float(value)
    if not 0.0 <= number < 0.5:
        raise argparse.ArgumentTypeError(f"expected a value in [0, 0.5), got {value}")
    return number


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """--help keeps the description's line breaks and shows each default that is set and not already
    in the option's text."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, argparse.SUPPRESS) or "default" in text or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def build_parser(description: str = "GRLNet", prog: str | None = None) -> argparse.ArgumentParser:
    """The parser shared by train.py, test.py and the scripts around them (``prog`` names the options
    in its messages when another script passes them on)."""
    p = argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter,
                                allow_abbrev=False)  # an abbreviation would slip past reproduce.py's checks
    data = p.add_argument_group("data (no data path: the embedded synthetic valve data set)")
    data.add_argument("--train_root", help="training folder: <i>.csv files (release layout) or WAV files")
    data.add_argument("--train_label_path", help="label CSV of the training folder (release layout)")
    data.add_argument("--test_root", help="test folder: <i>.csv files (release layout) or WAV files")
    data.add_argument("--test_label_path", help="label CSV of the test folder (release layout)")
    data.add_argument("--data_root", help="a WAV data set in the MIMII (normal/, abnormal/) or "
                      "DCASE 2020-2024 (train/, test/) layout, split automatically")
    data.add_argument("--train_normal_files", type=positive_int, default=None,
                      help="MIMII layout: the first N normal clips (name order) train; default half")
    data.add_argument("--sample_rate", type=positive_int, default=None,
                      help="resample WAV files to this rate (Hz); without it all files must share one")
    data.add_argument("--mess_length", type=positive_int, default=None,
                      help="signals are cut or zero-padded to this many samples "
                           f"(release layout {RELEASE_PRESET['mess_length']}, WAV "
                           f"{WAV_PRESET['mess_length']}, demo {DEMO_PRESET['mess_length']})")
    data.add_argument("--segment_length", type=non_negative_int, default=None,
                      help="cut each signal into windows of this length (0: whole signal); "
                           "a clip's score is the mean of its windows'")
    data.add_argument("--segment_hop", type=non_negative_int, default=None,
                      help="hop between windows (0: equal to --segment_length)")
    data.add_argument("--threshold_clips", type=positive_int, default=None,
                      help="no labelled test set (--train_root alone): hold the last N normal training clips "
                           "(name order) out of training to set the decision threshold on "
                           "(default: a tenth of the training clips, rounded down, at least 2)")
    data.add_argument("--threshold_quantile", type=_fraction, default=0.9,
                      help="no labelled test set: the decision threshold is this quantile of the held-out "
                           "clips' scores, so about 1 - q of normal recordings are flagged")
    data.add_argument("--synthetic_train_clips", type=positive_int, default=64,
                      help="embedded data set: normal training clips")
    data.add_argument("--synthetic_test_clips", type=test_clip_count, default=40,
                      help="embedded data set: test clips (half normal, half cavitation)")

    model = p.add_argument_group("model and training")
    model.add_argument("--global_filter", choices=GLOBAL_FILTERS, default="released",
                       help="released: LayerNorm, FFT, magnitude; learned: phase-preserving filter")
    model.add_argument("--update", choices=("standard", "released"), default="standard",
                       help="standard: D on detached reconstructions, then G, BCE on logits; "
                            "released: the release's joint update")
    model.add_argument("--noise", choices=("snr", "released"), default="snr",
                       help="snr: Gaussian noise at --snr dB per signal; released: unit variance")
    model.add_argument("--snr", type=_decibels(inf_is_no_noise=True), default=2.0,
                       help="signal-to-noise ratio of the input noise (dB)")
    model.add_argument("--r_g_net_learning_rate", type=positive_number, default=0.001)
    model.add_argument("--l_g_net_learning_rate", type=positive_number, default=0.001)
    model.add_argument("--d_net_learning_rate", type=positive_number, default=0.0001)
    model.add_argument("--alpha", type=_fraction, default=0.5, help="weight of D's real term")
    model.add_argument("--adversarial_training_factor", type=_fraction, default=0.5,
                       help="weight of G's adversarial term against its reconstruction term")
    model.add_argument("--comprehensive_output_factor", type=_fraction, default=0.5,
                       help="score weight of D on the reconstructions against D on the input")
    model.add_argument("--label_smoothing", type=_smoothing, default=0.0,
                       help="one-sided label smoothing: D's target for real signals is this instead of 0 "
                            "(a D-regularisation study option, see REPRODUCTION.md)")
    model.add_argument("--instance_noise_snr", type=_decibels(inf_is_no_noise=False), default=None, metavar="DB",
                       help="instance noise: Gaussian noise at this SNR (dB) on every D input in training, "
                            "real and reconstructed (a D-regularisation study option; off by default)")
    model.add_argument("--pseudo_anomaly_epochs", type=non_negative_int, default=0,
                       help="after --epochs, this many epochs that train D alone, generators frozen, to tell "
                            "normal windows and their reconstructions (0) from pseudo-anomalies made of them "
                            f"(1): reconstructions of inputs noised {PSEUDO_ANOMALY_SNR_DROP:g} dB below --snr, "
                            "and mixtures of two windows' reconstructions (OGNet's second phase; a study option, "
                            "see REPRODUCTION.md)")
    model.add_argument("--score", choices=SCORES, default=None,
                       help="the score that metrics, thresholds and decisions use (every one is computed "
                            "and logged): paper, the paper's blend of D's outputs; <space>_<distance>, a "
                            "window's distance from the normal training windows in the encoders' or D's "
                            f"features (release layout {PAPER_SCORE}, WAV and demo {FEATURE_SCORE_DEFAULT})")
    model.add_argument("--calibration_clips", type=non_negative_int, default=0,
                       help="0: the feature scores are fitted on the training windows. N: hold the last N "
                            "normal training clips out of training and fit them on those clips' windows")
    model.add_argument("--batch_size", type=positive_int, default=None)
    model.add_argument("--epochs", type=positive_int, default=None)
    model.add_argument("--seed", type=seed_value, default=0)

    run = p.add_argument_group("running")
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    run.add_argument("--cuda", action="store_true", help="release spelling of --device cuda")
    run.add_argument("--n_threads", type=int, default=1,
                     help="the release's loader workers; accepted, unused: data are decoded once into memory")
    _add_flag(run, "bf16", True, "bf16 autocast on CUDA (losses and metrics stay fp32)")
    _add_flag(run, "compile", True, "torch.compile the networks on CUDA, falling back to eager")
    _add_flag(run, "channels_last", True, "run the convolutions as channels-last 2-D convolutions on "
                                          "CUDA (cuDNN's fast layout; same parameters and results)")
    _add_flag(run, "deterministic", False, "repeatable runs: the same seed gives the same numbers on the same "
                                           "machine (deterministic cuDNN, cuBLAS and Inductor kernels, no "
                                           "autotuning; slower on CUDA)")
    _add_flag(run, "sync_batchnorm", False, "SyncBatchNorm across processes under torchrun (CUDA only)")
    _add_flag(run, "train_batch_shuffle", True, "shuffle training batches")
    _add_flag(run, "test_batch_shuffle", False, "accepted for compatibility; scores keep file order")
    _add_flag(run, "train_drop_last", True, "drop the last incomplete training batch")
    _add_flag(run, "test_drop_last", False, "accepted and ignored: every test item is scored")
    run.add_argument("--output_dir", default=None, help="run folder (default runs/<date>-<time>)")
    run.add_argument("--checkpoint_minutes", type=_minutes, default=10.0,
                     help="also save checkpoints/last.pt inside an epoch after this many minutes "
                          "(0: at the end of epochs only)")
    run.add_argument("--resume", nargs="?", const="last", default=None, metavar="PATH",
                     help="resume from a checkpoint; without PATH, the output folder's last one; "
                          "RUN/checkpoints/*.pt continues in RUN unless --output_dir says otherwise")
    _add_flag(run, "overwrite", False, "train.py: replace the run already in --output_dir (without it, such a "
                                       "folder is refused unless --resume continues it); test.py: replace a file "
                                       "--output names that is not a score file test.py wrote")
    _add_flag(run, "save_best", False, "also keep checkpoints/best.pt, chosen by test AUC (says so)")
    _add_flag(run, "quiet", False, "no progress bars")
    _add_flag(run, "debug", False, "show tracebacks for user errors")

    scoring = p.add_argument_group("test.py (train.py refuses these)")
    scoring.add_argument("--checkpoint", help="a checkpoint written by train.py")
    scoring.add_argument("--model_dir", default=None,
                         help="folder with the release's Regional_Generator.pth, Local_Generator.pth, "
                              "Discirminator.pth")
    scoring.add_argument("--input", nargs="+", default=None,
                         help="score these unlabelled WAV/CSV files or folders")
    scoring.add_argument("--threshold", type=_finite, default=None,
                         help="decision threshold for --input (default: the checkpoint's, its test set's EER "
                              "point or, trained without one, the quantile of its held-out clips' scores)")
    scoring.add_argument("--output", default=None, help="CSV file for the scores of --input")
    return p


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
    for name, value in PRESETS[opt.data_kind].items():
        if getattr(opt, name) is None:
            setattr(opt, name, value)
    if opt.cuda:
        opt.device = "cuda"
    if opt.test_drop_last:
        print("warning: --test_drop_last is ignored; every test item is scored", file=sys.stderr)
    if opt.segment_length and opt.segment_hop == 0:
        opt.segment_hop = opt.segment_length
    if opt.segment_length > opt.mess_length:
        raise UserError(f"--segment_length {opt.segment_length} is longer than --mess_length "
                        f"{opt.mess_length}; give --segment_length 0 (whole signals) or a shorter window")
    check_network_length(network_length(opt), "--segment_length" if opt.segment_length else "--mess_length")
    if opt.pseudo_anomaly_epochs and opt.snr == math.inf:
        raise UserError("--pseudo_anomaly_epochs makes pseudo-anomalies from inputs noised "
                        f"{PSEUDO_ANOMALY_SNR_DROP:g} dB below --snr; with --snr inf (no noise) they are the "
                        "normal reconstructions themselves, so give a finite --snr")
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


def total_epochs(opt: argparse.Namespace) -> int:
    """Every epoch of a run: the adversarial ones, then any pseudo-anomaly epochs."""
    return opt.epochs + opt.pseudo_anomaly_epochs


def network_length(opt: argparse.Namespace) -> int:
    """The length the networks are built for: the window length, or the whole signal."""
    return opt.segment_length or opt.mess_length


def option_defaults() -> dict:
    """Every option's default as the parser holds it (data-dependent ones None, before the presets)."""
    return vars(build_parser().parse_args([]))


def changed_options(stored: dict, opt: argparse.Namespace, ignore: Collection[str] = ()) -> list[str]:
    """The options, all but ``ignore``, whose values in ``opt`` differ from ``stored`` (a run's
    options.json or checkpoint), each as "--name: stored -> now"; one ``stored`` predates counts at
    its default."""
    changed = []
    for name, default in option_defaults().items():
        before, now = stored.get(name, default), getattr(opt, name)
        if name not in ignore and before != now:
            changed.append(f"--{name}: {before!r} -> {now!r}")
    return changed


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
