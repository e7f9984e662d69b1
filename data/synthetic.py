"""The embedded data set: synthetic valve flow with and without cavitation, made from a seed.

Normal clip: flow noise (low-pass, with a slowly varying level) plus a few tonal components whose
frequencies drift within the clip. Cavitation clip: the same plus random impulsive bursts (fast rise,
exponential decay, broadband) and a raised high-frequency floor. Each clip gets a random gain, so the
level alone says nothing about the class.
"""
from __future__ import annotations

import numpy as np
from scipy import signal as scipy_signal

SAMPLE_RATE = 16000


def _flow_noise(rng: np.random.Generator, length: int) -> np.ndarray:
    cutoff = rng.uniform(1500.0, 3000.0)
    b, a = scipy_signal.butter(2, cutoff / (SAMPLE_RATE / 2), btype="low")
    noise = scipy_signal.lfilter(b, a, rng.standard_normal(length))
    level = 1.0 + 0.3 * np.sin(2 * np.pi * rng.uniform(2, 8) * np.arange(length) / SAMPLE_RATE
                               + rng.uniform(0, 2 * np.pi))
    return noise * level


def _drifting_tones(rng: np.random.Generator, length: int) -> np.ndarray:
    t = np.arange(length) / SAMPLE_RATE
    base = rng.uniform(150.0, 400.0)
    drift = rng.uniform(-0.08, 0.08)  # relative frequency change over one second
    tones = np.zeros(length)
    for harmonic, amplitude in zip((1, 2, 3), (1.0, 0.5, 0.3), strict=True):
        frequency = harmonic * base * (1 + drift * t)
        phase = 2 * np.pi * np.cumsum(frequency) / SAMPLE_RATE + rng.uniform(0, 2 * np.pi)
        tones += amplitude * rng.uniform(0.7, 1.3) * np.sin(phase)
    return tones


def _cavitation(rng: np.random.Generator, length: int, reference_rms: float) -> np.ndarray:
    bursts = np.zeros(length)
    for _ in range(rng.integers(2, 6)):
        start = rng.integers(0, length)
        duration = min(length - start, int(0.02 * SAMPLE_RATE))
        t = np.arange(duration) / SAMPLE_RATE
        rise = 1 - np.exp(-t / 0.0002)
        decay = np.exp(-t / rng.uniform(0.001, 0.004))
        bursts[start:start + duration] += (rng.uniform(1.0, 2.5) * reference_rms
                                           * rise * decay * rng.standard_normal(duration))
    b, a = scipy_signal.butter(2, 4000 / (SAMPLE_RATE / 2), btype="high")
    floor = 0.15 * reference_rms * scipy_signal.lfilter(b, a, rng.standard_normal(length))
    return bursts + floor


def make_clip(rng: np.random.Generator, length: int, cavitation: bool) -> np.ndarray:
    """One clip of ``length`` samples at 16 kHz, scaled to a random RMS in [0.02, 0.1]."""
    flow = _flow_noise(rng, length)
    clip = flow / flow.std() + rng.uniform(0.3, 0.8) * _drifting_tones(rng, length)
    if cavitation:
        clip = clip + _cavitation(rng, length, clip.std())
    return (clip * rng.uniform(0.02, 0.1) / clip.std()).astype(np.float32)


def make_synthetic_set(seed: int, length: int, normal: int, abnormal: int
                       ) -> tuple[np.ndarray, np.ndarray]:
    """``normal`` then ``abnormal`` clips as an array [N, length] and their labels [N]."""
    rng = np.random.default_rng(seed)
    labels = np.array([0] * normal + [1] * abnormal, dtype=np.int64)
    clips = np.stack([make_clip(rng, length, bool(label)) for label in labels])
    return clips, labels
