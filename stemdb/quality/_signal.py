"""Shared signal helpers of :mod:`stemdb.quality`: input checks, downmix, resampling, power spectrograms."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

#: Rate (Hz) of the mono downmix the bleed score reads.
BLEED_RATE: int = 22050
#: Rate (Hz) of the mono downmix the fingerprint and the key read.
ANALYSIS_RATE: int = 11025


def check_audio(audio: np.ndarray) -> np.ndarray:
    x = np.asarray(audio)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"audio must be (channels, samples), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"audio must be float (full scale ±1.0), got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        bad = int(x.size - np.count_nonzero(np.isfinite(x)))
        raise ValueError(f"audio has {bad} NaN/inf samples")
    return x


def check_rate(sample_rate: int) -> int:
    if not isinstance(sample_rate, int | np.integer) or sample_rate <= 0:
        raise ValueError(f"sample_rate={sample_rate!r} must be a positive integer (Hz)")
    return int(sample_rate)


def downmix(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.mean(axis=0, dtype=np.float32) if x.shape[0] > 1 else x[0], dtype=np.float32)


def resample(mono: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target or mono.size == 0:
        return mono
    import soxr

    return np.asarray(soxr.resample(mono, rate, target), dtype=np.float32)


def mono11(mono22: np.ndarray) -> np.ndarray:
    # always by way of the 22050 Hz downmix, so standalone calls and assess() see the same samples
    return resample(mono22, BLEED_RATE, ANALYSIS_RATE)


def power_frames(mono: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """``(n_fft // 2 + 1, frames)`` float32 power spectrogram, Hann window, frames starting at 0 (no padding)."""
    if mono.size < n_fft:
        return np.zeros((n_fft // 2 + 1, 0), np.float32)
    import scipy.fft

    frames = np.lib.stride_tricks.sliding_window_view(mono, n_fft)[::hop] * hann(n_fft)
    spec = scipy.fft.rfft(frames, axis=1, overwrite_x=True)  # float32 in, complex64 out
    power = np.square(spec.real)
    power += np.square(spec.imag)
    return np.ascontiguousarray(power.T, dtype=np.float32)


@lru_cache(maxsize=8)
def hann(n: int) -> np.ndarray:
    return np.hanning(n + 2)[1:-1].astype(np.float32)


def odd(n: float) -> int:
    k = max(1, int(round(n)))
    return k | 1


def finite_or_none(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def mono22(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int]:
    """Check ``audio`` and ``sample_rate``; return the mono downmix at :data:`BLEED_RATE` and the checked rate."""
    x = check_audio(audio)
    rate = check_rate(sample_rate)
    return resample(downmix(x), rate, BLEED_RATE), rate


__all__ = ["ANALYSIS_RATE", "BLEED_RATE", "check_audio", "check_rate", "downmix", "finite_or_none", "hann",
           "mono11", "mono22", "odd", "power_frames", "resample"]
