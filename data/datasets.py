"""Decoded data sets held in memory (decoded once per run, never re-parsed per epoch) and their windows."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from data import cache, layouts
from data.cache import Decoded
from data.console import UserError, progress
from data.signals import fit_length, is_audio, is_indexed_csv, read_csv_signal, read_wav
from data.synthetic import SAMPLE_RATE, make_synthetic_set

log = logging.getLogger("grlnet.data")  # under cli's "grlnet" log: its console and log file once set up


@dataclass(frozen=True)
class DataSettings:
    """Which clips a run reads (a synthetic set, a MIMII/DCASE root, or training and test folders) and
    how it decodes and cuts them; built once from the command line's data options."""

    data_kind: str  # "synthetic", "csv" or "wav"
    data_root: str | None
    train_normal_files: int | None
    train_root: str | None
    train_label_path: str | None
    test_root: str | None
    test_label_path: str | None
    seed: int
    synthetic_train_clips: int
    synthetic_test_clips: int
    sample_rate: int | None
    mess_length: int
    segment_length: int
    segment_hop: int
    cache: bool
    quiet: bool


@dataclass
class ClipSet:
    """Clips cut or padded to one length: names [N], signals [N, L] float32, labels [N] (or None), and
    the sample rate of the audio they were decoded from (None: CSV signals, whose rate is unknown)."""

    names: list[str]
    signals: np.ndarray
    labels: np.ndarray | None
    sample_rate: int | None = None

    def __len__(self) -> int:
        return len(self.names)

    def windows(self, segment_length: int, segment_hop: int, per_clip: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The windows at ``segment_hop`` as [N * W, 1, segment_length] and the clip index of each window [N * W]:
        all of them, or with ``per_clip`` > 0 that many of each clip's, evenly spaced (all if it has fewer).

        ``segment_length`` 0 means one window per clip: the whole signal.
        """
        signals = torch.from_numpy(self.signals)
        if segment_length:
            signals = signals.unfold(1, segment_length, segment_hop)  # [N, W, segment_length]
            if 0 < per_clip < signals.shape[1]:
                signals = signals[:, torch.from_numpy(evenly_spaced(signals.shape[1], per_clip))]
        else:
            signals = signals.unsqueeze(1)  # [N, 1, L]
        clips, per_clip, length = signals.shape
        clip_index = torch.arange(clips).repeat_interleave(per_clip)
        return signals.reshape(clips * per_clip, 1, length).contiguous(), clip_index

    def part(self, selection: slice) -> ClipSet:
        """The clips that ``selection`` picks, as views of this set's arrays."""
        labels = None if self.labels is None else self.labels[selection]
        return ClipSet(self.names[selection], self.signals[selection], labels, self.sample_rate)

    def binary_labels(self) -> np.ndarray:
        """0 normal, 1 abnormal (the release's intensity labels 2 and 3 count as abnormal)."""
        return (self.labels > 0).astype(np.int64)


def evenly_spaced(count: int, chosen: int) -> np.ndarray:
    """``chosen`` indices of ``range(count)`` spread evenly from the first to the last (all if fewer)."""
    if count <= chosen:
        return np.arange(count)
    return np.linspace(0, count - 1, chosen).round().astype(np.int64)


def drawn_windows(signals: torch.Tensor, length: int, per_clip: int, seed: int, epoch: int) -> torch.Tensor:
    """One epoch's training windows of the clips ``signals`` [N, T], as [N * per_clip, 1, length], on their device.

    Window k of a clip starts at a random offset in the k-th of ``per_clip`` equal parts of the clip's
    possible starts, so every epoch covers each clip from its beginning to its end; the offsets depend on
    (seed, epoch) alone, so a resumed epoch draws the same windows and every process of a run the same ones
    (each trains on its share of them).
    """
    clips, samples = signals.shape
    starts = samples - length + 1
    bounds = torch.arange(per_clip + 1) * starts // per_clip
    low, width = bounds[:-1], (bounds[1:] - bounds[:-1]).clamp(min=1)
    generator = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))
    offsets = (low + (torch.rand(clips, per_clip, generator=generator) * width).long()).clamp(max=starts - 1)
    clip_index = torch.arange(clips).unsqueeze(1).expand(clips, per_clip)
    windows = signals.unfold(1, length, 1)[clip_index.to(signals.device), offsets.to(signals.device)]
    return windows.reshape(clips * per_clip, 1, length)


def _check_file(path: Path, length: int, rate: int, settings: DataSettings, rates: dict[int, Path]) -> None:
    """Refuse a file whose sample rate differs from the run's others (``rates``: each rate seen so far and
    its first file; 0 is a CSV signal's unknown rate) or that is shorter than one window."""
    if rate:
        if rates and rate not in rates:
            first_rate, first_path = next(iter(rates.items()))
            raise UserError(f"{path}: sample rate {rate} Hz differs from {first_rate} Hz of "
                            f"{first_path}; give --sample_rate to resample all files")
        rates.setdefault(rate, path)
    if length < settings.segment_length:
        raise UserError(f"{path}: {length} samples, shorter than one window (--segment_length "
                        f"{settings.segment_length}); give a smaller --segment_length or longer recordings")


