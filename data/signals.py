"""Reading one signal from a file and bringing it to a fixed length, with checks that name the file."""
from __future__ import annotations

import struct
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import librosa
import numpy as np
import soundfile

from errors import UserError

EXTENSIBLE = 0xFFFE  # WAVE_FORMAT_EXTENSIBLE: the real format tag is in the sub-format GUID
FRAME_PER_BLOCK = {1, 3, 6, 7}  # PCM, IEEE float, A-law, mu-law: one block holds one frame
STREAMED_SIZE = 0xFFFFFFFF  # a data size written by streaming encoders that could not seek back
# Largest sample magnitude accepted: a signal's power (the mean square of up to ~1e6 samples, in float32)
# stays finite below it. Audio lies in [-1, 1]; sensor values in the release's CSV files far below it.
MAX_MAGNITUDE = 1e15


def check_signal(signal: np.ndarray, source: str) -> np.ndarray:
    """Refuse empty, non-finite and constant signals (no model can learn from them); return float32."""
    if signal.size == 0:
        raise UserError(f"{source}: the signal is empty")
    bad = np.flatnonzero(~np.isfinite(signal))
    if bad.size:
        raise UserError(f"{source}: sample {bad[0]} is {signal[bad[0]]} (NaN or infinite values "
                        f"in {bad.size} samples)")
    big = np.flatnonzero(np.abs(signal) > MAX_MAGNITUDE)
    if big.size:
        raise UserError(f"{source}: sample {big[0]} is {signal[big[0]]:g}, beyond ±{MAX_MAGNITUDE:g}, where float32 "
                        f"arithmetic (signal power, noise) overflows ({big.size} such samples); rescale the recording")
    if signal.size == 1:
        raise UserError(f"{source}: the signal holds a single sample")
    if np.ptp(signal) == 0:
        value, kind = (("zero", "a silent or broken recording") if signal[0] == 0
                       else (f"{signal[0]:g}", "a constant, DC-only recording"))
        raise UserError(f"{source}: every sample is {value} ({kind}; LayerNorm of a constant signal "
                        "carries no information)")
    return signal.astype(np.float32, copy=False)


def fit_length(signal: np.ndarray, length: int, source: str) -> np.ndarray:
    """Cut or zero-pad a 1-D signal to ``length`` samples, as the release does; refused when the part
    kept is constant (a recording that starts with ``length`` samples of silence)."""
    if signal.shape[0] < length:
        return np.pad(signal, (0, length - signal.shape[0]))
    kept = signal[:length]
    if np.ptp(kept) == 0:
        raise UserError(f"{source}: its first {length} samples (--mess_length), the part that is used, are all "
                        f"{kept[0]:g}; trim the silence, or give a longer --mess_length")
    return kept


def read_csv_signal(path: Path) -> np.ndarray:
    """One column of samples, no header (the release's layout)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # numpy's "input contained no data"
            table = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as err:
        raise UserError(f"{path}: not a column of numbers ({err})") from None
    if table.size == 0:
        raise UserError(f"{path}: the file is empty")
    if table.shape[1] != 1:
        raise UserError(f"{path}: expected one column of samples, found {table.shape[1]} columns")
    return check_signal(table[:, 0], str(path))


def _chunks(handle: BinaryIO) -> Iterator[tuple[bytes, int]]:
    """Each RIFF chunk's id and declared size, with ``handle`` at the start of its data."""
    while len(header := handle.read(8)) == 8:
        chunk_id, size = struct.unpack("<4sI", header)
        start = handle.tell()
        yield chunk_id, size
        handle.seek(start + size + size % 2)


def _data_chunk(path: Path) -> tuple[bytes, int, int] | None:
    """A RIFF/WAVE file's ``fmt `` block and its data chunk's declared and present byte counts."""
    with path.open("rb") as handle:
        header = handle.read(12)
        if header[:4] != b"RIFF" or header[8:] != b"WAVE":
            return None
        fmt = b""
        for chunk_id, declared in _chunks(handle):
            if chunk_id == b"fmt ":
                fmt = handle.read(min(declared, 40))
            elif chunk_id == b"data":
                return fmt, declared, min(declared, path.stat().st_size - handle.tell())
    return None


def _truncation(path: Path) -> str | None:
    """How a WAV file's data chunk is cut short (libsndfile silently decodes what is there), or None."""
    chunk = _data_chunk(path)
    if chunk is None or chunk[1] == STREAMED_SIZE:
        return None
    fmt, declared, present = chunk
    unit, per_unit = _data_unit(fmt)
    if present // per_unit == declared // per_unit:
        return None
    return (f"truncated, the header announces {declared // per_unit} {unit} but only "
            f"{present // per_unit} are in the file")


def _data_unit(fmt: bytes) -> tuple[str, int]:
    """How to count a data chunk: in samples (frames) where one block is one frame, else in bytes."""
    if len(fmt) < 16:
        return "bytes of audio", 1
    tag, block_align = struct.unpack_from("<H", fmt)[0], struct.unpack_from("<H", fmt, 12)[0]
    if tag == EXTENSIBLE and len(fmt) >= 26:
        tag = struct.unpack_from("<H", fmt, 24)[0]  # the sub-format GUID starts with the format tag
    if tag in FRAME_PER_BLOCK and block_align:
        return "samples", block_align
    return "bytes of audio", 1


def read_wav(path: Path, sample_rate: int | None) -> tuple[np.ndarray, int]:
    """Decode a WAV file to mono float32 in [-1, 1], resampled to ``sample_rate`` if given."""
    if not path.exists():
        raise UserError(f"{path}: file not found (a link to a file that is gone?)")
    if path.is_file() and path.stat().st_size == 0:
        raise UserError(f"{path}: the file is empty")
    try:
        audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError) as err:
        raise UserError(f"{path}: not a readable audio file ({err})") from None
    if audio.shape[0] == 0:
        raise UserError(f"{path}: the audio file holds no samples")
    problem = _truncation(path)
    if problem is not None:
        raise UserError(f"{path}: {problem}")
    mono = check_signal(audio.mean(axis=1, dtype=np.float64), str(path))  # checked before librosa sees it
    if sample_rate is not None and rate != sample_rate:
        mono = librosa.resample(mono, orig_sr=rate, target_sr=sample_rate)
        rate = sample_rate
    return mono.astype(np.float32, copy=False), rate
