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

from stemdb.bs1770 import HOP_S, gated_loudness

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


__all__ = ["window_lufs"]