def _decode_files(paths: list[Path], settings: DataSettings, what: str, rates: dict[int, Path]) -> Decoded:
    """Decode every file, check it as soon as it is decoded, and bring it to ``mess_length``."""
    signals, lengths, channels, file_rates = [], [], [], []
    for path in progress(paths, desc=f"reading {what}", unit="file", quiet=settings.quiet):
        if path.suffix.lower() == ".csv":
            signal, rate, count = read_csv_signal(path), 0, 1
        else:
            signal, rate, count = read_wav(path, settings.sample_rate)
        _check_file(path, signal.shape[0], rate, settings, rates)
        signals.append(fit_length(signal, settings.mess_length, str(path)))
        lengths.append(signal.shape[0])
        channels.append(count)
        file_rates.append(rate)
    return Decoded(np.stack(signals).astype(np.float32), np.array(lengths), np.array(channels), np.array(file_rates))


def _warn_about_lengths(lengths: list[tuple[Path, int]], what: str, mess_length: int) -> None:
    """One warning for the clips that are more than half zero padding (they score mostly silence), one
    for those cut to less than half (most of each recording is never seen)."""
    short = [(path, n) for path, n in lengths if 2 * n < mess_length]
    long = [(path, n) for path, n in lengths if n > 2 * mess_length]
    if short:
        log.warning("warning: %d of %d %s are shorter than half of --mess_length %d and are zero-padded "
                    "to it (the first: %s, %d samples)", len(short), len(lengths), what, mess_length, *short[0])
    if long:
        log.warning("warning: %d of %d %s are more than twice --mess_length %d; only their first %d samples "
                    "are used (the first: %s, %d samples)", len(long), len(lengths), what, mess_length,
                    mess_length, *long[0])


