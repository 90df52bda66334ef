"""Effective bandwidth of a stem from its long-term average spectrum (docs/quality.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stemdb.quality._signal import check_audio, check_rate, downmix, hann, odd, power_frames


@dataclass(frozen=True)
class Bandwidth:
    """The effective bandwidth of a stem.

    Attributes:
        hz: the frequency (Hz) above which the long-term spectrum falls away: the edge of a steep cut-off when
            there is one, else the highest frequency whose long-term level stands 10 dB above the level of 16-bit
            quantisation noise. ``0.0`` for digital silence.
        cutoff: True when the edge is a steep cut-off (a drop of at least 20 dB within 1.5 kHz that stays down
            to the top of the band), as lossy encoders' low-pass filters and resamplers leave.
        drop_db: how far the level falls across that cut-off (dB); ``0.0`` when there is none.
    """

    hz: float
    cutoff: bool
    drop_db: float


#: Smallest frequency (Hz) at which a drop counts as a cut-off (below it, instruments fall steeply on their own).
CUTOFF_MIN_HZ: float = 3000.0
_BW_SMOOTH_HZ = 200.0  # running median over the long-term spectrum
_BW_WIN_HZ = 1000.0  # level windows below and above a candidate edge
_BW_GUARD_HZ = 500.0  # transition band skipped between them
_BW_DROP_DB = 20.0  # minimum drop across a cut-off
_BW_STAY_DB = 15.0  # everything above the cut-off stays at least this far below the level under it
_BW_MARGIN_DB = 10.0  # content stands this far above the floor


def bandwidth(audio: np.ndarray, sample_rate: int) -> Bandwidth:
    """Effective bandwidth (Hz) of a stem from its long-term average spectrum.

    The channels are averaged, cut into non-overlapping Hann frames of about 46 ms (2048 samples at 44.1 or 48
    kHz), and the frames' power spectra averaged into the long-term spectrum (dB per bin, smoothed by a 200 Hz
    running median). Content is what stands at least 10 dB above the level of 16-bit quantisation noise (white,
    variance ``q^2 / 12`` with ``q = 2^-15``), a fixed reference, so the answer does not depend on what fills the
    top of the band. A cut-off is the lowest frequency >= :data:`CUTOFF_MIN_HZ` where content drops at least
    20 dB from the 1 kHz below to the 1 kHz above (after a 500 Hz transition) and stays at least 15 dB down all
    the way to Nyquist; the bandwidth is then the last frequency of the transition within 10 dB of the level
    under it. Without a cut-off it is the highest frequency with content. Quiet stems lose high-frequency
    content under the fixed reference sooner, so compare bandwidths of stems at similar levels.

    Args:
        audio: ``(channels, samples)`` float array, full scale ±1.0.
        sample_rate: Hz.

    Returns:
        :class:`Bandwidth`.

    Raises:
        ValueError: bad shape or rate, or non-finite samples.
    """
    x = check_audio(audio)
    rate = check_rate(sample_rate)
    return bandwidth_mono(downmix(x), rate)


def bandwidth_mono(mono: np.ndarray, rate: int) -> Bandwidth:
    from scipy.ndimage import median_filter

    n_fft = 1 << max(8, int(round(math.log2(0.046 * rate))))
    if mono.size < n_fft or not np.any(mono):
        return Bandwidth(0.0, False, 0.0)
    k = mono.size // n_fft
    win = hann(n_fft)
    power = power_frames(mono[: k * n_fft], n_fft, n_fft).mean(axis=1, dtype=np.float64)
    # dB re the per-bin power of a full-scale sine (so the numbers read like dBFS per bin)
    scale = (win.sum() / 2.0) ** 2
    level = 10.0 * np.log10(power / scale + 1e-30)
    df = rate / n_fft
    smooth = median_filter(level, size=odd(_BW_SMOOTH_HZ / df), mode="nearest")
    freqs = np.arange(smooth.size) * df
    # 16-bit quantisation noise (variance q^2/12, q = 2^-15) per bin on the same scale
    q16 = 10.0 * np.log10(((2.0**-15) ** 2 / 12.0) * float(np.sum(win**2)) / scale)
    threshold = q16 + _BW_MARGIN_DB
    cut = _find_cutoff(smooth, freqs, df, threshold)
    if cut is not None:
        return cut
    above = np.nonzero(smooth >= threshold)[0]
    return Bandwidth(float(freqs[above[-1]]) if above.size else 0.0, False, 0.0)


def _find_cutoff(level: np.ndarray, freqs: np.ndarray, df: float, threshold: float) -> Bandwidth | None:
    from scipy.ndimage import median_filter

    nw = max(2, int(round(_BW_WIN_HZ / df)))
    ng = max(1, int(round(_BW_GUARD_HZ / df)))
    n = level.size
    lo = max(nw, int(np.searchsorted(freqs, CUTOFF_MIN_HZ)))
    hi = n - ng - nw
    if hi <= lo:
        return None
    # median of the nw bins below i (centre i - nw/2) and of the nw bins from i + ng
    med = median_filter(level, size=nw | 1, mode="nearest")
    idx = np.arange(lo, hi)
    below = med[idx - nw // 2 - 1]
    above = med[idx + ng + nw // 2]
    rest = np.maximum.accumulate(med[::-1])[::-1]  # the highest smoothed level from each bin up to Nyquist
    ok = (below - above >= _BW_DROP_DB) & (below - rest[idx + ng] >= _BW_STAY_DB) & (below >= threshold)
    hits = np.nonzero(ok)[0]
    if not hits.size:
        return None
    i0 = int(idx[hits[0]])
    ref = float(below[hits[0]])
    seg = np.arange(i0 - nw // 2, min(n, i0 + ng + nw))
    inside = seg[level[seg] >= ref - _BW_MARGIN_DB]
    edge = int(inside[-1]) if inside.size else i0
    return Bandwidth(float(freqs[edge]), True, float(ref - above[hits[0]]))
