"""Checkpoints: one dict per run written atomically, loaded without unpickling code.

A run's checkpoint holds the three networks, their optimizers, the options, the epoch (and the
step inside it, with its per-step statistics), the metrics so far, the random generators' states
(CPU, CUDA), the number of processes and the feature scores' statistics of normal windows. The
authors' release shipped three state-dict files instead; ``load_released`` reads those.
"""
from __future__ import annotations

import os
import pickle
import pickletools
import re
import warnings
import zipfile
from pathlib import Path
from typing import Collection

import torch
from torch import nn

from grlnet.errors import UserError
from grlnet.features import feature_model_problems
from network import NETWORKS
from opts import completed_options, option_defaults

RELEASED_FILES = {"regional": "Regional_Generator.pth", "local": "Local_Generator.pth",
                  "discriminator": "Discirminator.pth"}  # the release's spelling
# torch.save writes a zip archive or (legacy format) a pickle stream, which opens with its protocol opcode.
CHECKPOINT_HEADERS = (b"PK\x03\x04", b"\x80")
# torch's weights-only refusal of a global the file asks to import: what a file that carries code does.
REFUSED_GLOBAL = re.compile(r"GLOBAL (\S+) (?:was not an allowed global|whose module)")


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write to a temporary file, flush it to disk, then rename: a crash never leaves half a file. A write
    that fails (a full disk) removes the temporary file, keeps the previous checkpoint, and says why."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    try:
        with temporary.open("wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as err:
        temporary.unlink(missing_ok=True)
        kept = "the previous checkpoint there is kept" if path.is_file() else "no checkpoint is saved"
        raise UserError(f"{path}: cannot save the checkpoint ({err.strerror or err}); {kept}") from None


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
    broken = [k for k, v in state_dict.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise UserError(f"{source}: {broken[0]} holds NaN or infinite values (a diverged or damaged model)")
    module.load_state_dict(state_dict)


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


def load_train_checkpoint(path: str | Path, needed: Collection[str] = SCORING_ENTRIES) -> dict:
    """A checkpoint train.py wrote, with the ``needed`` entries, refused once, naming all that is missing
    or malformed, before any of it is used."""
    state = load_file(path)
    if not isinstance(state, dict) or not set(needed) <= state.keys():
        raise UserError(f"{path}: not a GRLNet checkpoint written by train.py (the release's three .pth "
                        "files are scored with test.py --model_dir)")
    if isinstance(state["options"], dict):
        state["options"] = completed_options(state["options"])
    problems = train_checkpoint_problems(state)
    if problems:
        raise UserError(f"{path}: incomplete GRLNet checkpoint: {'; '.join(problems)}")
    return state


def _length_option_problems(options: dict) -> list[str]:
    """The stored lengths the networks are rebuilt from, each a whole number."""
    return [f"option '{name}' is {options[name]!r}, not a whole number"
            for name in ("mess_length", "segment_length", "segment_hop")
            if type(options[name]) is not int or options[name] < 0]


def train_checkpoint_problems(state: dict) -> list[str]:
    """What scoring and resuming need from a train.py checkpoint (a dict with 'models' and 'options')
    and ``state`` lacks, each in a few words."""
    options = state["options"]
    if not isinstance(options, dict):
        return ["'options' is not a dict"]
    missing = sorted(set(option_defaults()) - options.keys())
    problems = [f"'options' lacks {', '.join(missing)}"] if missing else _length_option_problems(options)
    models, metrics, feature_models = state["models"], state.get("metrics"), state.get("feature_models")
    if not isinstance(models, dict):
        problems.append("'models' is not a dict")
    else:
        problems += [f"'models' has no '{name}'" for name in NETWORKS if name not in models]
    if not isinstance(metrics, list):
        problems.append("'metrics' is missing or not a list")
    elif metrics and not isinstance(metrics[-1], dict):
        problems.append("the last 'metrics' entry is not a dict")
    elif metrics and not isinstance(metrics[-1].get("threshold"), float):
        problems.append("the last 'metrics' entry has no 'threshold'")
    if feature_models is not None:
        problems += feature_model_problems(feature_models)
    return problems