def available_memory() -> int | None:
    """Bytes of host memory available without swapping (Linux's MemAvailable); None where unknown."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def memory_needed(files: int, settings: DataSettings) -> int:
    """Bytes that holding ``files`` clips needs at their peak: the decoded float32 signals twice while they
    are stacked, and the training windows, a copy of the overlapping windows cut from them."""
    signals = files * settings.mess_length * 4
    windows = signals * settings.segment_length / settings.segment_hop if settings.segment_length else signals
    return int(2 * signals + windows)


def _require_memory(files: int, settings: DataSettings, what: str) -> None:
    """Refuse, before decoding anything, a data set that would not fit in the memory available."""
    needed, available = memory_needed(files, settings), available_memory()
    if available is not None and needed > available:
        raise UserError(f"{files} {what} of {settings.mess_length} samples need about {needed / 2**30:.1f} GiB of "
                        "memory "
                        f"and {available / 2**30:.1f} GiB is available; use fewer files, a shorter --mess_length "
                        "or a larger --segment_hop")


def _decode(items: list[layouts.Item], settings: DataSettings, what: str,
            rates: dict[int, Path] | None = None) -> ClipSet:
    """Every file decoded once (or read from the decoded cache, data/cache.py), checked, and brought to
    ``mess_length``.

    ``rates`` maps each sample rate seen so far in the run to its first file: all must agree.
    """
    paths, rates = [path for path, _ in items], {} if rates is None else rates
    cached = settings.sample_rate, settings.mess_length
    decoded = cache.load(paths, *cached) if settings.cache else None
    if decoded is None:
        decoded = _decode_files(paths, settings, what, rates)
        if settings.cache:
            cache.save(paths, *cached, decoded)
    else:
        log.info("%s: %d decoded recordings read from the cache (%s; --no-cache decodes them again)",
                 what, len(paths), cache.cache_folder())
        for path, length, rate in zip(paths, decoded.lengths.tolist(), decoded.rates.tolist(), strict=True):
            _check_file(path, length, rate, settings, rates)
    _warn_about_lengths(list(zip(paths, decoded.lengths.tolist(), strict=True)), what, settings.mess_length)
    mixed = [path for path, count in zip(paths, decoded.channels.tolist(), strict=True) if count > 1]
    if mixed:
        log.info("note: %d of %d %s have several channels, mixed to mono by averaging channels (the first: %s)",
                 len(mixed), len(items), what, mixed[0])
    labels = np.array([label for _, label in items], dtype=np.int64)
    return ClipSet([str(path) for path in paths], decoded.signals, labels, next(iter(rates), settings.sample_rate))


def _require_normal(items: list[layouts.Item]) -> None:
    abnormal = [path for path, label in items if label != 0]
    if abnormal:
        raise UserError(f"{abnormal[0]}: the training set holds {len(abnormal)} abnormal file(s); "
                        "GRLNet trains on normal recordings only")


def _require_disjoint(train_items: list[layouts.Item], test_items: list[layouts.Item]) -> None:
    """Refuse files that are both trained on and tested (the same file under any path to it)."""
    trained = {path.resolve() for path, _ in train_items}
    shared = [path for path, _ in test_items if path.resolve() in trained]
    if shared:
        raise UserError(f"{shared[0]}: in the training set and in the test set ({len(shared)} such files); a model "
                        "scores its own training clips as more normal than new ones, so the metrics would flatter "
                        "it: keep the test files out of --train_root")


def _require_both_classes(clips: ClipSet, where: str) -> None:
    present = set(clips.binary_labels().tolist())
    if present != {0, 1}:
        missing = "abnormal" if 0 in present else "normal"
        raise UserError(f"{where}: the test set has no {missing} items; AUC needs both classes")


def _synthetic(settings: DataSettings) -> tuple[ClipSet, ClipSet]:
    train_signals, train_labels = make_synthetic_set(settings.seed, settings.mess_length,
                                                     settings.synthetic_train_clips, 0)
    half = settings.synthetic_test_clips // 2
    test_signals, test_labels = make_synthetic_set(settings.seed + 1_000_003, settings.mess_length,
                                                   settings.synthetic_test_clips - half, half)
    name = "synthetic/{}_{:04d}".format
    train = ClipSet([name("normal", i) for i in range(len(train_labels))], train_signals, train_labels, SAMPLE_RATE)
    test = ClipSet([name("normal" if y == 0 else "cavitation", i) for i, y in enumerate(test_labels)],
                   test_signals, test_labels, SAMPLE_RATE)
    return train, test


def load_datasets(settings: DataSettings, need_train: bool = True) -> tuple[ClipSet | None, ClipSet | None]:
    """The training set (normal clips only) and the labelled test set that ``settings`` names.

    Training needs no test set (None): a run on normal recordings alone sets its decision threshold
    on held-out training clips instead (``--threshold_clips``).
    """
    if settings.data_kind == "synthetic":
        return _synthetic(settings)
    if settings.data_root:
        train_items, test_items = layouts.split_data_root(settings.data_root, settings.train_normal_files)
        where = settings.data_root
    elif settings.data_kind == "csv":
        train_items = layouts.csv_items(settings.train_root, settings.train_label_path) \
            if need_train and settings.train_root else None
        test_items = layouts.csv_items(settings.test_root, settings.test_label_path) if settings.test_root else None
        where = settings.test_root
    else:
        train_items = (layouts.labelled_wav_items(settings.train_root, training=True)
                       if need_train and settings.train_root else None)
        test_items = layouts.labelled_wav_items(settings.test_root) if settings.test_root else None
        where = settings.test_root
    if test_items is None and not (need_train and train_items):
        raise UserError("no test data: give --test_root (or --data_root), or score unlabelled "
                        "recordings with --input")
    if need_train and train_items is None:
        raise UserError("no training data: give --train_root (or --data_root)")
    _require_memory(len(train_items or []) * need_train + len(test_items or []), settings, "files")
    train, rates = None, {}
    if need_train:
        _require_normal(train_items)
        _require_disjoint(train_items, test_items or [])
        train = _decode(train_items, settings, "training files", rates)
    if test_items is None:
        return train, None
    test = _decode(test_items, settings, "test files", rates)
    _require_both_classes(test, where)
    return train, test


def hold_out_last(train: ClipSet, count: int, option: str) -> tuple[ClipSet, ClipSet]:
    """The training set without its last ``count`` clips (name order), and those clips, held out of
    training for what ``option`` (the option that asks for them) does with them."""
    if count >= len(train):
        raise UserError(f"{option} {count} leaves no training clip: the training set has "
                        f"{len(train)} clips")
    keep = len(train) - count
    return train.part(slice(None, keep)), train.part(slice(keep, None))


def hold_out_for_threshold(train: ClipSet, count: int | None) -> tuple[ClipSet, ClipSet]:
    """Without a labelled test set: the clips that train, and the last ``count`` (``--threshold_clips``,
    name order), held out to set the decision threshold on; by default (None) a tenth of them, rounded
    down, at least 2 (the same clips again when a run resumes on the same files)."""
    if count is None:
        count = max(2, len(train) // 10)
        if count >= len(train):
            raise UserError(f"{len(train)} normal training clips and no labelled test set: too few to train and "
                            f"also hold out {count} to set the decision threshold on; give more "
                            "recordings, or a labelled test set with --test_root")
    return hold_out_last(train, count, "--threshold_clips")


def _unlabelled_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if (is_audio(p) or is_indexed_csv(p)) and p.is_file())
        if not files:
            raise UserError(f"{path}: no audio (.wav, .flac, .ogg, ...) or <index>.csv signal files (the release's "
                            "0.csv, 1.csv, ...)")
        return files
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    return [path]


def load_unlabelled(paths: list[str], settings: DataSettings) -> ClipSet:
    """Audio or CSV files (or folders of them) to score without labels."""
    files = [f for p in paths for f in _unlabelled_files(Path(p))]
    _require_memory(len(files), settings, "files to score")
    clips = _decode([(f, -1) for f in files], settings, "files to score")
    clips.labels = None
    return clips
