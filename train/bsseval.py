"""BSSEval v4 SDR, SIR, SAR, ISR (museval, the MUSDB18 convention), SI-SDR and the level error of one track's arrays.

The MUSDB18 convention, as ``museval`` computes it and SiSEC 2018 / every MUSDB18 paper reports it:

* all estimated stems of one track are scored **jointly** (the interference projection spans every reference of
  the track), with time-invariant distortion filters of 512 taps fitted on the whole track (BSSEval v4,
  ``bss_eval_images``);
* the SDR is computed on 1 s windows with a 1 s hop (a trailing partial window is dropped); a window where any
  reference or any estimate is digital silence is NaN for every stem and ignored;
* a track's SDR per stem is the median over its windows, the dataset's SDR per stem the median over tracks.

A stem whose reference is digital silence over the whole track (an instrumental song's vocals) cannot be scored:
museval itself would refuse the whole track. Here that stem is reported as ``None`` (JSON ``null``) for that track,
the other stems are scored jointly without it, and the median over tracks skips it. A stem whose *estimate* is
digital silence while its reference is not scores 0 dB, the value BSSEval gives an all-zero estimate (its
projection is zero, so the whole reference counts as distortion); the other stems are then scored without it.

SDR, ISR, SIR and SAR come from the same ``bss_eval`` call (one decomposition per stem), so asking for all four
costs what SDR alone costs. A silent estimate's SIR and SAR are ``None``: its decomposition is all zero but for the
spatial error, so both ratios are 0/0 (museval would print +inf); its SDR and ISR are 0 dB.

SI-SDR (:func:`train.metrics.si_sdr`) is computed on each whole track, channels concatenated. The level error is
the integrated loudness (ITU-R BS.1770-4, :func:`stemdb.measure.integrated_loudness`) of the whole estimate minus
that of the whole reference, in dB: an estimate at 60 % of the reference's amplitude is -4.4 dB. It is ``None``
where the reference has no gated loudness (digital silence, below -70 LUFS, or shorter than one 400 ms block).

Every score is clipped to ``[-MAX_DB, MAX_DB]``: an estimate equal to its reference has an infinite BSSEval SDR,
which JSON cannot hold, and ``None`` would wrongly say "not scored".
"""

from __future__ import annotations

import importlib.util
import logging
import math
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from types import ModuleType

import numpy as np

from stemdb.errors import MissingDependencyError
from stemdb.measure import integrated_loudness
from stemdb.shaping import fit_length
from train.bss_factored import FactoredReferences
from train.metrics import si_sdr

logger = logging.getLogger(__name__)

#: Scores are clipped to ``[-MAX_DB, MAX_DB]`` dB (a perfect estimate has an infinite BSSEval SDR).
MAX_DB: float = 100.0

StemScores = dict[str, float | None]
TrackScores = dict[str, StemScores]


def is_digital_silence(audio_: np.ndarray) -> bool:
    """True when ``audio_`` ``(C, T)`` counts as silent for BSSEval: its channel sum is exactly zero at every sample.

    This is museval's own test (an all-zero signal, or the rare one whose channels cancel exactly); such a
    reference cannot take part in a BSSEval decomposition.
    """
    return bool(np.all(np.sum(audio_, axis=0) == 0))


#: The BSSEval v4 metrics of :func:`bss_metrics`, in museval's return order.
BSS_METRICS: tuple[str, ...] = ("SDR", "ISR", "SIR", "SAR")
#: Every metric of :func:`score_track`, in the order the JSON and the tables show them (all in dB).
METRICS: tuple[str, ...] = ("SDR", "SIR", "SAR", "ISR", "SI-SDR", "level_error")


def bss_sdr(
    references: Mapping[str, np.ndarray],
    estimates: Mapping[str, np.ndarray],
    sample_rate: int,
    *,
    window_s: float = 1.0,
    hop_s: float = 1.0,
) -> dict[str, float | None]:
    """BSSEval v4 SDR per stem of one track, as museval computes it for MUSDB18 (the SDR of :func:`bss_metrics`).

    Returns:
        stem -> median SDR over windows in dB (may be ``inf`` for a perfect estimate), or ``None`` where the
        reference is digital silence or every window is NaN.
    """
    scores = bss_metrics(references, estimates, sample_rate, window_s=window_s, hop_s=hop_s)
    return {stem: v["SDR"] for stem, v in scores.items()}


