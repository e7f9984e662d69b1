"""Checkpoints: one dict per run written atomically, loaded without unpickling code.

A run's checkpoint holds the three networks, their optimizers, the options, the epoch (and the
step inside it, with its per-step statistics), the metrics so far, the random generators' states
(CPU, CUDA), the number of processes and the feature scores' statistics of normal windows. The
authors' release shipped three state-dict files instead; ``load_released`` reads those.
"""
from __future__ import annotations

import math
import pickle
import pickletools
import re
import warnings
import zipfile
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from data.console import UserError, make_folder
from data.files import atomic_write
from grlnet.features import SPACE_ENTRIES, feature_model_problems
from grlnet.steps import STEP_STATS
from network import NETWORKS

RELEASED_FILES = {"regional": "Regional_Generator.pth", "local": "Local_Generator.pth",
                  "discriminator": "Discirminator.pth"}  # the release's spelling
# torch.save writes a zip archive or (legacy format) a pickle stream, which opens with its protocol opcode.
CHECKPOINT_HEADERS = (b"PK\x03\x04", b"\x80")
# torch's weights-only refusal of a global the file asks to import: what a file that carries code does.
REFUSED_GLOBAL = re.compile(r"GLOBAL (\S+) (?:was not an allowed global|whose module)")


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write atomically (data.files): a crash never leaves half a file. A write that fails (a full disk,
    which torch reports as a RuntimeError) removes the temporary file, keeps the previous checkpoint, and
    says why."""
    path = Path(path)
    make_folder(path.parent, "checkpoint folder")
    with atomic_write(path, "wb", "checkpoint", failures=(OSError, RuntimeError)) as handle:
        torch.save(state, handle)


def _check_archive(path: Path) -> None:
    """Refuse a zip-format checkpoint whose stored checksums do not match its content: torch.load does
    not check them, so flipped bits on disk would load as silently different weights."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise UserError(f"{path}: not a readable PyTorch checkpoint (a damaged archive: {err})") from None
    if damaged is not None:
        raise UserError(f"{path}: corrupt, the checksum of {damaged} does not match its content (the file was "
                        "damaged after it was written)")


def _has_checkpoint_header(path: Path) -> bool:
    """Whether the file opens like one torch.save writes, so that torch's complaint is about its content."""
    with path.open("rb") as handle:
        return handle.read(4).startswith(CHECKPOINT_HEADERS)


def _unreadable(path: Path, err: Exception) -> UserError:
    """The error for a file torch cannot read, with the reason in words rather than torch's internals."""
    if path.stat().st_size == 0:
        reason = "the file is empty"
    elif not _has_checkpoint_header(path):
        reason = "it is not in the format torch.save writes"
    elif isinstance(err, (RuntimeError, pickle.UnpicklingError)):  # torch's words, past its preamble
        text = str(err).split("WeightsUnpickler error:")[-1]
        reason = next((line.strip() for line in text.splitlines() if line.strip()), type(err).__name__)
    else:
        reason = "its content is corrupt"  # the unpickler's KeyError or struct.error would tell nothing
    return UserError(f"{path}: not a readable PyTorch checkpoint ({reason})")


def _requested_global(path: Path) -> str | None:
    """The first import a plain pickle stream asks for, read with pickletools without running anything
    (torch names it only for the opcodes its weights-only unpickler knows; protocol 4+ streams it stops
    at earlier)."""
    strings: list[str] = []
    try:
        with path.open("rb") as handle:
            for opcode, argument, _ in pickletools.genops(handle):
                if opcode.name == "GLOBAL":
                    return argument.replace(" ", ".")
                if opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    return ".".join(strings[-2:])
                if isinstance(argument, str):
                    strings.append(argument)
    except Exception:  # not a well-formed pickle stream: nothing it asks for can be named
        return None
    return None


def _refused(path: Path, err: pickle.UnpicklingError) -> UserError:
    """Refused as code-carrying only when a well-formed file asks for a global; anything else is
    unreadable (random bytes are no threat, and saying they could run code would mislead)."""
    found = REFUSED_GLOBAL.search(str(err))
    requested = found.group(1) if found else _requested_global(path)
    if requested is None or not _has_checkpoint_header(path):
        return _unreadable(path, err)
    return UserError(f"{path}: refused, the file holds more than tensors and plain values and loading "
                     f"it could run code (it asks for {requested})")


