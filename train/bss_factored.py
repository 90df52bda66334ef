"""BSSEval v4 with the references' correlation matrix factorized once: museval's numbers at a fraction of the cost
when one track is scored several times (every stem of a track, the baselines, and every run of a comparison).

museval's ``bss_eval`` (images version, one distortion filter per stem for the whole track, no permutation: the
MUSDB18 convention) solves the same linear system ``G C = D`` once per estimated stem, where ``G`` (the
correlations of the delayed references, ``n_stems x channels x 512`` square: 4096 x 4096 for four stereo stems) depends
only on the references. :class:`FactoredReferences` computes ``G`` and its LU factorization once; each estimate
then costs two triangular solves, its cross-correlations with the references and museval's own per-window
decomposition and ratios (``_bss_decomp_mtifilt``, ``_bss_crit``, ``Framing``, called as they are). The values agree
with museval's to rounding (tests/test_evaluate.py compares them on real fixture audio).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.fftpack
import scipy.linalg

#: museval's distortion filter length in samples (``filters_len``).
FILTERS_LEN = 512


class FactoredReferences:
    """The references of one joint BSSEval group, ``(n_stems, samples, channels)`` float64, with ``G`` factorized.

    Args:
        references: the true sources, stacked as museval takes them.
        metrics: museval's metrics module (:func:`train.bsseval.museval_metrics`).
    """

    def __init__(self, references: np.ndarray, metrics: Any, filters_len: int = FILTERS_LEN) -> None:
        self.refs = np.asarray(references, dtype=np.float64)
        self.m = metrics
        self.filters_len = filters_len
        g, self.sf = metrics._compute_reference_correlations(self.refs, filters_len)
        n_src = self.refs.shape[0]
        self.full = _Factored(metrics._reshape_G(g))
        self.own = [_Factored(metrics._reshape_G(g[j, j][None, None])) for j in range(n_src)]

    def metrics(self, estimates: np.ndarray, window: int, hop: int) -> tuple[np.ndarray, ...]:
        """Framewise ``(SDR, ISR, SIR, SAR)`` in dB, each ``(n_stems, n_windows)``, of ``estimates`` (shaped like the
        references), as ``museval.metrics.bss_eval(..., compute_permutation=False, framewise_filters=False,
        bsseval_sources_version=False)`` returns them; NaN for windows where a reference or an estimate is silent."""
        m, refs, length = self.m, self.refs, self.filters_len
        n_src, n_samples, n_ch = refs.shape
        ests = np.asarray(estimates, dtype=np.float64)
        if ests.shape != refs.shape:
            raise ValueError(f"estimates {ests.shape}; allowed: the references' shape {refs.shape}")
        filters, own = [], []
        for j in range(n_src):
            d = self._cross(ests[j])  # (n_src, ch, L, ch)
            filters.append(self.full.solve(d.reshape(-1, n_ch)).reshape(n_src, n_ch, length, n_ch))
            own.append(self.own[j].solve(d[j].reshape(-1, n_ch)).reshape(n_ch, length, n_ch))
        framer = m.Framing(window, hop, n_samples)
        out = np.full((4, n_src, framer.nwin), np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for t, win in enumerate(framer):
                if m._any_source_silent(refs[:, win]) or m._any_source_silent(ests[:, win]):
                    continue
                for j in range(n_src):
                    parts = m._bss_decomp_mtifilt(refs[:, win], ests[j, win], j, filters[j], own[j])
                    out[:, j, t] = m._bss_crit(*parts, False)
        return tuple(out)

    def _cross(self, estimate: np.ndarray) -> np.ndarray:
        """Cross-correlations of one estimate ``(samples, channels)`` with every reference at lags 0..L-1, laid out
        as museval's ``D``: ``(n_src, ch_ref, L, ch_est)``."""
        n_src, n_samples, n_ch = self.refs.shape
        length = self.filters_len
        n_fft = int(2 ** np.ceil(np.log2(n_samples + length - 1.0)))
        padded = np.zeros((n_ch, n_samples + length - 1))
        padded[:, :n_samples] = estimate.T
        spec = scipy.fftpack.fft(padded, n=n_fft)
        d = np.empty((n_src, n_ch, length, n_ch))
        lags = np.r_[0, n_fft - 1:n_fft - length:-1]  # lag 0, then the last L-1 bins reversed
        for j in range(n_src):
            for cj in range(n_ch):
                for c in range(n_ch):
                    d[j, cj, :, c] = np.real(scipy.fftpack.ifft(self.sf[j, cj] * np.conj(spec[c])))[lags]
        return d


class _Factored:
    """``A + eps I`` LU-factorized once (museval solves that system); ``A``'s least squares where it is singular."""

    def __init__(self, a: np.ndarray) -> None:
        eps = np.finfo(float).eps
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", scipy.linalg.LinAlgWarning)
                self.lu = scipy.linalg.lu_factor(a + eps * np.eye(a.shape[0]), check_finite=False)
            self.a = None
        except (np.linalg.LinAlgError, scipy.linalg.LinAlgWarning, ValueError):
            self.lu, self.a = None, a

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        if self.lu is not None:
            return scipy.linalg.lu_solve(self.lu, rhs, check_finite=False)
        return np.linalg.lstsq(self.a, rhs, rcond=None)[0]


__all__ = ["FILTERS_LEN", "FactoredReferences"]
