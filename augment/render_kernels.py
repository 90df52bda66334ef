"""The renderer's fast path as one compiled kernel: int16 stem windows in, quantised stems and their sum out.

Most mixtures of a training stream are linear: every stem is a window of 16-bit PCM (from the stem cache or read
as int16), scaled by one factor (calibrated level, gain, polarity) and routed channel by channel (mono copied,
stereo kept or swapped, several channels averaged to mono). For those, :func:`render_linear` does in two or three
passes over the int16 windows what the numpy path (:func:`augment.render.render_recipe`) does in about ten: each
stem's peak; the raw mixture's peak when the stems' peaks could add up past the clip limit; then the common clip
scale, the quantisation to the 16-bit grid and the sum, written straight into the output buffers as float32 (full
scale 1.0) or int16 PCM. Every float operation is the numpy path's own, in the same order and in float32, so the
output is identical to the bit (``tests/test_render_kernels.py`` holds both paths to it on real recipes).

numba compiles the kernel on first use (cached on disk); without numba, :func:`kernel` returns None and the
renderer keeps the numpy path.
"""

from __future__ import annotations

import logging
from functools import cache

import numpy as np

log = logging.getLogger(__name__)

#: Channel-map value of a stem averaged to mono (its channels summed in order, then scaled by ``factor / C_in``).
MEAN = -1


#: nnan/ninf only: lets the reductions vectorise; no contraction or reassociation, so every product and sum is the
#: numpy path's own float32 operation.
_FASTMATH = frozenset({"nnan", "ninf"})


def _parts(nb):  # noqa: ANN001, ANN202 - numba module in, the per-stem passes out
    fm = set(_FASTMATH)

    @nb.njit(cache=True, nogil=True, fastmath=fm, inline="always")
    def sample(a, src, i):  # noqa: ANN001, ANN202 - the (exact) float32 value before scaling: one channel or a sum
        if src == MEAN:
            acc = np.float32(a[i, 0]) + np.float32(a[i, 1])
            for j in range(2, a.shape[1]):
                acc = acc + np.float32(a[i, j])
            return acc
        return np.float32(a[i, src])

    @nb.njit(cache=True, nogil=True, fastmath=fm)
    def stem_peak(a, f, chan_k, n):  # noqa: ANN001, ANN202
        # rounding is monotone, so max |float32(v) * f| == float32(max |v|) * |f|: one exact integer-valued pass
        top = np.float32(0.0)
        for c in range(chan_k.size):
            src = chan_k[c]
            for i in range(n):
                top = max(top, abs(sample(a, src, i)))
        return top * abs(f)

    @nb.njit(cache=True, nogil=True, fastmath=fm)
    def add_raw(a, f, src, n, first, raw):  # noqa: ANN001, ANN202 - raw (float32) += one stem channel
        for i in range(n):
            x = sample(a, src, i) * f
            raw[i] = x if first else raw[i] + x
        if first:
            raw[n:] = 0.0

    @nb.njit(cache=True, nogil=True, fastmath=fm)
    def quantise(a, f, src, n, g, scaled, out, acc, as_int):  # noqa: ANN001, ANN202
        grid, inv = np.float32(32768.0), np.float32(1.0 / 32768.0)
        for i in range(n):
            x = sample(a, src, i) * f
            if scaled:
                x = x * g
            q = np.rint(x * grid)
            acc[i] += np.int32(q)
            if as_int:
                out[i] = np.int16(q)
            else:
                out[i] = q * inv
        out[n:] = 0

    return stem_peak, add_raw, quantise