def load_file(path: str | Path) -> dict:
    """``torch.load`` with ``weights_only=True``: a file that carries code is refused, never run."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a checkpoint; give a file in it, such as "
                        f"{path / 'checkpoints' / 'last.pt'}")
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    _check_archive(path)
    try:
        with warnings.catch_warnings():  # torch's note on pickle protocols; the error below says what matters
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise _refused(path, err) from None
    except OSError as err:
        raise UserError(f"{path}: cannot be read ({err.strerror or err})") from None
    except Exception as err:  # corrupt data fail torch's unpicklers in many ways (KeyError, struct.error...)
        raise _unreadable(path, err) from None


def _length_of(state_dict: dict) -> int | None:
    weight = state_dict.get("gfl.layernorm.weight")
    return None if weight is None else int(weight.shape[0])


def load_weights(module: nn.Module, state_dict: dict, source: str) -> None:
    """Load a state dict, refusing another signal length or mismatched keys with a clear message."""
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise UserError(f"{source}: expected a state dict of tensors")
    expected, found = module.signal_length, _length_of(state_dict)
    if found is not None and found != expected:
        raise UserError(f"{source}: built for signal length {found}, but this run uses {expected} "
                        "(set --mess_length / --segment_length to match)")
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    if missing or unexpected:
        raise UserError(f"{source}: keys do not match {type(module).__name__}; missing "
                        f"{missing[:5] or 'none'}, unexpected {unexpected[:5] or 'none'}")
    wrong = [k for k in own if tuple(own[k].shape) != tuple(state_dict[k].shape)]
    if wrong:
        k = wrong[0]
        raise UserError(f"{source}: {k} has shape {tuple(state_dict[k].shape)}, expected "
                        f"{tuple(own[k].shape)}")
    problem = next(filter(None, (_tensor_problem(k, v, _least_of(k)) for k, v in state_dict.items())), None)
    if problem:
        raise UserError(f"{source}: {problem} (a diverged or damaged model)")
    module.load_state_dict(state_dict)


def _least_of(key: str) -> tuple[float, bool] | None:
    """The bound a network's stored tensor keeps: a BatchNorm running variance is never negative."""
    return (0.0, False) if key.endswith("running_var") else None


def _tensor_problem(entry: str, tensor: torch.Tensor, least: tuple[float, bool] | None = None) -> str | None:
    """What is wrong with a stored floating-point tensor's values, or None: NaN or infinite values, or
    values below ``least`` = (bound, strict), at or below it where strict."""
    if not tensor.is_floating_point():
        return None
    broken = int((~torch.isfinite(tensor)).sum())
    if broken:
        return f"{entry} holds NaN or infinite values ({broken} of {tensor.numel()})"
    if least is None:
        return None
    bound, strict = least
    below = int((tensor <= bound).sum() if strict else (tensor < bound).sum())
    return f"{entry} has {below} values {'<=' if strict else '<'} {bound:g}" if below else None


def load_released(model: nn.Module, model_dir: str | Path) -> None:
    """Load the authors' three state-dict files into a GRLNet built with the released filter layer."""
    folder = Path(model_dir)
    for attribute, name in RELEASED_FILES.items():
        path = folder / name
        load_weights(getattr(model, attribute), load_file(path), str(path))


# What test.py reads from a train.py checkpoint: the networks, the options, the metrics, the epoch and step it
# was saved at, and facts of the training data (the sample rate of its audio, the normal clips held out for a
# threshold).
SCORING_ENTRIES = ("models", "options", "metrics", "epoch", "step", "sample_rate", "threshold_clips")


@dataclass(frozen=True)
class StoredOptions:
    """How a run's stored options are read, as the scripts' options define them (opts.py): every option's
    name, the completion of a run saved before some options existed, and the problems of stored values
    (each as "options['name'] is VALUE, why")."""

    names: frozenset[str]
    complete: Callable[[dict], dict]
    problems: Callable[[dict], list[str]]


