"""Window loudness from a stem's loudness profile (the catalogue's ``loudness_100ms`` column).

The profile, the BS.1770 K-weighted mean square per 100 ms hop with channels summed, is measured at ingest by
:func:`stemdb.measure.measure` in the same filter pass as the integrated loudness. With it, the integrated loudness
of any window of a stem is computed from the catalogue alone (no audio decoding), which lets the remix planner set
loudness-calibrated gains as a pure function of the catalogue. Windows are aligned to the 100 ms hop grid, so a
window's loudness is exact to that grid (within a few hundredths of a LU of the decoded window's loudness on real
stems).
"""

from __future__ import annotations

import numpy as np

from stemdb.bs1770 import ABSOLUTE_GATE_LUFS, HOP_S, LUFS_OFFSET, RELATIVE_GATE_LU, gated_loudness

HOPS_PER_BLOCK = 4  # 400 ms gating blocks over 100 ms hops


def window_lufs(profile: np.ndarray, start_s: float, duration_s: float) -> float:
    """Integrated loudness (LUFS) of the window ``[start_s, start_s + duration_s)`` from a profile; -inf if silent.

    Parts of the window past the end of the profile count as silence (they are padding in a render).
    """
    p = np.asarray(profile, dtype=np.float64)
    a = max(0, int(round(start_s / HOP_S)))
    n = int(round(duration_s / HOP_S))
    seg = p[a : a + n]
    if n < HOPS_PER_BLOCK:
        return float("-inf")
    if seg.size < n:
        seg = np.concatenate([seg, np.zeros(n - seg.size)])
    csum = np.concatenate([[0.0], np.cumsum(seg)])
    blocks = (csum[HOPS_PER_BLOCK:] - csum[:-HOPS_PER_BLOCK]) / HOPS_PER_BLOCK
    return gated_loudness(blocks)




def windows_lufs(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray, start_s: np.ndarray,
                 duration_s: np.ndarray) -> np.ndarray:
    """:func:`window_lufs` of many windows at once, each of its own stem: ``(n,)`` LUFS (``-inf`` if silent).

    The profiles are ragged: stem ``k``'s profile is ``values[starts[k] : starts[k] + lengths[k]]``. Window ``k``
    starts ``start_s[k]`` seconds into it and lasts ``duration_s[k]``; hops past the profile's end count as silence.
    Each 400 ms block is the mean of its four hops (summed in order, so a window's value depends on its own stem's
    profile alone), then the two BS.1770 gates.
    """
    values = np.asarray(values, dtype=np.float64)
    a = np.maximum(0, np.rint(np.asarray(start_s, dtype=np.float64) / HOP_S)).astype(np.int64)
    n = np.rint(np.asarray(duration_s, dtype=np.float64) / HOP_S).astype(np.int64)
    out = np.full(a.shape, -np.inf)
    if a.size == 0 or int(n.max()) < HOPS_PER_BLOCK:
        return out
    hops = a[:, None] + np.arange(int(n.max()))[None, :]
    inside = (hops < np.asarray(lengths)[:, None]) & (hops < (a + n)[:, None])
    gathered = values[np.minimum(np.asarray(starts)[:, None] + hops, max(values.size - 1, 0))] if values.size else 0.0
    p = np.where(inside, gathered, 0.0)
    z = (p[:, :-3] + p[:, 1:-2] + p[:, 2:-1] + p[:, 3:]) / HOPS_PER_BLOCK
    valid = np.arange(z.shape[1])[None, :] <= (n - HOPS_PER_BLOCK)[:, None]
    above = valid & (z > 10.0 ** ((ABSOLUTE_GATE_LUFS - LUFS_OFFSET) / 10.0))
    count = above.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(above, z, 0.0).sum(axis=1) / count * 10.0 ** (RELATIVE_GATE_LU / 10.0)
        gated = above & (z > rel[:, None])
        mean = np.where(gated, z, 0.0).sum(axis=1) / gated.sum(axis=1)
        lufs = LUFS_OFFSET + 10.0 * np.log10(mean)
    ok = (count > 0) & (n >= HOPS_PER_BLOCK)
    out[ok] = lufs[ok]
    return out


__all__ = ["window_lufs", "windows_lufs"]