def _source(nb):  # noqa: ANN001, ANN202 - numba module in, the compiled kernel out
    stem_peak, add_raw, quantise = _parts(nb)

    @nb.njit(cache=True, nogil=True, fastmath=set(_FASTMATH))
    def render(srcs, lengths, factors, chan, stems_out, mix_out, raw, acc, clip_limit, as_int):  # noqa: ANN001, ANN202
        n_stems, n_ch, n = stems_out.shape
        peaks = 0.0
        top = 0.0
        for k in range(n_stems):
            p = np.float64(stem_peak(srcs[k], factors[k], chan[k], lengths[k]))
            peaks += p
            top = max(top, p)
        if peaks > clip_limit:  # the raw mixture's peak, summed in stem order as the numpy path does
            for c in range(n_ch):
                for k in range(n_stems):
                    add_raw(srcs[k], factors[k], chan[k, c], lengths[k], k == 0, raw)
                m = np.float32(0.0)
                for i in range(n):
                    m = max(m, abs(raw[i]))
                top = max(top, np.float64(m))
        scaled = top > clip_limit
        g = np.float32(clip_limit / top) if scaled else np.float32(1.0)
        inv = np.float32(1.0 / 32768.0)
        for c in range(n_ch):
            s = acc
            s[:] = 0
            for k in range(n_stems):
                quantise(srcs[k], factors[k], chan[k, c], lengths[k], g, scaled, stems_out[k, c], s, as_int)
            m = mix_out[c]
            for i in range(n):  # grid values: the int32 sum is exact, and so is its float32 value below 2**24
                if as_int:
                    m[i] = np.int16(min(32767, max(-32768, s[i])))
                else:
                    m[i] = np.float32(s[i]) * inv
        return g if scaled else np.float32(1.0)

    return render


@cache
def kernel():  # noqa: ANN201 - the compiled function, or None
    """The compiled :func:`render_linear` kernel (None without numba)."""
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency; the numpy path stays correct without it
        log.info("numba is not installed: the renderer uses its numpy path")
        return None
    return _source(numba)


def render_linear(srcs: tuple[np.ndarray, ...], lengths: np.ndarray, factors: np.ndarray, chan: np.ndarray,
                  stems_out: np.ndarray, mix_out: np.ndarray, clip_limit: float) -> float:
    """Render linear int16 stems into ``stems_out`` ``(S, C, N)`` and ``mix_out`` ``(C, N)`` (both float32, full
    scale 1.0, or both int16 PCM); returns the common clip gain (1.0 when none was needed).

    ``srcs[k]``: stem ``k``'s window, ``(frames, channels)`` int16 C-contiguous and read-only (one array type, so
    memory maps and decoded windows mix; a zero-length array for a silent stem); ``lengths[k]``: frames of it used (zeros after); ``factors[k]``: float32 scale (``factor / C_in`` for a
    mean to mono); ``chan[k, c]``: the source channel of output row ``c``, or :data:`MEAN`.
    """
    fn = kernel()
    if fn is None:
        raise RuntimeError("render_linear needs numba")
    as_int = stems_out.dtype == np.int16
    raw, acc = _scratch(stems_out.shape[-1])
    if mix_out.dtype != stems_out.dtype or stems_out.dtype not in (np.float32, np.int16):
        raise ValueError(f"render_linear: outputs must both be float32 or int16, got {stems_out.dtype}, {mix_out.dtype}")
    return float(fn(srcs, lengths, factors, chan, stems_out, mix_out, raw, acc, float(clip_limit), as_int))


_SCRATCH: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _scratch(n: int) -> tuple[np.ndarray, np.ndarray]:
    """This process's reused per-channel buffers of ``n`` samples: the raw mixture (float32) and the exact sum of
    the quantised stems (int32); one length kept."""
    if n not in _SCRATCH:
        _SCRATCH.clear()
        _SCRATCH[n] = (np.empty(n, np.float32), np.empty(n, np.int32))
    return _SCRATCH[n]


def warm_up() -> bool:
    """Compile (or load from numba's cache) both variants of the kernel in this process, before worker processes
    fork, so they inherit it instead of compiling at once. Returns whether the kernel is available."""
    if kernel() is None:
        return False
    a = np.zeros((4, 2), np.int16)
    a.flags.writeable = False
    src = (a,)
    args = (src, np.array([4]), np.ones(1, np.float32), np.zeros((1, 2), np.int64))
    for dt in (np.float32, np.int16):
        render_linear(*args, np.zeros((1, 2, 4), dt), np.zeros((2, 4), dt), 0.98)
    return True


__all__ = ["MEAN", "kernel", "render_linear", "warm_up"]