def bss_metrics(
    references: Mapping[str, np.ndarray],
    estimates: Mapping[str, np.ndarray],
    sample_rate: int,
    *,
    window_s: float = 1.0,
    hop_s: float = 1.0,
    factors: dict[tuple[str, ...], FactoredReferences] | None = None,
) -> dict[str, dict[str, float | None]]:
    """BSSEval v4 SDR, ISR, SIR and SAR per stem of one track, as one museval ``bss_eval`` call per joint group
    computes them.

    Every stem in ``estimates`` is scored, jointly with the others (see the module docstring); when both
    ``"vocals"`` and ``"accompaniment"`` are estimated, vocals are scored against accompaniment alone, as
    museval's ``eval_mus_track`` does. Audio is converted to float64 (museval's own loading precision); estimates
    are zero-padded or cut to the reference length, references of unequal length are zero-padded to the longest.

    Args:
        references: stem name -> true source ``(C, T)``; must hold every stem of ``estimates`` (more is fine).
        estimates: stem name -> estimated source ``(C, T)`` with the reference's channel count.
        sample_rate: samples per second of all arrays (Hz).
        window_s: BSSEval window in seconds (MUSDB18: 1.0).
        hop_s: BSSEval hop in seconds (MUSDB18: 1.0).
        factors: a cache of factorized references by joint group, for several calls with the same ``references``
            (the references' correlation matrix is then factorized once per group; ``{}`` to start one).

    Returns:
        stem -> ``{"SDR", "ISR", "SIR", "SAR"}``: the median over windows in dB of each (NaN windows ignored; may
        be ``inf``), ``None`` where the reference is digital silence or every window is NaN; a silent estimate
        has SDR and ISR 0 dB and SIR and SAR ``None``.

    Raises:
        ValueError: no estimates, a stem without a reference, arrays not ``(C, T)``, channel counts that differ,
            or a non-positive sample rate, window or hop.
    """
    stems = list(estimates)
    refs, ests = _aligned(references, estimates, sample_rate)
    win, hop = _window_samples(window_s, hop_s, sample_rate)

    out: dict[str, dict[str, float | None]] = {s: dict.fromkeys(BSS_METRICS) for s in stems}
    scorable = []
    for stem in stems:
        if is_digital_silence(refs[stem]):
            logger.info("%s: reference is digital silence, not scored", stem)
        elif is_digital_silence(ests[stem]):
            logger.warning("%s: estimate is digital silence while the reference is not: SDR 0 dB", stem)
            out[stem].update(SDR=0.0, ISR=0.0)
        else:
            scorable.append(stem)

    cache = factors if factors is not None else {}
    for group, keep in _museval_groups(scorable):
        if tuple(group) not in cache:
            cache[tuple(group)] = FactoredReferences(np.stack([refs[s].T for s in group]), museval_metrics())
        values = _museval_metrics([refs[s] for s in group], [ests[s] for s in group], win, hop, cache[tuple(group)])
        for i, stem in enumerate(group):
            if stem in keep:
                out[stem] = {m: _nanmedian_or_none(values[k][i]) for k, m in enumerate(BSS_METRICS)}
    return out


def level_error(estimate: np.ndarray, reference: np.ndarray, sample_rate: int) -> float | None:
    """Integrated loudness (BS.1770-4) of ``estimate`` minus that of ``reference``, both ``(C, T)``, in dB.

    ``None`` when the reference has no gated loudness; ``-inf`` when only the estimate has none (silent or below
    the -70 LUFS gate); callers clip it (:func:`score_track`).
    """
    ref_lufs = integrated_loudness(reference, sample_rate)
    if not math.isfinite(ref_lufs):
        return None
    return float(integrated_loudness(estimate, sample_rate) - ref_lufs)


