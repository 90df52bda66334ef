"""ITU-R BS.1770-4 loudness pieces and the silence windows, for :mod:`stemdb.measure` and :mod:`stemdb.levels`.

The K-weighting pre-filter (high-frequency shelf + RLB high-pass) is specified at 48 kHz only; here it is re-derived
for any sample rate from the analogue prototype of the 48 kHz biquads (inverse bilinear transform at 48 kHz, then a
bilinear transform at the target rate pre-warped at each stage's corner frequency), so 48 kHz reproduces the
standard's coefficients exactly. Gating: 400 ms blocks with 75 % overlap built from 100 ms hops, an absolute gate
at -70 LUFS and a relative gate 10 LU below the loudness of the blocks above it. Gating block ``j`` counts for
``j = 0 .. round((T - 0.4) / 0.1)`` (pyloudnorm's reading of BS.1770-4), a last block past the end zero-padded.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

#: Loudness of a block whose weighted mean square is 1.0 (BS.1770-4, eq. 2): -0.691 LUFS.
LUFS_OFFSET: float = -0.691
#: Absolute gate (LUFS) and relative gate (LU below the absolute-gated loudness) of BS.1770-4.
ABSOLUTE_GATE_LUFS: float = -70.0
RELATIVE_GATE_LU: float = -10.0
#: Gating block length (s) and hop (s): 400 ms blocks with 75 % overlap.
BLOCK_S: float = 0.4
HOP_S: float = 0.1
#: BS.1770-4 channel weights in channel order L, R, C, Ls, Rs.
CHANNEL_WEIGHTS: tuple[float, ...] = (1.0, 1.0, 1.0, 1.41, 1.41)

# BS.1770-4 Table 1 and Table 2: the two pre-filter biquads at 48 kHz (b0, b1, b2, a0, a1, a2).
_REFERENCE_RATE = 48000.0
_SHELF_48K = (1.53512485958697, -2.69169618940638, 1.19839281085285, 1.0, -1.69065929318241, 0.73248077421585)
_HIGHPASS_48K = (1.0, -2.0, 1.0, 1.0, -1.99004745483398, 0.99007225036621)
# Frequencies (Hz) at which each stage's response is pinned to the 48 kHz response when re-deriving it.
_SHELF_PREWARP_HZ = 1500.0
_HIGHPASS_PREWARP_HZ = 38.0


# --------------------------------------------------------------------------------------------------------------
# K-weighting filter


@lru_cache(maxsize=32)
def k_weighting_sos_at(rate: float) -> np.ndarray:
    shelf = _rederive_biquad(_SHELF_48K, rate, _SHELF_PREWARP_HZ)
    highpass = _rederive_biquad(_HIGHPASS_48K, rate, _HIGHPASS_PREWARP_HZ)
    sos = np.array([shelf, highpass], dtype=np.float64)
    sos.setflags(write=False)
    return sos


def _rederive_biquad(coeffs: tuple[float, ...], rate: float, prewarp_hz: float) -> np.ndarray:
    """Map a 48 kHz biquad to ``rate``: analogue prototype by inverse bilinear, then bilinear pre-warped at a corner.

    The bilinear transform maps analogue frequency ``w`` to digital ``f`` by ``w = 2 fs tan(pi f / fs)``; choosing
    the new rate's transform constant so that ``prewarp_hz`` lands on the same analogue frequency as at 48 kHz keeps
    the response at that frequency identical to the standard's.
    """
    if rate == _REFERENCE_RATE:
        b0, b1, b2, a0, a1, a2 = coeffs
        return np.array([b0 / a0, b1 / a0, b2 / a0, 1.0, a1 / a0, a2 / a0])
    k_ref = 2.0 * _REFERENCE_RATE
    analog_num = _inverse_bilinear(coeffs[:3], k_ref)
    analog_den = _inverse_bilinear(coeffs[3:], k_ref)
    f0 = min(prewarp_hz, 0.45 * rate)
    w0 = k_ref * np.tan(np.pi * f0 / _REFERENCE_RATE)
    k_new = w0 / np.tan(np.pi * f0 / rate)
    b, a = _bilinear(analog_num, analog_den, k_new)
    return np.concatenate([b / a[0], a / a[0]])


def _inverse_bilinear(poly: tuple[float, ...], k: float) -> np.ndarray:
    """Analogue polynomial ``(s^2, s, 1)`` coefficients of a digital ``c0 + c1 z^-1 + c2 z^-2`` under
    ``s = k (1 - z^-1) / (1 + z^-1)``, i.e. ``z^-1 = (k - s) / (k + s)``, multiplied through by ``(k + s)^2``."""
    c0, c1, c2 = poly
    return np.array([c0 - c1 + c2, 2.0 * k * (c0 - c2), k * k * (c0 + c1 + c2)])


def _bilinear(num: np.ndarray, den: np.ndarray, k: float) -> tuple[np.ndarray, np.ndarray]:
    """Digital biquad of the analogue ``num(s) / den(s)`` (``(s^2, s, 1)`` coefficients) under ``s = k (1-z^-1)/(1+z^-1)``."""

    def digital(p: np.ndarray) -> np.ndarray:
        s2, s1, s0 = p[0] * k * k, p[1] * k, p[2]
        return np.array([s2 + s1 + s0, 2.0 * (s0 - s2), s2 - s1 + s0])

    return digital(num), digital(den)


# --------------------------------------------------------------------------------------------------------------
# gating blocks and windows


def hop_bounds(n_samples: int, rate: int) -> np.ndarray:
    """Sample indices of the 100 ms hop boundaries the gating blocks need (empty when no block fits).

    BS.1770-4 indexes blocks ``j = 0 .. (T - Tg) / (Tg * step)``; when that bound is not a whole number it is
    rounded (the reading pyloudnorm uses), and a last block that runs past the end counts missing samples as zeros.
    """
    if n_samples < BLOCK_S * rate - 1e-9:
        return np.zeros(0, dtype=np.int64)
    n_blocks = int(np.round((n_samples / rate - BLOCK_S) / HOP_S)) + 1
    hops_per_block = round(BLOCK_S / HOP_S)
    return np.round(np.arange(n_blocks + hops_per_block) * (HOP_S * rate)).astype(np.int64)


def hop_energies(y: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Sum of squares of ``y`` (channels, samples) over each hop ``[bounds[i], bounds[i+1])``, ``(channels, hops)``.

    Hops past the end of ``y`` (only the last one or two, from rounding the block count) count missing samples as 0.
    """
    n = y.shape[-1]
    n_hops = len(bounds) - 1
    n_full = int(np.searchsorted(bounds, n, side="right")) - 1  # hops that end at or before n
    lengths = np.diff(bounds[: n_full + 1])
    out = np.zeros((y.shape[0], n_hops), dtype=np.float64)
    if n_full > 0 and np.all(lengths == lengths[0]):
        hop = int(lengths[0])
        frames = y[:, : n_full * hop].reshape(y.shape[0], n_full, hop)
        out[:, :n_full] = np.einsum("chk,chk->ch", frames, frames, dtype=np.float64)
    elif n_full > 0:
        sq = np.square(y[:, : bounds[n_full]], dtype=np.float64)
        out[:, :n_full] = np.add.reduceat(sq, bounds[:n_full], axis=-1)
    for k in range(n_full, n_hops):  # at most two partial hops at the end
        tail = y[:, bounds[k] : min(bounds[k + 1], n)].astype(np.float64)
        out[:, k] = np.einsum("ck,ck->c", tail, tail)
    return out


