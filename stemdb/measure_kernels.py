"""The pass over a stem's samples behind :func:`stemdb.measure.measure`: two compiled loops (numba) or scipy/numpy.

With numba (a librosa dependency, imported on first use; kernels cached on disk) the samples are read in two
compiled loops and no intermediate arrays: one runs the K-weighting filter on two channels (or two halves of a mono
channel) side by side and sums its energy per 100 ms hop; the other, vectorised, sums window energies, finds the
peak, counts clipped samples and quantises to int16 for the content hash. Without numba (or with
``backend="numpy"``) the same numbers come from ``scipy.signal.sosfilt`` and vectorised numpy; the two backends
agree to 1e-9 dB (tested).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import xxhash

from stemdb.bs1770 import hop_energies, k_weighting_sos_at, window_energies

logger = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("auto", "numba", "numpy")
#: int16 full scale used by the content hash (``round(x * 32768)``, clipped to int16).
PCM16_SCALE: float = 32768.0
_HASH_VERSION = b"stemdb-pcm16-xxh3-v2"


@dataclass(frozen=True)
class SampleStats:
    """Per-sample facts of one pass: window energies (sum of squares over all channels per window), peak
    ``max |x|``, sum of squares, clipped-sample count, int16 PCM (when asked)."""

    window_energy: np.ndarray  # (windows,) float64
    peak: float
    sum_sq: float
    clipped: int
    pcm: np.ndarray | None  # (channels, samples) int16


def resolve_backend(backend: str):  # noqa: ANN202 - the numba kernels, or None for numpy
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    kernels = numba_kernels() if backend != "numpy" else None
    if backend == "numba" and kernels is None:
        raise ValueError(
            "backend='numba' needs numba: `pip install numba` (or use backend='auto' or 'numpy')"
        )
    return kernels


def float_c(x: np.ndarray) -> np.ndarray:
    """C-contiguous float32 (float64 stays float64) for the compiled loops."""
    return np.ascontiguousarray(x, dtype=np.float64 if x.dtype == np.float64 else np.float32)


def k_hop_energies(x: np.ndarray, rate: int, hop_bounds: np.ndarray, kernels) -> np.ndarray:  # noqa: ANN001
    """K-weighted sum of squares per channel and 100 ms hop, ``(channels, hops)`` float64."""
    if len(hop_bounds) < 2:
        return np.zeros((x.shape[0], 0))
    if kernels is None:
        return hop_energies(k_weight(x, rate), hop_bounds)
    n_hops = len(hop_bounds) - 1
    lengths = np.diff(hop_bounds)
    hop_len = int(lengths[0]) if np.all(lengths == lengths[0]) else 0
    lanes = lane_plan(x.shape[0], n_hops, hop_len, warm_up_hops(rate, hop_len))
    out = np.zeros((x.shape[0], n_hops))
    state = np.zeros((lanes.shape[0], 4))
    kernels[0](float_c(x), k_weighting_sos_at(float(rate)), hop_bounds, hop_len, lanes, out, state)
    return out


def k_hop_energies_carried(x: np.ndarray, rate: int, bounds: np.ndarray, kernels, state: np.ndarray) -> np.ndarray:  # noqa: ANN001
    """:func:`k_hop_energies` of one block of a longer signal, the filter state carried in and out.

    ``x`` is ``(channels, samples)`` starting at a hop boundary, ``bounds`` the hop boundaries relative to its
    start (``bounds[0] == 0``); ``state`` the filter state from the previous block (zeros at the start), updated in
    place: ``(lanes, 4)`` for the numba loop (:func:`stream_lanes`), ``(2, channels, 2)`` for scipy. Every channel
    runs as one chain (no half-split of a mono channel), so block after block gives the whole-array energies to
    rounding. Returns ``(channels, hops)`` float64.
    """
    n_hops = len(bounds) - 1
    if n_hops < 1:
        return np.zeros((x.shape[0], 0))
    if kernels is None:
        from scipy import signal

        y, state[...] = signal.sosfilt(k_weighting_sos_at(float(rate)).copy(), np.asarray(x, dtype=np.float64),
                                       axis=-1, zi=state)
        return hop_energies(y, bounds)
    lengths = np.diff(bounds)
    hop_len = int(lengths[0]) if np.all(lengths == lengths[0]) else 0
    out = np.zeros((x.shape[0], n_hops))
    kernels[0](float_c(x), k_weighting_sos_at(float(rate)), bounds, hop_len, stream_lanes(x.shape[0], n_hops), out,
               state)
    return out


def stream_lanes(n_channels: int, n_hops: int) -> np.ndarray:
    """Lanes for block-by-block filtering: channels in pairs, an odd last channel beside a copy that stores
    nothing (no split: a split's second half would restart from a zero state in every block)."""
    return lane_plan(n_channels, n_hops, 0, 0)


def carried_state(n_channels: int, kernels) -> np.ndarray:  # noqa: ANN001
    """Zero filter state for :func:`k_hop_energies_carried`."""
    if kernels is None:
        return np.zeros((2, n_channels, 2))
    return np.zeros((stream_lanes(n_channels, 1).shape[0], 4))


@lru_cache(maxsize=32)
def warm_up_hops(rate: int, hop_len: int) -> int:
    """Hops after which the K-weighting filter has forgotten its initial state to 1e-16 (its slowest pole)."""
    if hop_len <= 0:
        return 0
    sos = k_weighting_sos_at(float(rate))
    radius = max(float(np.max(np.abs(np.roots(sos[k, 3:])))) for k in range(sos.shape[0]))
    samples = math.log(1e-16) / math.log(radius)
    return int(math.ceil(samples / hop_len))


def lane_plan(n_channels: int, n_hops: int, hop_len: int, warm_hops: int) -> np.ndarray:
    """Work for :func:`_k_hop_kernel`: rows ``[channel, first hop, steps, store from hop, store to hop)``, in
    pairs that run in lockstep.

    Channels pair up (L with R). An odd last channel (mono) is cut in two halves that run side by side (1.8x
    faster than one chain); the second half starts ``warm_hops`` early from a zero state and stores only hops after
    the filter has forgotten that start (to 1e-16). That needs hops of one length; otherwise, or for short audio,
    the channel runs next to a copy of itself that stores nothing.
    """
    rows = []
    for c in range(0, n_channels - 1, 2):
        rows += [[c, 0, n_hops, 0, n_hops], [c + 1, 0, n_hops, 0, n_hops]]
    if n_channels % 2:
        c = n_channels - 1
        if hop_len > 0 and warm_hops > 0 and n_hops >= 4 * warm_hops:
            # the first half runs a hop or two past its stored hops, so that in the last step, where the second
            # half may reach the end of the audio and stop early, the first half is not storing anything
            split = (n_hops + warm_hops - 1) // 2
            steps = n_hops - split + warm_hops
            rows += [[c, 0, steps, 0, split], [c, split - warm_hops, steps, split, n_hops]]
        else:
            rows += [[c, 0, n_hops, 0, n_hops], [c, 0, n_hops, 0, 0]]
    return np.asarray(rows, dtype=np.int64).reshape(-1, 5)


def sample_stats(
    x: np.ndarray,
    win_bounds: np.ndarray,
    clip_level: float,
    want_pcm: bool,
    kernels,  # noqa: ANN001
) -> SampleStats:
    """Window energies, peak, sum of squares, clipped count and int16 PCM; ``win_bounds`` must end at the end."""
    if x.shape[1] == 0:
        return SampleStats(np.zeros(0), 0.0, 0.0, 0, np.zeros(x.shape, np.int16) if want_pcm else None)
    if kernels is None:
        energy = window_energies(x, win_bounds)
        mag = np.abs(x)
        return SampleStats(
            window_energy=energy,
            peak=float(mag.max()),
            sum_sq=float(energy.sum()),
            clipped=int(np.count_nonzero(mag >= clip_level)),
            pcm=quantize_pcm16(x) if want_pcm else None,
        )
    xc = float_c(x)
    energy = np.zeros(len(win_bounds) - 1)
    pcm = np.empty(x.shape if want_pcm else (x.shape[0], 0), dtype=np.int16)
    stats = np.zeros(3)
    kernels[1](xc, win_bounds, xc.dtype.type(clip_level), want_pcm, energy, pcm, stats)
    return SampleStats(energy, float(stats[0]), float(stats[1]), int(stats[2]), pcm if want_pcm else None)


def _k_hop_kernel(x, sos, bounds, hop_len, lanes, out, state):  # noqa: ANN001, ANN202
    """K-weighted sum of squares of ``x`` (channels, samples) per 100 ms hop into ``out`` (channels, hops).
    Compiled by :func:`numba_kernels`; plain Python gives the same numbers, slowly. Hop ``h`` spans ``[h * hop_len, (h + 1) * hop_len)`` when ``hop_len > 0``, else ``[bounds[h], bounds[h+1])``;
    the last hop may run past the end of the audio, where samples count as 0. ``lanes`` (see :func:`lane_plan`)
    run two at a time so that their filter recursions, which are latency-bound, overlap; both lanes of a step
    stop at the end of the audio. The filter is the two biquads in direct form II transposed, float64 state:
    ``state[row]`` (``(lanes, 4)``) is read at the start of each lane and holds its state at the end.
    (The loop indexes ``x`` directly: 1-D views, or a zero-padded scratch copy, make it up to 1.6x slower.)
    """
    b10, b11, b12, a11, a12 = sos[0, 0], sos[0, 1], sos[0, 2], sos[0, 4], sos[0, 5]
    b20, b21, b22, a21, a22 = sos[1, 0], sos[1, 1], sos[1, 2], sos[1, 4], sos[1, 5]
    n = x.shape[1]
    for p in range(0, lanes.shape[0], 2):
        ca, ha, steps, lo_a, hi_a = lanes[p, 0], lanes[p, 1], lanes[p, 2], lanes[p, 3], lanes[p, 4]
        cb, hb, lo_b, hi_b = lanes[p + 1, 0], lanes[p + 1, 1], lanes[p + 1, 3], lanes[p + 1, 4]
        p1, p2, q1, q2 = state[p, 0], state[p, 1], state[p, 2], state[p, 3]
        r1, r2, t1, t2 = state[p + 1, 0], state[p + 1, 1], state[p + 1, 2], state[p + 1, 3]
        for j in range(steps):
            h_a = ha + j
            h_b = hb + j
            if hop_len > 0:
                start_a = h_a * hop_len
                start_b = h_b * hop_len
                length = hop_len
            else:  # uneven hops: both lanes are on the same hop
                start_a = start_b = bounds[h_a]
                length = bounds[h_a + 1] - start_a
            length = min(length, n - start_a, n - start_b)  # only the last step can reach past the end
            k0 = 0.0
            k1 = 0.0
            for t in range(length):
                v0 = np.float64(x[ca, start_a + t])
                v1 = np.float64(x[cb, start_b + t])
                y0 = b10 * v0 + p1
                y1 = b10 * v1 + r1
                p1 = b11 * v0 - a11 * y0 + p2
                r1 = b11 * v1 - a11 * y1 + r2
                p2 = b12 * v0 - a12 * y0
                r2 = b12 * v1 - a12 * y1
                z0 = b20 * y0 + q1
                z1 = b20 * y1 + t1
                q1 = b21 * y0 - a21 * z0 + q2
                t1 = b21 * y1 - a21 * z1 + t2
                q2 = b22 * y0 - a22 * z0
                t2 = b22 * y1 - a22 * z1
                k0 += z0 * z0
                k1 += z1 * z1
            # After the audio stops, the state decays (about 1e-10 per 100 ms) into subnormal numbers, which are
            # ~100x slower: flush it to zero once it is far below anything float32 audio can produce.
            if abs(p1) + abs(p2) + abs(q1) + abs(q2) < 1e-140:
                p1 = p2 = q1 = q2 = 0.0
            if abs(r1) + abs(r2) + abs(t1) + abs(t2) < 1e-140:
                r1 = r2 = t1 = t2 = 0.0
            if lo_a <= h_a < hi_a:
                out[ca, h_a] = k0
            if lo_b <= h_b < hi_b:
                out[cb, h_b] = k1
        state[p, 0], state[p, 1], state[p, 2], state[p, 3] = p1, p2, q1, q2
        state[p + 1, 0], state[p + 1, 1], state[p + 1, 2], state[p + 1, 3] = r1, r2, t1, t2


def _sample_stats_kernel(x, bounds, clip_level, want_pcm, energy, pcm, stats):  # noqa: ANN001, ANN202
    """Per window ``[bounds[w], bounds[w+1])`` the sum of squares over all channels into ``energy``; int16 PCM
    (``rint(x * 32768)`` clipped) into ``pcm`` when ``want_pcm``; ``stats`` = [peak, sum of squares, clipped].
    A loop without recursion, so numba vectorises it. NaN/inf samples make the sum of squares non-finite."""
    peak = 0.0
    total = 0.0
    clipped = 0
    scale = x.dtype.type(PCM16_SCALE)
    lo = x.dtype.type(-32768.0)
    hi = x.dtype.type(32767.0)
    for c in range(x.shape[0]):
        for w in range(len(bounds) - 1):
            e = 0.0
            m = 0.0
            for i in range(bounds[w], bounds[w + 1]):
                v = x[c, i]
                a = abs(v)
                m = max(m, a)
                clipped += a >= clip_level
                e += np.float64(v) * np.float64(v)
                if want_pcm:
                    pcm[c, i] = np.int16(min(max(np.rint(v * scale), lo), hi))
            energy[w] += e
            total += e
            peak = max(peak, m)
    stats[0] = peak
    stats[1] = total
    stats[2] = clipped


@lru_cache(maxsize=1)
def numba_kernels():  # noqa: ANN202 - (hop kernel, stats kernel) numba dispatchers, or None
    """The two loops compiled by numba (``cache=True``: compiled once per machine), or ``None`` without numba.

    ``fastmath`` lets LLVM re-associate: the filter recursion gets a shorter dependency chain and the stats loop
    vectorises. Sums of squares of finite samples are non-negative, so no cancellation can hide a NaN or inf.
    """
    try:
        import numba
    except Exception as exc:  # noqa: BLE001 - any import failure means: use the numpy backend
        logger.info("numba unavailable (%s): measurements use the scipy/numpy backend", exc)
        return None
    try:
        jit = numba.njit(cache=True, nogil=True, fastmath=True)
        return jit(_k_hop_kernel), jit(_sample_stats_kernel)
    except RuntimeError as exc:  # no writable cache location (read-only install): compile per process
        logger.info("numba cache unavailable (%s): compiling the measurement kernels in memory", exc)
        jit = numba.njit(cache=False, nogil=True, fastmath=True)
        return jit(_k_hop_kernel), jit(_sample_stats_kernel)


def k_weight(x: np.ndarray, rate: int) -> np.ndarray:
    """K-weighted float64 copy of ``x`` through scipy (float64: in float32 the 38 Hz high-pass drifts by ~1e-3 LU)."""
    from scipy import signal  # about 1 s to import: only for the numpy backend

    return signal.sosfilt(k_weighting_sos_at(float(rate)).copy(), np.asarray(x, dtype=np.float64), axis=-1)


def quantize_pcm16(x: np.ndarray) -> np.ndarray:
    """``round(x * 32768)`` (half to even) clipped to int16; exact for float input from 16-bit files."""
    scaled = np.multiply(x, x.dtype.type(PCM16_SCALE))
    np.rint(scaled, out=scaled)
    np.clip(scaled, -32768.0, 32767.0, out=scaled)
    return scaled.astype(np.int16)


def hash_header(rate: int, channels: int, frames: int) -> bytes:
    """What the content hash reads before the samples: version tag, rate, channel and frame counts."""
    return _HASH_VERSION + f";rate={rate};channels={channels};frames={frames};".encode()


def hash_pcm(pcm: np.ndarray, rate: int) -> str:
    data = np.ascontiguousarray(pcm, dtype="<i2")
    h = xxhash.xxh3_128()
    h.update(hash_header(rate, data.shape[0], data.shape[1]))
    h.update(data)  # the C-contiguous buffer, no copy
    return h.hexdigest()