def score_track(
    references: Mapping[str, np.ndarray],
    estimates: Mapping[str, np.ndarray],
    sample_rate: int,
    *,
    window_s: float = 1.0,
    hop_s: float = 1.0,
    factors: dict[tuple[str, ...], FactoredReferences] | None = None,
) -> TrackScores:
    """Every metric of :data:`METRICS` per stem of one track, in dB: BSSEval v4 SDR, SIR, SAR, ISR
    (:func:`bss_metrics`, one decomposition per stem), whole-track SI-SDR and the level error (:func:`level_error`).

    Args:
        references: stem -> true source ``(C, T)``.
        estimates: stem -> estimated source ``(C, T)``; every stem here is scored.
        sample_rate: Hz.
        window_s, hop_s: BSSEval window and hop in seconds.
        factors: see :func:`bss_metrics` (several estimate sets of the same references).

    Returns:
        ``{stem: {"SDR", "SIR", "SAR", "ISR", "SI-SDR", "level_error"}}``, every value ``None`` where the reference
        is digital silence; values clipped to ``±MAX_DB``.
    """
    bss = bss_metrics(references, estimates, sample_rate, window_s=window_s, hop_s=hop_s, factors=factors)
    refs, ests = _aligned(references, estimates, sample_rate)
    out: TrackScores = {}
    for stem in estimates:
        silent = is_digital_silence(refs[stem])
        si = None if silent else float(si_sdr(ests[stem], refs[stem]))
        level = None if silent else level_error(ests[stem], refs[stem], sample_rate)
        values = {**bss[stem], "SI-SDR": si, "level_error": level}
        out[stem] = {m: _clip_db(values[m]) for m in METRICS}
    return out


#: How far (seconds) an estimate's length may be from its reference's: padded or cut within it, an error beyond
#: it (a frame of padding from an STFT model passes; a half-length estimate, which would score higher, does not).
LENGTH_TOLERANCE_S = 0.1


def estimate_problem(est: np.ndarray, ref_frames: int, sample_rate: int) -> str | None:
    """Why an estimate ``(C, T)`` cannot be scored against a reference of ``ref_frames`` frames, or ``None``:
    NaN/inf samples, or a length more than :data:`LENGTH_TOLERANCE_S` away (a smaller gap is logged)."""
    bad = est.size - int(np.isfinite(est).sum())
    if bad:
        return f"{bad} non-finite samples (NaN or inf); allowed: finite samples only"
    gap = abs(est.shape[-1] - ref_frames)
    if gap > LENGTH_TOLERANCE_S * sample_rate:
        return (f"{est.shape[-1]} frames, the reference has {ref_frames} ({gap / sample_rate:.3f} s apart); "
                f"allowed: within {LENGTH_TOLERANCE_S} s")
    if gap:
        logger.warning("estimate of %d frames, the reference has %d: padded or cut to match", est.shape[-1],
                       ref_frames)
    return None