def load_train_checkpoint(path: str | Path, options: StoredOptions, needed: Collection[str] = SCORING_ENTRIES) -> dict:
    """A checkpoint train.py wrote, with the ``needed`` entries and its options completed and checked by
    ``options``, refused once, naming all that is missing, malformed or holds values no run writes, before
    any of it is used."""
    state = load_file(path)
    if not isinstance(state, dict) or not set(needed) <= state.keys():
        raise UserError(f"{path}: not a GRLNet checkpoint written by train.py (the release's three .pth "
                        "files are scored with test.py --model_dir)")
    if isinstance(state["options"], dict):
        state["options"] = options.complete(state["options"])
    problems = train_checkpoint_problems(state, options.names)
    if problems:
        raise UserError(f"{path}: incomplete GRLNet checkpoint: {'; '.join(problems)}")
    damaged = stored_value_problems(state, options.problems)
    if damaged:
        raise UserError(f"{path}: {'; '.join(damaged)}; the checkpoint is damaged")
    return state


def train_checkpoint_problems(state: dict, option_names: Collection[str]) -> list[str]:
    """What scoring and resuming need from a train.py checkpoint (a dict with 'models' and 'options', which
    must hold every one of ``option_names``) and ``state`` lacks, each in a few words."""
    options = state["options"]
    if not isinstance(options, dict):
        return ["'options' is not a dict"]
    missing = sorted(set(option_names) - options.keys())
    problems = [f"'options' lacks {', '.join(missing)}"] if missing else []
    models, metrics, feature_models = state["models"], state.get("metrics"), state.get("feature_models")
    if not isinstance(models, dict):
        problems.append("'models' is not a dict")
    else:
        problems += [f"'models' has no '{name}'" for name in NETWORKS if name not in models]
    if not isinstance(metrics, list):
        problems.append("'metrics' is missing or not a list")
    elif not all(isinstance(row, dict) for row in metrics):
        problems.append("a 'metrics' entry is not a dict")
    elif metrics and "threshold" not in metrics[-1]:
        problems.append("the last 'metrics' entry has no 'threshold'")
    if feature_models is not None:
        problems += feature_model_problems(feature_models)
    return problems


# Whole numbers a checkpoint holds besides its options: the least value a run writes, and whether it may be
# None (an unknown sample rate: CSV data; no held-out clips: a run with a labelled test set).
COUNT_ENTRIES = {"epoch": (0, False), "step": (0, False), "world_size": (1, False), "sample_rate": (1, True),
                 "threshold_clips": (1, True)}
# The bound a feature model's tensor keeps, as (bound, strict): a standardisation's scale is positive.
FEATURE_BOUNDS = {"scale": (0.0, True)}


def stored_value_problems(state: dict, option_problems: Callable[[dict], list[str]]) -> list[str]:
    """The values of a complete train.py checkpoint (``train_checkpoint_problems`` finds none) that scoring
    or resuming would decide with and that no run writes, each naming its entry: options outside their
    option's type, choices or range (``option_problems``), counts, the decision threshold, the feature
    models and, for resuming, the step statistics and the optimizers' states."""
    problems = option_problems(state["options"])
    problems += _count_problems(state)
    problems += _threshold_problems(state["metrics"])
    if state.get("feature_models") is not None:
        problems += _feature_model_value_problems(state["feature_models"])
    if state.get("step_stats") is not None and type(state["step"]) is int:
        problems += _step_stats_problems(state["step_stats"], state["step"])
    if "optimizers" in state:
        problems += _optimizer_problems(state["optimizers"])
    if "rng" in state:
        problems += _rng_problems(state["rng"])
    if "train_files" in state and not (isinstance(state["train_files"], list)
                                       and all(isinstance(name, str) for name in state["train_files"])):
        problems.append("train_files is not a list of file names")
    return problems


