"""The renderer's fast path as one compiled kernel: int16 stem windows in, quantised stems and their sum out.

Most mixtures of a training stream are linear: every stem is a window of 16-bit PCM (from the stem cache or read
as int16), scaled by one factor (calibrated level, gain, polarity) and routed channel by channel (mono copied,
stereo kept or swapped, several channels averaged to mono). For those, :func:`render_linear` does in two or three
passes over the int16 windows what the numpy path (:func:`augment.render.render_recipe`) does in about ten: each
stem's peak (an integer min/max over the window); the raw mixture's peak when the stems' peaks could add up past
the clip limit; then the common clip scale, the quantisation to the 16-bit grid and the sum, written straight into
the output buffers as float32 (full scale 1.0) or int16 PCM. Measured on a 6 s stereo 4-stem mixture from the stem
cache (``bench/stream.py``'s corpus, one process): 1.0-1.1 ms into int16 and 1.1-1.5 ms into float32, against 5.0
ms for the scalar kernel this replaced and 3.0-4.0 ms on the numpy path.

Bits. Every float operation is the numpy path's own, in the same order and in float32 (no contraction, no
reassociation), so the output is identical to the bit, signed zeros included: the mixture is summed in float32 from
-0.0, the additive identity, as the numpy path sums it (``tests/test_render_kernels.py`` holds both paths to it on
real recipes and on quiet, short-window and silent-target variants of them). Speed. The passes after the peaks run
block by block (:data:`BLOCK` frames) with the mixture accumulated in the same block loop: a stereo stem's block is
read straight from its interleaved window (both lanes in one loop, which LLVM vectorises), other layouts are first
de-interleaved into float32 rows that stay in the L1 cache; the loops carry no per-sample branches, and peaks are
integer max reductions (over the int16 samples, or over the bit patterns of non-negative floats), which vectorise
where a float max does not.

numba compiles the kernel on first use (cached on disk); without numba, :func:`kernel` returns None and the
renderer keeps the numpy path.
"""

from __future__ import annotations

import logging
import threading
from functools import cache

import numpy as np

log = logging.getLogger(__name__)

#: Channel-map value of a stem averaged to mono (its channels summed in order, then scaled by ``factor / C_in``).
MEAN = -1
#: Frames per block of the blocked passes: the de-interleaved rows and the mixture accumulators of one block
#: (a few times 8 KB) stay in the L1/L2 cache.
BLOCK = 2048

#: nnan/ninf only: lets the reductions vectorise; no contraction or reassociation, so every product and sum is the
#: numpy path's own float32 operation.
_FASTMATH = frozenset({"nnan", "ninf"})