def _aligned(
    references: Mapping[str, np.ndarray], estimates: Mapping[str, np.ndarray], sample_rate: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Validated float64 copies: references zero-padded to the longest, estimates padded or cut to match."""
    if not isinstance(sample_rate, int | np.integer) or sample_rate <= 0:
        raise ValueError(f"sample_rate={sample_rate!r}; allowed: a positive integer (Hz)")
    if not estimates:
        raise ValueError("estimates is empty; allowed: at least one stem -> (channels, samples) array")
    missing = [s for s in estimates if s not in references]
    if missing:
        raise ValueError(f"estimates {missing} have no reference; references hold {sorted(references)}")
    refs = {s: np.asarray(references[s], dtype=np.float64) for s in estimates}
    ests = {s: np.asarray(estimates[s], dtype=np.float64) for s in estimates}
    for stem in estimates:
        r, e = refs[stem], ests[stem]
        if r.ndim != 2 or e.ndim != 2 or r.shape[1] == 0:
            raise ValueError(
                f"{stem}: reference {r.shape}, estimate {e.shape}; allowed: (channels, samples) arrays, samples > 0"
            )
        if r.shape[0] != e.shape[0]:
            raise ValueError(f"{stem}: estimate has {e.shape[0]} channel(s), reference {r.shape[0]}")
        if not (np.isfinite(r).all() and np.isfinite(e).all()):
            raise ValueError(f"{stem}: non-finite samples (NaN or inf) in the reference or the estimate; allowed: "
                             "finite samples only")
    channels = {r.shape[0] for r in refs.values()}
    if len(channels) > 1:
        raise ValueError(f"references have different channel counts {sorted(channels)}; allowed: one count")
    n = max(r.shape[1] for r in refs.values())
    for stem in estimates:
        if refs[stem].shape[1] != n or ests[stem].shape[1] != n:
            logger.debug("%s: reference %d, estimate %d samples, aligned to %d", stem, refs[stem].shape[1],
                         ests[stem].shape[1], n)
        refs[stem], ests[stem] = fit_length(refs[stem], n), fit_length(ests[stem], n)
    return refs, ests


def _window_samples(window_s: float, hop_s: float, sample_rate: int) -> tuple[int, int]:
    """BSSEval window and hop in samples; raises ValueError for a non-positive value or less than one sample."""
    for name, value in (("window_s", window_s), ("hop_s", hop_s)):
        if not value > 0 or not math.isfinite(value):
            raise ValueError(f"{name}={value!r}; allowed: a positive number of seconds")
    win, hop = int(window_s * sample_rate), int(hop_s * sample_rate)
    if win < 1 or hop < 1:
        raise ValueError(f"window_s={window_s}, hop_s={hop_s} at {sample_rate} Hz give less than one sample")
    return win, hop


def _museval_groups(stems: list[str]) -> list[tuple[list[str], set[str]]]:
    """The joint evaluations museval's ``eval_mus_track`` makes: (stems evaluated together, stems kept)."""
    if "vocals" in stems and "accompaniment" in stems:
        rest = [s for s in stems if s != "accompaniment"]
        groups = [(rest, set(rest) - {"vocals"})] if len(rest) > 1 else []
        return [*groups, (["vocals", "accompaniment"], {"vocals", "accompaniment"})]
    return [(stems, set(stems))] if stems else []


def _museval_metrics(refs: list[np.ndarray], ests: list[np.ndarray], win: int, hop: int,
                     factored: FactoredReferences | None = None) -> tuple[np.ndarray, ...]:
    """Framewise ``(SDR, ISR, SIR, SAR)``, each ``(n_stems, n_windows)``, of ``(C, T)`` arrays of one length: BSSEval
    v4 as ``museval.evaluate`` computes it (no permutation, one distortion filter per stem for the whole track),
    through :class:`train.bss_factored.FactoredReferences` (``factored``: these references already factorized)."""
    if factored is None:
        factored = FactoredReferences(np.stack([r.T for r in refs]), museval_metrics())
    return factored.metrics(np.stack([e.T for e in ests]), win, hop)


def museval_bss_eval() -> Callable[..., tuple]:
    """``museval.metrics.bss_eval`` (see :func:`museval_metrics`)."""
    return museval_metrics().bss_eval


@lru_cache(maxsize=1)
def museval_metrics() -> ModuleType:
    """``museval.metrics``, loaded without running ``museval/__init__.py``.

    museval's package init imports musdb, whose stempeg raises at import when ffmpeg is not on PATH; the metric
    itself needs only numpy and scipy, so scoring WAV files works without ffmpeg.

    Raises:
        MissingDependencyError: museval is not installed.
    """
    spec = importlib.util.find_spec("museval")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("BSSEval v4 scoring needs museval: pip install 'museval>=0.4'")
    path = Path(next(iter(spec.submodule_search_locations))) / "metrics.py"
    mspec = importlib.util.spec_from_file_location("stemdb_museval_metrics", path)
    if mspec is None or mspec.loader is None:
        raise MissingDependencyError(f"{path}: museval's metrics module not found; reinstall museval")
    module = importlib.util.module_from_spec(mspec)
    mspec.loader.exec_module(module)
    return module


def _nanmedian_or_none(values: np.ndarray) -> float | None:
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    return float(np.median(values)) if values.size else None


def _clip_db(value: float | None) -> float | None:
    if value is None or math.isnan(value):
        return None
    return float(min(max(value, -MAX_DB), MAX_DB))


__all__ = ["BSS_METRICS", "MAX_DB", "METRICS", "StemScores", "TrackScores", "bss_metrics", "bss_sdr",
           "is_digital_silence", "level_error", "museval_bss_eval", "museval_metrics", "score_track"]
