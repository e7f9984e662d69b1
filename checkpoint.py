"""Checkpoints: one dict per run written atomically, loaded without unpickling code.

A run's checkpoint holds the three networks, their optimizers, the options, the epoch (and the
step inside it), the metrics so far and the RNG state. The authors' release shipped three
state-dict files instead; ``load_released`` reads those.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
from torch import nn

from errors import UserError

RELEASED_FILES = {"regional": "Regional_Generator.pth", "local": "Local_Generator.pth",
                  "discriminator": "Discirminator.pth"}  # the release's spelling


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write to a temporary file, flush it to disk, then rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def load_file(path: str | Path) -> dict:
    """``torch.load`` with ``weights_only=True``: a file that carries code is refused, never run."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first_line = str(err).strip().splitlines()[0]
        raise UserError(f"{path}: refused, the file holds more than tensors and plain values and "
                        f"loading it could run code ({first_line})") from None
    except (RuntimeError, EOFError, ValueError) as err:
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({err})") from None


def _length_of(state_dict: dict) -> int | None:
    weight = state_dict.get("gfl.layernorm.weight")
    return None if weight is None else int(weight.shape[0])


def load_weights(module: nn.Module, state_dict: dict, source: str) -> None:
    """Load a state dict, refusing another signal length or mismatched keys with a clear message."""
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
    module.load_state_dict(state_dict)


def load_released(model, model_dir: str | Path) -> None:
    """Load the authors' three state-dict files into a GRLNet built with the released filter layer."""
    folder = Path(model_dir)
    for attribute, name in RELEASED_FILES.items():
        path = folder / name
        state = load_file(path)
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise UserError(f"{path}: expected a state dict of tensors")
        load_weights(getattr(model, attribute), state, str(path))