def _loads(nb):  # noqa: ANN001, ANN202 - numba module in, the window readers out
    jit = nb.njit(cache=True, nogil=True, fastmath=set(_FASTMATH))

    @jit
    def int_peak(a, n):  # noqa: ANN001, ANN202 - max |v| over the first n frames of every channel (int32)
        flat = a.reshape(-1)[: n * a.shape[1]]
        lo, hi = np.int32(0), np.int32(0)
        for i in range(flat.size):
            v = np.int32(flat[i])
            lo = min(lo, v)
            hi = max(hi, v)
        return max(hi, -lo)

    @jit
    def abs_peak(x, m, top):  # noqa: ANN001, ANN202 - max(top, max |x[:m]|) as the bits of a float32 (top >= 0)
        # on the bit patterns: |x| clears the sign bit, and for non-negative floats the integer order is the float
        # order (an integer max reduction vectorises, a float one does not without reassociation)
        bits = x[:m].view(np.int32)
        for j in range(m):
            top = max(top, bits[j] & np.int32(0x7FFFFFFF))
        return top

    @jit
    def deinterleave(a, length, i0, m, rows):  # noqa: ANN001, ANN202
        # rows[c, :stop] = float32 of frames i0 .. i0+stop of channel c; returns stop (frames left in the window)
        cin = a.shape[1]
        stop = min(max(length - i0, 0), m)
        w = a.reshape(-1)[i0 * cin : (i0 + stop) * cin]  # indices from 0: no wrap-around checks in the loops
        if cin == 2:  # stride 2 with both lanes used: LLVM's interleaved loads
            r0, r1 = rows[0], rows[1]
            for j in range(stop):
                r0[j] = np.float32(w[2 * j])
                r1[j] = np.float32(w[2 * j + 1])
        else:
            for c in range(cin):
                r = rows[c]
                for j in range(stop):
                    r[j] = np.float32(w[j * cin + c])
        return stop

    @jit
    def source_row(rows, cin, src, stop):  # noqa: ANN001, ANN202 - the (exact) float32 row before scaling
        if src != MEAN:
            return rows[src]
        s = rows[cin]  # the spare row: the channels' sum, in channel order (exact for int16 values)
        for j in range(stop):
            s[j] = rows[0, j] + rows[1, j]
        for c in range(2, cin):
            for j in range(stop):
                s[j] = s[j] + rows[c, j]
        return s

    @jit
    def lanes(a, chan_k, n_ch):  # noqa: ANN001, ANN202 - output rows of a stereo stem's two lanes, or (-1, -1)
        if a.shape[1] == 2 and n_ch == 2 and chan_k[0] + chan_k[1] == 1 and chan_k[0] * chan_k[1] == 0:
            return (1, 0) if chan_k[0] == 1 else (0, 1)  # swapped or kept
        return -1, -1

    return int_peak, abs_peak, deinterleave, source_row, lanes


def _raw(nb, loads):  # noqa: ANN001, ANN202 - the raw mixture's peak (only when the stems' peaks could clip)
    jit = nb.njit(cache=True, nogil=True, fastmath=set(_FASTMATH))
    _int_peak, abs_peak, deinterleave, source_row, lanes = loads

    @jit
    def add_stem(a, length, f, chan_k, i0, m, rows, raw):  # noqa: ANN001, ANN202 - raw[:, :m] += the scaled block
        l0, l1 = lanes(a, chan_k, raw.shape[0])
        stop = min(max(length - i0, 0), m)
        if l0 >= 0:  # a stereo stem: read straight from the interleaved window, one pass
            w = a.reshape(-1)[2 * i0 : 2 * (i0 + stop)]
            x0, x1 = raw[l0], raw[l1]
            for j in range(stop):
                x0[j] = x0[j] + np.float32(w[2 * j]) * f
                x1[j] = x1[j] + np.float32(w[2 * j + 1]) * f
        else:
            deinterleave(a, length, i0, m, rows)
            for c in range(raw.shape[0]):
                r, x = source_row(rows, a.shape[1], chan_k[c], stop), raw[c]
                for j in range(stop):
                    x[j] = x[j] + r[j] * f
        for c in range(raw.shape[0]):  # past the window the numpy path adds its zero fill (+0.0)
            x = raw[c]
            for j in range(stop, m):
                x[j] = x[j] + np.float32(0.0)

    @jit
    def raw_peak(srcs, lengths, factors, chan, n, rows, raw):  # noqa: ANN001, ANN202
        # max |sum of the scaled stems| (float32 bits), summed in stem order in float32 as the numpy path does
        top = np.int32(0)
        for i0 in range(0, n, BLOCK):
            m = min(BLOCK, n - i0)
            for c in range(raw.shape[0]):
                x = raw[c]
                for j in range(m):
                    x[j] = np.float32(-0.0)  # the additive identity: -0.0 + x == x for every x
            for k in range(len(lengths)):
                add_stem(srcs[k], lengths[k], factors[k], chan[k], i0, m, rows, raw)
            for c in range(raw.shape[0]):
                top = abs_peak(raw[c], m, top)
        return top

    return raw_peak


