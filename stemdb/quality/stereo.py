"""Fake stereo: channels that carry the same signal (docs/quality.md)."""

from __future__ import annotations

import math

import numpy as np

from stemdb.quality._signal import check_audio

#: Residual level (dB) under which two channels count as the same signal.
FAKE_STEREO_DB: float = -40.0


def stereo_difference_db(audio: np.ndarray) -> float:
    """How different the channels are: the residual of the best gain fit between them, dB (``-inf`` = identical).

    For each pair of channels (a, b) the smaller of ``min_g ||b - g a||^2 / ||b||^2`` and the same with a and b
    swapped, in dB; the largest over the pairs. The gain may be negative, so a polarity-inverted copy counts as
    the same signal. Only the same samples at the same time are compared: a delayed copy (Haas-style pseudo
    stereo) or a decorrelation filter reads as different.

    Args:
        audio: ``(channels, samples)`` float array.

    Returns:
        dB; NaN for mono audio or when a channel is digital silence.

    Raises:
        ValueError: bad shape, or non-finite samples.
    """
    x = check_audio(audio)
    if x.shape[0] < 2:
        return float("nan")
    worst = -math.inf
    for i in range(x.shape[0]):
        for j in range(i + 1, x.shape[0]):
            ea, eb, ab = _dots(x[i], x[j])
            if ea == 0.0 or eb == 0.0:
                return float("nan")
            # residual of b after the least-squares fit g a (and of a after g' b), as a share of its energy
            share = max(0.0, min(1.0 - ab * ab / (ea * eb), 1.0))
            worst = max(worst, 10.0 * math.log10(share) if share > 0 else -math.inf)
    return worst


def _dots(a: np.ndarray, b: np.ndarray, chunk: int = 1 << 16) -> tuple[float, float, float]:
    """``(a.a, b.b, a.b)`` summed in float64 over float32 chunks (no float64 copy of a whole channel)."""
    ea = eb = ab = 0.0
    for s in range(0, a.size, chunk):
        ca, cb = a[s: s + chunk], b[s: s + chunk]
        ea += float(np.dot(ca, ca))
        eb += float(np.dot(cb, cb))
        ab += float(np.dot(ca, cb))
    return ea, eb, ab


def is_fake_stereo(audio: np.ndarray, *, threshold_db: float = FAKE_STEREO_DB) -> bool:
    """True when a file with two or more channels carries the same signal in each (up to gain and polarity).

    See :func:`stereo_difference_db`; mono audio and a file with a silent channel are not fake stereo.

    Raises:
        ValueError: bad shape, non-finite samples, or ``threshold_db`` not finite.
    """
    if not math.isfinite(threshold_db):
        raise ValueError(f"threshold_db={threshold_db} must be finite")
    d = stereo_difference_db(audio)
    return bool(not math.isnan(d) and d <= threshold_db)
