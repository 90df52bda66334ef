"""BSSEval v4 SDR (museval, the MUSDB18 convention) and SI-SDR of one track's arrays.

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

SI-SDR (:func:`train.metrics.si_sdr`) is computed on each whole track, channels concatenated.

Every score is clipped to ``[-MAX_DB, MAX_DB]``: an estimate equal to its reference has an infinite BSSEval SDR,
which JSON cannot hold, and ``None`` would wrongly say "not scored".
"""

from __future__ import annotations

import importlib.util
import logging
import math
import warnings
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path

import numpy as np

from stemdb.errors import MissingDependencyError
from stemdb.shaping import fit_length
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


def bss_sdr(
    references: Mapping[str, np.ndarray],
    estimates: Mapping[str, np.ndarray],
    sample_rate: int,
    *,
    window_s: float = 1.0,
    hop_s: float = 1.0,
) -> dict[str, float | None]:
    """BSSEval v4 SDR per stem of one track, as museval computes it for MUSDB18.

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

    Returns:
        stem -> median SDR over windows in dB (NaN windows ignored; may be ``inf`` for a perfect estimate), or
        ``None`` where the reference is digital silence or every window is NaN.

    Raises:
        ValueError: no estimates, a stem without a reference, arrays not ``(C, T)``, channel counts that differ,
            or a non-positive sample rate, window or hop.
    """
    stems = list(estimates)
    refs, ests = _aligned(references, estimates, sample_rate)
    for name, value in (("window_s", window_s), ("hop_s", hop_s)):
        if not value > 0 or not math.isfinite(value):
            raise ValueError(f"{name}={value!r}; allowed: a positive number of seconds")
    win, hop = int(window_s * sample_rate), int(hop_s * sample_rate)
    if win < 1 or hop < 1:
        raise ValueError(f"window_s={window_s}, hop_s={hop_s} at {sample_rate} Hz give less than one sample")

    out: dict[str, float | None] = dict.fromkeys(stems)
    scorable = []
    for stem in stems:
        if is_digital_silence(refs[stem]):
            logger.info("%s: reference is digital silence, not scored", stem)
        elif is_digital_silence(ests[stem]):
            logger.warning("%s: estimate is digital silence while the reference is not: SDR 0 dB", stem)
            out[stem] = 0.0
        else:
            scorable.append(stem)

    for group, keep in _museval_groups(scorable):
        values = _museval_sdr([refs[s] for s in group], [ests[s] for s in group], win, hop)
        for stem, framewise in zip(group, values, strict=True):
            if stem in keep:
                out[stem] = _nanmedian_or_none(framewise)
    return out


def score_track(
    references: Mapping[str, np.ndarray],
    estimates: Mapping[str, np.ndarray],
    sample_rate: int,
    *,
    window_s: float = 1.0,
    hop_s: float = 1.0,
) -> TrackScores:
    """BSSEval v4 SDR (:func:`bss_sdr`) and whole-track SI-SDR per stem of one track, in dB.

    Args:
        references: stem -> true source ``(C, T)``.
        estimates: stem -> estimated source ``(C, T)``; every stem here is scored.
        sample_rate: Hz.
        window_s, hop_s: BSSEval window and hop in seconds.

    Returns:
        ``{stem: {"SDR": dB | None, "SI-SDR": dB | None}}``, both ``None`` where the reference is digital
        silence; values clipped to ``±MAX_DB``.
    """
    sdrs = bss_sdr(references, estimates, sample_rate, window_s=window_s, hop_s=hop_s)
    refs, ests = _aligned(references, estimates, sample_rate)
    out: TrackScores = {}
    for stem in estimates:
        si = None if is_digital_silence(refs[stem]) else float(si_sdr(ests[stem], refs[stem]))
        out[stem] = {"SDR": _clip_db(sdrs[stem]), "SI-SDR": _clip_db(si)}
    return out


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


def _museval_groups(stems: list[str]) -> list[tuple[list[str], set[str]]]:
    """The joint evaluations museval's ``eval_mus_track`` makes: (stems evaluated together, stems kept)."""
    if "vocals" in stems and "accompaniment" in stems:
        rest = [s for s in stems if s != "accompaniment"]
        groups = [(rest, set(rest) - {"vocals"})] if len(rest) > 1 else []
        return [*groups, (["vocals", "accompaniment"], {"vocals", "accompaniment"})]
    return [(stems, set(stems))] if stems else []


def _museval_sdr(refs: list[np.ndarray], ests: list[np.ndarray], win: int, hop: int) -> np.ndarray:
    """Framewise SDR ``(n_stems, n_windows)`` of ``(C, T)`` arrays of one length: BSSEval v4 as
    ``museval.evaluate`` computes it (no permutation, one distortion filter per stem for the whole track)."""
    bss_eval = museval_bss_eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sdr, _isr, _sir, _sar, _perm = bss_eval(np.stack([r.T for r in refs]), np.stack([e.T for e in ests]),
                                                compute_permutation=False, window=win, hop=hop,
                                                framewise_filters=False, bsseval_sources_version=False)
    return np.asarray(sdr, dtype=np.float64)


@lru_cache(maxsize=1)
def museval_bss_eval() -> Callable[..., tuple]:
    """``museval.metrics.bss_eval``, loaded without running ``museval/__init__.py``.

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
    return module.bss_eval


def _nanmedian_or_none(values: np.ndarray) -> float | None:
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    return float(np.median(values)) if values.size else None


def _clip_db(value: float | None) -> float | None:
    if value is None or math.isnan(value):
        return None
    return float(min(max(value, -MAX_DB), MAX_DB))


__all__ = ["MAX_DB", "StemScores", "TrackScores", "bss_sdr", "is_digital_silence", "museval_bss_eval", "score_track"]
