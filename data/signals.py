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

from data.console import UserError

EXTENSIBLE = 0xFFFE  # WAVE_FORMAT_EXTENSIBLE: the real format tag is in the sub-format GUID
FRAME_PER_BLOCK = {1, 3, 6, 7}  # PCM, IEEE float, A-law, mu-law: one block holds one frame
STREAMED_SIZE = 0xFFFFFFFF  # a data size written by streaming encoders that could not seek back
# Ogg pages: each opens with this capture pattern, and a stream's last one has this flag in its header.
OGG_CAPTURE, END_OF_STREAM = b"OggS", 0x04
# File names read as audio: every format libsndfile reads, but RAW (no header gives its rate and encoding).
AUDIO_SUFFIXES = frozenset({f".{name.lower()}" for name in soundfile.available_formats() if name != "RAW"}
                           | {".aif", ".oga", ".opus"})
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


def check_readable(path: Path) -> None:
    """Refuse a file this user may not read, saying so (libsndfile would call it a "System error")."""
    try:
        path.open("rb").close()
    except PermissionError:
        raise UserError(f"{path}: permission denied, this user may not read the file") from None
    except OSError as err:
        raise UserError(f"{path}: cannot be read ({err.strerror or err})") from None


def read_csv_signal(path: Path) -> np.ndarray:
    """One column of samples, no header (the release's layout)."""
    check_readable(path)
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


def is_audio(path: Path) -> bool:
    """Whether ``path`` is named as an audio file libsndfile reads (``AUDIO_SUFFIXES``)."""
    return path.suffix.lower() in AUDIO_SUFFIXES


def is_indexed_csv(path: Path) -> bool:
    """Whether ``path`` is named as one of the release's signal files, ``<index>.csv`` (any case); score
    files, label files and other CSV files are not."""
    return path.suffix.lower() == ".csv" and path.stem.isdecimal()  # isdigit() would take "²", which int() refuses


def _ogg_truncation(path: Path) -> str | None:
    """How an Ogg stream is cut short (libsndfile silently decodes its complete pages), or None: its last
    page is incomplete, or the stream ends without its end-of-stream page."""
    size, position, flags = path.stat().st_size, 0, 0
    with path.open("rb") as handle:
        if handle.read(4) != OGG_CAPTURE:
            return None
        while position < size:
            handle.seek(position)
            header = handle.read(27)
            if len(header) < 27 or not header.startswith(OGG_CAPTURE):
                return f"truncated or damaged, no complete Ogg page header at byte {position} of {size}"
            table = handle.read(header[26])
            length = 27 + header[26] + sum(table)
            if len(table) < header[26] or position + length > size:
                return (f"truncated, its last Ogg page announces {length} bytes but only {size - position} are "
                        "in the file")
            flags, position = header[5], position + length
    return None if flags & END_OF_STREAM else "truncated, the Ogg stream ends without its end-of-stream page"


def _truncation(path: Path) -> str | None:
    """How a WAV file's data chunk or an Ogg stream is cut short (libsndfile silently decodes what is
    there), or None."""
    return _wav_truncation(path) or _ogg_truncation(path)


def _wav_truncation(path: Path) -> str | None:
    """How a WAV file's data chunk is cut short, or None."""
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


def read_wav(path: Path, sample_rate: int | None) -> tuple[np.ndarray, int, int]:
    """Decode an audio file (WAV, FLAC, OGG, ...) to mono float32 in [-1, 1], its channels averaged and
    resampled to ``sample_rate`` if given; refused when the decode is shorter than its header or container
    says. Returns the signal, its rate and the file's number of channels."""
    if not path.exists():
        raise UserError(f"{path}: file not found (a link to a file that is gone?)")
    if path.is_file() and path.stat().st_size == 0:
        raise UserError(f"{path}: the file is empty")
    check_readable(path)
    try:  # an open file, not its name: soundfile encodes names as UTF-8, which a name of other bytes is not
        with path.open("rb") as handle, soundfile.SoundFile(handle) as sound:
            announced, rate = sound.frames, sound.samplerate
            audio = sound.read(dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError) as err:
        raise UserError(f"{path}: not a readable audio file ({err})") from None
    problem = _truncation(path)
    if problem is not None:
        raise UserError(f"{path}: {problem}")
    if audio.shape[0] < announced:
        raise UserError(f"{path}: truncated, the header announces {announced} samples but only {audio.shape[0]} "
                        "could be decoded")
    if audio.shape[0] == 0:
        raise UserError(f"{path}: the audio file holds no samples")
    mono = audio.mean(axis=1, dtype=np.float64)
    channels = audio.shape[1]
    if channels > 1 and np.ptp(mono) == 0 and np.ptp(audio) > 0:
        raise UserError(f"{path}: the average of its {channels} channels is {mono[0]:g} in every sample (channels "
                        "are mixed to mono by averaging, and these cancel out); give one channel of the recording")
    mono = check_signal(mono, str(path))  # checked before librosa sees it
    if sample_rate is not None and rate != sample_rate:
        mono = librosa.resample(mono, orig_sr=rate, target_sr=sample_rate)
        rate = sample_rate
    return mono.astype(np.float32, copy=False), rate, channels