def _puts(nb):  # noqa: ANN001, ANN202 - the innermost loops of the pass that writes
    jit = nb.njit(cache=True, nogil=True, fastmath=set(_FASTMATH))
    grid, inv = np.float32(32768.0), np.float32(1.0 / 32768.0)

    @jit
    def put(x, f, g, out, s, as_int):  # noqa: ANN001, ANN202 - one row: scaled, clip-scaled, on the grid, summed
        if as_int:  # the branch outside the loops: each loop is straight-line and vectorised
            for j in range(x.size):
                q = np.rint(np.float32(x[j]) * f * g * grid)
                out[j] = np.int16(q)
                s[j] = s[j] + q
        else:
            for j in range(x.size):
                y = np.rint(np.float32(x[j]) * f * g * grid) * inv
                out[j] = y
                s[j] = s[j] + y

    @jit
    def put2(w, f, g, o0, o1, s0, s1, as_int):  # noqa: ANN001, ANN202 - put() of both lanes of an interleaved block
        if as_int:
            for j in range(o0.size):
                q0 = np.rint(np.float32(w[2 * j]) * f * g * grid)
                q1 = np.rint(np.float32(w[2 * j + 1]) * f * g * grid)
                o0[j], o1[j] = np.int16(q0), np.int16(q1)
                s0[j], s1[j] = s0[j] + q0, s1[j] + q1
        else:
            for j in range(o0.size):
                y0 = np.rint(np.float32(w[2 * j]) * f * g * grid) * inv
                y1 = np.rint(np.float32(w[2 * j + 1]) * f * g * grid) * inv
                o0[j], o1[j] = y0, y1
                s0[j], s1[j] = s0[j] + y0, s1[j] + y1

    return put, put2


def _quant(nb, loads):  # noqa: ANN001, ANN202 - the pass that writes: clip scale, grid, stems and their sum
    jit = nb.njit(cache=True, nogil=True, fastmath=set(_FASTMATH))
    _int_peak, _abs_peak, deinterleave, source_row, lanes = loads
    put, put2 = _puts(nb)

    @jit
    def put_stem(a, length, f, g, chan_k, i0, m, rows, out_k, acc, as_int):  # noqa: ANN001, ANN202
        n_ch = acc.shape[0]
        l0, l1 = lanes(a, chan_k, n_ch)
        stop = min(max(length - i0, 0), m)
        if l0 >= 0:  # a stereo stem: each lane straight from the interleaved window (strided reads)
            w = a.reshape(-1)[2 * i0 : 2 * (i0 + stop)]
            put2(w, f, g, out_k[l0, i0 : i0 + stop], out_k[l1, i0 : i0 + stop], acc[l0, :stop], acc[l1, :stop],
                 as_int)
        else:
            deinterleave(a, length, i0, m, rows)
            for c in range(n_ch):
                r = source_row(rows, a.shape[1], chan_k[c], stop)
                put(r[:stop], f, g, out_k[c, i0 : i0 + stop], acc[c, :stop], as_int)
        for c in range(n_ch):  # past the window: +0.0, as the numpy path's zero fill
            out_k[c, i0 + stop : i0 + m] = 0
            x = acc[c]
            for j in range(stop, m):
                x[j] = x[j] + np.float32(0.0)

    @jit
    def quantise(srcs, lengths, factors, chan, g, stems_out, mix_out, rows, acc, as_int):  # noqa: ANN001, ANN202
        n_stems, n_ch, n = stems_out.shape
        for i0 in range(0, n, BLOCK):
            m = min(BLOCK, n - i0)
            for c in range(n_ch):
                x = acc[c]
                for j in range(m):
                    x[j] = np.float32(-0.0)
            for k in range(n_stems):
                put_stem(srcs[k], lengths[k], factors[k], g, chan[k], i0, m, rows, stems_out[k], acc, as_int)
            for c in range(n_ch):
                s, mo = acc[c], mix_out[c, i0 : i0 + m]
                if as_int:  # grid values: the float32 sums are exact (far below 2**24 LSB)
                    for j in range(m):
                        mo[j] = np.int16(min(np.float32(32767.0), max(np.float32(-32768.0), s[j])))
                else:
                    for j in range(m):
                        mo[j] = s[j]

    return quantise


