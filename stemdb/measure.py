"""Per-stem measurements, computed once per decoded file by the ingest step.

Everything here works on ``(channels, samples)`` float arrays (float32 in the catalogue pipeline), full scale ±1.0.
Levels are in dBFS (0 dBFS = a sample of magnitude 1.0), loudness in LUFS (ITU-R BS.1770-4), times in seconds.

Loudness follows ITU-R BS.1770-4: a K-weighting pre-filter (high-frequency shelf + RLB high-pass) per channel,
mean square over 400 ms gating blocks with 75 % overlap, channel weights (1.0 for L, R, C; 1.41 for the surround
pair), an absolute gate at -70 LUFS and a relative gate 10 LU below the loudness of the blocks above the absolute
gate. The standard specifies the two filters at 48 kHz only; here they are re-derived for any sample rate from the
analogue prototype of the 48 kHz biquads (inverse bilinear transform at 48 kHz, then a bilinear transform at the
target rate pre-warped at each stage's corner frequency), so 48 kHz reproduces the standard's coefficients exactly.
The implementation is vectorised: the filter runs in C (``scipy.signal.sosfilt``), block energies are sums over
100 ms hops, and the gating works on arrays.
"""

from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np
from scipy import signal

logger = logging.getLogger(__name__)

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


def integrated_loudness(
    audio: np.ndarray, sample_rate: int, *, channel_weights: tuple[float, ...] | None = None
) -> float:
    """ITU-R BS.1770-4 integrated (gated) loudness.

    Args:
        audio: ``(channels, samples)`` float array, full scale ±1.0 (a 1-D array is one channel).
        sample_rate: Hz; any rate (22.05-96 kHz in practice, the filters are derived for it).
        channel_weights: per-channel weights; default 1.0 for L, R, C and 1.41 for Ls, Rs (up to 5 channels).

    Returns:
        loudness in LUFS; ``float('-inf')`` when the audio is shorter than one 400 ms block or no block passes the
        gates (digital silence, or everything below -70 LUFS).

    Raises:
        ValueError: bad shape, sample rate or channel weights.
    """
    x = _as_channels(audio, "audio")
    rate = _check_rate(sample_rate)
    weights = _channel_weights(x.shape[0], channel_weights)
    energies = _block_energies(_k_weight(x, rate), rate, weights)
    return _gated_loudness(energies)


def k_weighting_sos(sample_rate: int) -> np.ndarray:
    """The BS.1770-4 K-weighting pre-filter for ``sample_rate`` as second-order sections, shape ``(2, 6)``.

    Row 0 is the high-frequency shelf, row 1 the RLB high-pass. At 48 kHz these are the standard's coefficients.
    """
    return _k_weighting_sos(float(_check_rate(sample_rate))).copy()


@lru_cache(maxsize=32)
def _k_weighting_sos(rate: float) -> np.ndarray:
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


def _k_weight(x: np.ndarray, rate: int) -> np.ndarray:
    """K-weighted copy of ``x`` (float32 unless ``x`` is float64)."""
    dtype = np.float64 if x.dtype == np.float64 else np.float32
    sos = _k_weighting_sos(float(rate)).astype(dtype)
    return signal.sosfilt(sos, np.ascontiguousarray(x, dtype=dtype), axis=-1)


def _block_count(n_samples: int, rate: int) -> int:
    """Number of 400 ms gating blocks: ``round((T - 0.4) / 0.1) + 1`` for a duration ``T`` of at least one block.

    BS.1770-4 indexes blocks ``j = 0 .. (T - Tg) / (Tg * step)``; when that bound is not a whole number it is rounded
    (the reading pyloudnorm uses), and a last block that runs past the end counts the missing samples as zeros.
    """
    block_len = BLOCK_S * rate
    if n_samples < block_len - 1e-9:
        return 0
    return int(np.round((n_samples / rate - BLOCK_S) / HOP_S)) + 1


def _hop_energies(y: np.ndarray, bounds: np.ndarray) -> np.ndarray:
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


def _block_energies(y: np.ndarray, rate: int, weights: np.ndarray) -> np.ndarray:
    """Channel-weighted mean square of the K-weighted signal per 400 ms gating block, shape ``(blocks,)``."""
    n_blocks = _block_count(y.shape[-1], rate)
    if n_blocks == 0:
        return np.zeros(0)
    hops_per_block = round(BLOCK_S / HOP_S)
    bounds = np.round(np.arange(n_blocks + hops_per_block) * (HOP_S * rate)).astype(np.int64)
    weighted = weights @ _hop_energies(y, bounds)  # (hops,)
    csum = np.concatenate([[0.0], np.cumsum(weighted)])
    sums = csum[hops_per_block:] - csum[:-hops_per_block]
    lengths = bounds[hops_per_block:] - bounds[:-hops_per_block]
    return sums / lengths


def _gated_loudness(z: np.ndarray) -> float:
    """BS.1770-4 gating over block mean squares ``z`` (already channel-weighted); LUFS or -inf."""
    if z.size == 0:
        return float("-inf")
    abs_threshold = 10.0 ** ((ABSOLUTE_GATE_LUFS - LUFS_OFFSET) / 10.0)
    above_abs = z[z > abs_threshold]
    if above_abs.size == 0:
        return float("-inf")
    rel_threshold = above_abs.mean() * 10.0 ** (RELATIVE_GATE_LU / 10.0)
    gated = above_abs[above_abs > rel_threshold]
    if gated.size == 0:  # pragma: no cover - the block mean is always above a tenth of the mean
        return float("-inf")
    return float(LUFS_OFFSET + 10.0 * np.log10(gated.mean()))


def _as_channels(audio: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(audio)
    if x.ndim == 1:
        x = x[np.newaxis, :]
    if x.ndim != 2:
        raise ValueError(f"{name} must be (channels, samples) or (samples,), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name} must be a float array (full scale ±1.0), got dtype {x.dtype}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} has 0 channels (shape {x.shape}); at least 1 is needed")
    return x


def _check_rate(sample_rate: int) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")
    return int(sample_rate)


def _channel_weights(n_channels: int, weights: tuple[float, ...] | None) -> np.ndarray:
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
