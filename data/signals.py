"""Reading one signal from a file and bringing it to a fixed length, with checks that name the file."""
from __future__ import annotations

import warnings
import wave
from pathlib import Path

import librosa
import numpy as np
import soundfile

from errors import UserError


def check_signal(signal: np.ndarray, source: str) -> np.ndarray:
    """Refuse empty signals and NaN/inf samples; return the signal as float32."""
    if signal.size == 0:
        raise UserError(f"{source}: the signal is empty")
    bad = np.flatnonzero(~np.isfinite(signal))
    if bad.size:
        raise UserError(f"{source}: sample {bad[0]} is {signal[bad[0]]} (NaN or infinite values "
                        f"in {bad.size} samples)")
    if not np.any(signal):
        raise UserError(f"{source}: every sample is zero (a silent or broken recording; "
                        "LayerNorm of a constant signal carries no information)")
    return signal.astype(np.float32, copy=False)


def fit_length(signal: np.ndarray, length: int) -> np.ndarray:
    """Cut or zero-pad a 1-D signal to ``length`` samples, as the release does."""
    if signal.shape[0] >= length:
        return signal[:length]
    return np.pad(signal, (0, length - signal.shape[0]))


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


def wav_sample_rate(path: Path) -> int:
    """The sample rate in a WAV header, or a clear error if the file is not audio."""
    try:
        return soundfile.info(str(path)).samplerate
    except (soundfile.LibsndfileError, RuntimeError) as err:
        raise UserError(f"{path}: not a readable audio file ({err})") from None


def _declared_frames(path: Path) -> int | None:
    """Frames announced by a PCM WAV header (libsndfile silently trusts the file size instead)."""
    try:
        with wave.open(str(path)) as handle:
            return handle.getnframes()
    except (wave.Error, EOFError):
        return None


def read_wav(path: Path, sample_rate: int | None) -> tuple[np.ndarray, int]:
    """Decode a WAV file to mono float32 in [-1, 1], resampled to ``sample_rate`` if given."""
    try:
        audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError) as err:
        raise UserError(f"{path}: not a readable audio file ({err})") from None
    if audio.shape[0] == 0:
        raise UserError(f"{path}: the audio file holds no samples")
    declared = _declared_frames(path)
    if declared is not None and audio.shape[0] < declared:
        raise UserError(f"{path}: truncated, the header announces {declared} samples but only "
                        f"{audio.shape[0]} are in the file")
    mono = librosa.to_mono(audio.T)
    check_signal(mono, str(path))
    if sample_rate is not None and rate != sample_rate:
        mono = librosa.resample(mono, orig_sr=rate, target_sr=sample_rate)
        rate = sample_rate
    return mono.astype(np.float32, copy=False), rate