def block_energies_from_hops(hop_energy: np.ndarray, n: int, rate: int, weights: np.ndarray) -> np.ndarray:
    """Channel-weighted mean square per 400 ms gating block (4 consecutive hops), shape ``(blocks,)``."""
    bounds = hop_bounds(n, rate)
    hops_per_block = round(BLOCK_S / HOP_S)
    if len(bounds) - 1 < hops_per_block:
        return np.zeros(0)
    weighted = weights @ hop_energy  # (hops,)
    csum = np.concatenate([[0.0], np.cumsum(weighted)])
    sums = csum[hops_per_block:] - csum[:-hops_per_block]
    lengths = bounds[hops_per_block:] - bounds[:-hops_per_block]
    return sums / lengths


def loudness_profile(hop_energy: np.ndarray, bounds: np.ndarray, n: int) -> np.ndarray:
    """K-weighted mean square per whole 100 ms hop, channels summed, ``(hops,)`` float32: the loudness profile the
    catalogue stores (from the hop energies of the filter pass; ``bounds`` from :func:`hop_bounds`)."""
    n_whole = int(np.searchsorted(bounds, n, side="right")) - 1 if bounds.size else 0
    return (hop_energy[:, :n_whole].sum(axis=0) / np.diff(bounds[: n_whole + 1])).astype(np.float32)