def _count_problems(state: dict) -> list[str]:
    """The stored counts (``COUNT_ENTRIES``) that are not whole numbers of their range, and an epoch other
    than the number of epochs whose metrics are stored (one row is added as each epoch ends)."""
    problems = []
    for name, (least, optional) in COUNT_ENTRIES.items():
        value = state.get(name)
        if name in state and not (value is None and optional) and (type(value) is not int or value < least):
            problems.append(f"{name} is {value!r}, not a whole number >= {least}")
    epoch, metrics = state["epoch"], state["metrics"]
    if type(epoch) is int and epoch != len(metrics):
        problems.append(f"epoch is {epoch}, but metrics holds the results of {len(metrics)} epochs")
    return problems


def _threshold_problems(metrics: list[dict]) -> list[str]:
    """The last decision threshold (which test.py decides --input files at) unless it is a finite number."""
    if not metrics:
        return []
    threshold = metrics[-1]["threshold"]
    if type(threshold) in (int, float) and math.isfinite(threshold):
        return []
    return [f"metrics[-1]['threshold'] is {threshold!r}, not a finite number"]


def _feature_model_value_problems(models: dict[str, dict[str, torch.Tensor]]) -> list[str]:
    """Feature models' values no fit gives: NaN or infinite values, a scale <= 0, no kNN reference window."""
    problems = []
    for space, model in models.items():
        if not len(model["reference"]):
            problems.append(f"feature_models[{space!r}]['reference'] holds no windows, and the kNN distance needs one")
        problems += filter(None, (_tensor_problem(f"feature_models[{space!r}][{name!r}]", model[name],
                                                  FEATURE_BOUNDS.get(name)) for name in SPACE_ENTRIES))
    return problems


def _step_stats_problems(step_stats: object, step: int) -> list[str]:
    """The statistics of the steps an epoch has taken (resuming averages them into its metrics), unless a
    [steps, statistics] tensor with finite values in the ``step`` rows taken."""
    if (not isinstance(step_stats, torch.Tensor) or step_stats.dim() != 2 or step_stats.shape[1] != len(STEP_STATS)
            or step_stats.shape[0] < step):
        return [f"step_stats is not a tensor of {len(STEP_STATS)} statistics for each of at least {step} steps"]
    problem = _tensor_problem(f"step_stats[:{step}]", step_stats[:step])
    return [problem] if problem else []


def _rng_problems(rng: object) -> list[str]:
    """The random generators' states unless the CPU's is one torch can set (and the CUDA one None or bytes)."""
    cpu = torch.get_rng_state()
    if (not isinstance(rng, dict) or not isinstance(rng.get("cpu"), torch.Tensor)
            or (rng["cpu"].dtype, rng["cpu"].shape) != (cpu.dtype, cpu.shape)):
        return ["rng['cpu'] is not the state of torch's random generator"]
    cuda = rng.get("cuda")
    if cuda is not None and not (isinstance(cuda, torch.Tensor) and cuda.dtype == torch.uint8):
        return ["rng['cuda'] is not the state of a CUDA random generator"]
    return []


def _optimizer_problems(optimizers: object) -> list[str]:
    """Each network's Adam state, unless it holds finite moments (the second ones >= 0) and a finite
    learning rate > 0: resuming would take any other into the next step."""
    if not isinstance(optimizers, dict) or set(optimizers) != set(NETWORKS):
        return [f"optimizers does not hold the states of {', '.join(NETWORKS)}"]
    problems = []
    for name, optimizer in optimizers.items():
        entry = f"optimizers[{name!r}]"
        if (not isinstance(optimizer, dict) or not isinstance(optimizer.get("state"), dict)
                or not all(isinstance(moments, dict) for moments in optimizer["state"].values())
                or not isinstance(optimizer.get("param_groups"), list)):
            problems.append(f"{entry} is not an optimizer's state")
            continue
        for index, moments in optimizer["state"].items():
            problems += filter(None, (_tensor_problem(f"{entry}['state'][{index}][{key!r}]", value,
                                                      (0.0, False) if key == "exp_avg_sq" else None)
                                      for key, value in moments.items() if isinstance(value, torch.Tensor)))
        for group in optimizer["param_groups"]:
            rate = group.get("lr") if isinstance(group, dict) else None
            if not (type(rate) in (int, float) and math.isfinite(rate) and rate > 0):
                problems.append(f"{entry}['param_groups'] holds the learning rate {rate!r}, not a finite number > 0")
    return problems