def _source(nb):  # noqa: ANN001, ANN202 - numba module in, the compiled kernel out
    jit = nb.njit(cache=True, nogil=True, fastmath=set(_FASTMATH))
    loads = _loads(nb)
    int_peak, abs_peak, deinterleave, source_row, _lanes = loads
    raw_peak, quantise = _raw(nb, loads), _quant(nb, loads)

    @jit
    def stem_peak(a, f, chan_k, n, rows):  # noqa: ANN001, ANN202
        # rounding is monotone, so max |float32(v) * f| == float32(max |v|) * |f|: exact on integers
        cin = a.shape[1]
        every = chan_k[0] != MEAN  # do the output rows read every input channel? (then one flat integer pass)
        for c in range(cin):
            every = every and (chan_k == c).any()
        if every:
            return np.float32(int_peak(a, n)) * abs(f)
        top = np.int32(0)
        for i0 in range(0, n, BLOCK):
            m = deinterleave(a, n, i0, min(BLOCK, n - i0), rows)
            for src in chan_k:
                top = abs_peak(source_row(rows, cin, src, m), m, top)
        return np.array([top], np.int32).view(np.float32)[0] * abs(f)

    @jit
    def render(srcs, lengths, factors, chan, stems_out, mix_out, rows, raw, acc, clip_limit, as_int):  # noqa: ANN001, ANN202
        peaks = 0.0
        top = 0.0
        for k in range(len(lengths)):
            p = np.float64(stem_peak(srcs[k], factors[k], chan[k], lengths[k], rows))
            peaks += p
            top = max(top, p)
        if peaks > clip_limit:  # the raw mixture's peak (the stems' peaks could add up past the limit)
            bits = raw_peak(srcs, lengths, factors, chan, stems_out.shape[2], rows, raw)
            top = max(top, np.float64(np.array([bits], np.int32).view(np.float32)[0]))
        scaled = top > clip_limit
        g = np.float32(clip_limit / top) if scaled else np.float32(1.0)
        quantise(srcs, lengths, factors, chan, g, stems_out, mix_out, rows, acc, as_int)
        return g

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
    memory maps and decoded windows mix; a zero-length array for a silent stem); ``lengths[k]``: frames of it used
    (zeros after); ``factors[k]``: float32 scale (``factor / C_in`` for a mean to mono); ``chan[k, c]``: the source
    channel of output row ``c``, or :data:`MEAN`.
    """
    fn = kernel()
    if fn is None:
        raise RuntimeError("render_linear needs numba")
    if mix_out.dtype != stems_out.dtype or stems_out.dtype not in (np.float32, np.int16):
        raise ValueError(f"render_linear: outputs must both be float32 or int16, got {stems_out.dtype}, {mix_out.dtype}")
    rows, raw, acc = _scratch(max(a.shape[1] for a in srcs), stems_out.shape[1])
    return float(fn(srcs, lengths, factors, chan, stems_out, mix_out, rows, raw, acc, float(clip_limit),
                    stems_out.dtype == np.int16))


_LOCAL = threading.local()


def _scratch(c_in: int, c_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """This thread's reused block buffers (float32): the de-interleaved input rows plus a spare row for a mean
    ``(c_in + 1, BLOCK)``, the raw mixture and the mixture accumulator ``(c_out, BLOCK)`` each. Per thread: the
    kernel releases the GIL, and a thread-pool build renders in several threads of one process."""
    key = (max(2, c_in), c_out)
    held = getattr(_LOCAL, "buffers", None)
    if held is None or held[0] != key:
        held = (key, (np.zeros((key[0] + 1, BLOCK), np.float32), np.zeros((c_out, BLOCK), np.float32),
                      np.zeros((c_out, BLOCK), np.float32)))
        _LOCAL.buffers = held
    return held[1]


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


__all__ = ["BLOCK", "MEAN", "kernel", "render_linear", "warm_up"]