def gated_loudness(z: np.ndarray) -> float:
    """BS.1770-4 gating over block mean squares ``z`` (already channel-weighted); LUFS or -inf."""
    if z.size == 0:
        return float("-inf")
    abs_threshold = 10.0 ** ((ABSOLUTE_GATE_LUFS - LUFS_OFFSET) / 10.0)
    above_abs = z[z > abs_threshold]
    if above_abs.size == 0:
        return float("-inf")
    rel_threshold = above_abs.mean() * 10.0 ** (RELATIVE_GATE_LU / 10.0)
    gated = above_abs[above_abs > rel_threshold]
    return float(LUFS_OFFSET + 10.0 * np.log10(gated.mean()))


def window_len(window_s: float, rate: int) -> int:
    return max(1, int(round(window_s * rate)))


def window_bounds(n: int, win_len: int) -> np.ndarray:
    """``[0, L, 2L, ..., n]``: consecutive windows of ``win_len`` samples, the last one possibly shorter."""
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    return np.append(np.arange(0, n, win_len, dtype=np.int64), np.int64(n))


def window_energies(x: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Sum of squares over all channels per window ``[bounds[i], bounds[i+1])``."""
    if len(bounds) < 2:
        return np.zeros(0)
    per_channel = np.add.reduceat(np.square(x, dtype=np.float64), bounds[:-1], axis=-1)
    return per_channel.sum(axis=0)


def active_windows(energy: np.ndarray, counts: np.ndarray, threshold_db: float) -> np.ndarray:
    """Windows whose mean square (``energy / counts``) is above ``threshold_db`` dBFS."""
    return energy > counts * 10.0 ** (threshold_db / 10.0)


def active_runs(mask: np.ndarray, bounds: np.ndarray, rate: int, min_gap_s: float) -> list[tuple[float, float]]:
    """Runs of ``True`` windows as ``[start_s, end_s)``, runs closer than ``min_gap_s`` merged."""
    if not mask.any():
        return []
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts = bounds[np.flatnonzero(edges == 1)]
    ends = bounds[np.flatnonzero(edges == -1)]
    if min_gap_s > 0 and len(starts) > 1:
        keep = (starts[1:] - ends[:-1]) / rate >= min_gap_s  # gaps that stay
        starts = np.concatenate([starts[:1], starts[1:][keep]])
        ends = np.concatenate([ends[:-1][keep], ends[-1:]])
    return [(s / rate, e / rate) for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]



def weight_vector(n_channels: int, weights: tuple[float, ...] | None) -> np.ndarray:
    if weights is None:
        if n_channels > len(CHANNEL_WEIGHTS):
            raise ValueError(
                f"audio has {n_channels} channels; BS.1770 default weights cover at most {len(CHANNEL_WEIGHTS)} "
                "(L, R, C, Ls, Rs): pass channel_weights"
            )
        return np.asarray(CHANNEL_WEIGHTS[:n_channels], dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n_channels,) or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(
            f"channel_weights must be {n_channels} finite non-negative numbers (one per channel), got {weights!r}"
        )
    return w
