"""Checkpoints: atomic writes, no unpickling of code, refusal of other lengths and keys."""
import errno
import os
import pickle
import re
from pathlib import Path

import pytest
import torch

from data.console import UserError
from grlnet.checkpoint import load_file, load_weights, save_checkpoint, train_checkpoint_problems
from network import D_Net, GRLNet
from opts import (
    REMOVED_OPTIONS,
    VALUES_BEFORE_ADDED,
    changed_options,
    completed_options,
    option_defaults,
    parse_opts,
    removed_options_used,
    stored_option_problems,
)


class _Payload:
    """Unpickling this creates a marker file: what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("protocol, asked", [  # protocols 4 and 5 name imports with opcodes torch stops before
    (2, "getattr"), (4, "pathlib.Path.touch"), (5, "pathlib.Path.touch")])
def test_code_carrying_checkpoint_is_refused_naming_the_import_and_never_run(tmp_path, protocol, asked, recwarn):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    with path.open("wb") as handle:
        pickle.dump({"models": _Payload(marker)}, handle, protocol=protocol)
    with pytest.raises(UserError, match=rf"evil.pt: refused, .* could run code \(it asks for {re.escape(asked)}\)$"):
        load_file(path)
    assert not marker.exists()
    assert not recwarn.list  # torch's note on pickle protocols stays out of the user's way


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1}, path)

    def broken_save(obj, handle):
        handle.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(UserError, match=f"^{re.escape(str(path))}: cannot save the checkpoint \\(No space left on "
                                        "device\\); the previous checkpoint there is kept$"):
        save_checkpoint({"epoch": 2}, path)
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(UserError, match=r"first.pt: cannot save the checkpoint \(No space left on device\); no "
                                        "checkpoint is saved$"):
        save_checkpoint({"epoch": 2}, tmp_path / "first.pt")
    monkeypatch.undo()
    assert load_file(path) == {"epoch": 1} and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
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


def test_code_carrying_zip_checkpoint_names_the_global_and_is_never_run(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    torch.save({"models": _Payload(marker)}, path)
    with pytest.raises(UserError, match=r"evil.pt: refused, .* could run code \(it asks for getattr\)"):
        load_file(path)
    assert not marker.exists()


def _truncated_checkpoint(path: Path) -> bytes:
    save_checkpoint({"epoch": 1, "weights": torch.zeros(64)}, path)
    return path.read_bytes()[:200]


@pytest.mark.parametrize("content, reason", [
    (b"hi\n", "it is not in the format torch.save writes"),
    (b"junk", "it is not in the format torch.save writes"),
    (bytes(range(256)) * 4, "it is not in the format torch.save writes"),  # was called code-carrying
    (b"", "the file is empty"),
    (b"\x80\x02junk", "its content is corrupt"),
    (_truncated_checkpoint, "PytorchStreamReader failed reading zip archive"),
])
def test_files_that_are_no_checkpoint_are_called_unreadable(tmp_path, content, reason):
    path = tmp_path / "bad.pt"
    path.write_bytes(content(tmp_path / "good.pt") if callable(content) else content)
    with pytest.raises(UserError, match=rf"bad.pt: not a readable PyTorch checkpoint \({reason}"):
        load_file(path)


def test_flipped_bits_in_a_saved_tensor_are_refused_not_loaded(tmp_path):
    """torch.load ignores the archive's checksums; flipped sign bits would load as other weights."""
    path = tmp_path / "last.pt"
    weights = torch.arange(1, 257, dtype=torch.float32)
    save_checkpoint({"epoch": 1, "weights": weights}, path)
    content = bytearray(path.read_bytes())
    start = content.find(weights.numpy().tobytes())
    assert start > 0  # torch.save stores tensors uncompressed
    content[start + 3] ^= 0x80  # the sign bit of the first float
    path.write_bytes(bytes(content))
    with pytest.raises(UserError, match=r"last.pt: corrupt, the checksum of \S+/data/0 does not match its content"):
        load_file(path)


def test_stored_lengths_must_be_whole_numbers_and_every_option_stored():
    options = {**vars(parse_opts([])), "mess_length": "4096", "segment_length": 1024, "segment_hop": -1}
    state = {"models": {name: {} for name in ("regional", "local", "discriminator")}, "metrics": [], "options": options}
    # complete: the values are stored_option_problems' to judge
    assert train_checkpoint_problems(state, option_defaults()) == []
    assert stored_option_problems(options) == ["options['mess_length'] is '4096', of type str, not int",
                                               "options['segment_hop'] is -1, expected an integer >= 0, got -1"]
    del options["mess_length"], options["seed"]
    assert train_checkpoint_problems(state, option_defaults()) == ["'options' lacks mess_length, seed"]


def test_options_added_later_fill_only_what_a_stored_run_lacks():
    assert set(VALUES_BEFORE_ADDED) <= option_defaults().keys()
    assert completed_options({"seed": 4}) == {**VALUES_BEFORE_ADDED, "seed": 4}
    assert completed_options({"learning_rate_scaling": "sqrt"})["learning_rate_scaling"] == "sqrt"


def test_removed_study_options_read_as_off_at_their_off_values_and_as_another_run_otherwise():
    """A run stored before the study options were removed holds them: at the values that left them off it
    is a run of today's options (resumed, reused); at a study's setting it is not."""
    opt = parse_opts([])
    before_removal = {**vars(opt), **REMOVED_OPTIONS}
    assert not set(REMOVED_OPTIONS) & option_defaults().keys()
    assert removed_options_used(before_removal) == [] and changed_options(before_removal, opt) == []
    assert stored_option_problems(before_removal) == []
    study = {**before_removal, "label_smoothing": 0.1, "instance_noise_snr": 6.0, "pseudo_anomaly_epochs": 3}
    assert removed_options_used(study) == ["--label_smoothing 0.1", "--instance_noise_snr 6.0",
                                           "--pseudo_anomaly_epochs 3"]
    assert changed_options({**before_removal, "pseudo_anomaly_epochs": 1}, opt) == ["--pseudo_anomaly_epochs 1 -> removed"]


def test_a_folder_is_named_as_one_with_the_file_to_give(tmp_path):
    expected = re.escape(f"{tmp_path}: is a folder, not a checkpoint; give a file in it, such as "
                         f"{tmp_path / 'checkpoints' / 'last.pt'}")
    with pytest.raises(UserError, match=f"^{expected}$"):
        load_file(tmp_path)


def test_weights_with_nan_are_refused_by_name():
    state = D_Net(256).state_dict()
    state["discriminator.12.weight"][0, 3] = float("nan")  # the final linear layer
    with pytest.raises(UserError, match=r"^ckpt: discriminator.12.weight holds NaN or infinite values"):
        load_weights(D_Net(256), state, "ckpt")


def test_a_state_dict_must_hold_tensors():
    with pytest.raises(UserError, match="ckpt: expected a state dict of tensors"):
        load_weights(D_Net(256), {"gfl.layernorm.weight": [1.0]}, "ckpt")
    with pytest.raises(UserError, match="ckpt: expected a state dict of tensors"):
        load_weights(D_Net(256), torch.zeros(3), "ckpt")
