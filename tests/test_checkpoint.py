"""Checkpoints: atomic writes, no unpickling of code, refusal of other lengths and keys."""
import pickle
from pathlib import Path

import pytest
import torch

from checkpoint import load_file, load_weights, save_checkpoint
from errors import UserError
from network import D_Net, GRLNet


class _Payload:
    """Unpickling this creates a marker file: what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_code_carrying_checkpoint_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    with path.open("wb") as handle:
        pickle.dump({"models": _Payload(marker)}, handle, protocol=2)
    with pytest.raises(UserError, match="refused"):
        load_file(path)
    assert not marker.exists()


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1}, path)

    def broken_save(obj, handle):
        handle.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert load_file(path) == {"epoch": 1}
    save_checkpoint({"epoch": 3}, path)
    assert load_file(path) == {"epoch": 3} and not list(tmp_path.glob("*.tmp"))


def test_other_signal_length_is_refused_with_both_lengths():
    with pytest.raises(UserError, match="built for signal length 512, but this run uses 256"):
        load_weights(D_Net(256), D_Net(512).state_dict(), "ckpt")


def test_missing_and_unexpected_keys_are_named():
    state = GRLNet(256).regional.state_dict()
    state.pop("decoder.9.bias")
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(UserError, match=r"missing \['decoder.9.bias'\], unexpected \['extra.weight'\]"):
        load_weights(GRLNet(256).regional, state, "ckpt")


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"\x00\x01 definitely not a zip archive")
    with pytest.raises(UserError, match="garbage.pt"):
        load_file(path)
    with pytest.raises(UserError, match="checkpoint not found"):
        load_file(tmp_path / "missing.pt")
