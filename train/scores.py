"""Score tables of :mod:`train.evaluate`: medians over tracks, paired improvements over a baseline, the scores JSON.

A *scores* dict is ``{"median": {STEM: {METRIC: dB}}, "tracks": {TRACK: {STEM: {METRIC: dB}}}}``; the metrics are
:data:`train.bsseval.METRICS` (SDR, SIR, SAR, ISR, SI-SDR, level error, all in dB), ``None`` where not scored.
numpy only: no torch, no museval.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from stemdb.atomic import write_text_atomic
from train.bsseval import METRICS, TrackScores

logger = logging.getLogger(__name__)

#: The stem holding the mixture in MUSDB18 folders; never a target unless asked for.
MIXTURE = "mixture"

#: MUSDB18's target order; other stems follow alphabetically.
MUSDB_STEM_ORDER: tuple[str, ...] = ("vocals", "drums", "bass", "other", "accompaniment")


def ordered(names: Iterable[str], order: tuple[str, ...] = (MIXTURE, *MUSDB_STEM_ORDER)) -> list[str]:
    """``names`` without repeats, those in ``order`` first in that order, the others alphabetically."""
    rank = {n: i for i, n in enumerate(order)}
    return sorted(set(names), key=lambda n: (rank.get(n, len(rank)), n))


def median_scores(tracks: Mapping[str, TrackScores]) -> TrackScores:
    """Per stem and metric, the median over tracks of the non-``None`` values (``None`` if there are none)."""
    stems = ordered({s for t in tracks.values() for s in t})
    metrics = ordered({m for t in tracks.values() for v in t.values() for m in v}, order=METRICS)
    out: TrackScores = {}
    for stem in stems:
        out[stem] = {}
        for metric in metrics:
            vals = [t[stem].get(metric) for t in tracks.values() if stem in t]
            vals = [float(v) for v in vals if v is not None and not math.isnan(v)]
            out[stem][metric] = float(np.median(vals)) if vals else None
    return out


def paired_differences(scores: Mapping[str, Any], baseline: Mapping[str, Any]) -> dict[str, TrackScores]:
    """Per track, stem and metric: ``scores - baseline`` in dB over the tracks and stems both hold (``None`` where
    either side is ``None``). Tracks in only one of the two are ignored (with a warning).

    Raises:
        ValueError: either argument lacks ``"tracks"``, or they share no track.
    """
    for label, s in (("scores", scores), ("baseline", baseline)):
        if not isinstance(s, Mapping) or "tracks" not in s:
            raise ValueError(f"{label} has no 'tracks' key; allowed: the dict score_folders returns")
    model, base = scores["tracks"], baseline["tracks"]
    common = sorted(set(model) & set(base))
    if not common:
        raise ValueError("scores and baseline share no track; allowed: scores of the same references")
    only = sorted(set(model) ^ set(base))
    if only:
        logger.warning("paired differences: %d track(s) scored on one side only, ignored: %s", len(only), only)
    diffs: dict[str, TrackScores] = {}
    for track in common:
        diffs[track] = {}
        for stem, values in model[track].items():
            if stem not in base[track]:
                continue
            diffs[track][stem] = {
                metric: (None if v is None or base[track][stem].get(metric) is None
                         else float(v) - float(base[track][stem][metric]))
                for metric, v in values.items()
            }
    return diffs


def sdr_improvement(scores: Mapping[str, Any], mixture_scores: Mapping[str, Any]) -> TrackScores:
    """Improvement over a baseline (the unprocessed mixture, or the mixture divided by the number of stems) per
    stem and metric: the median over tracks of the paired differences ``model - baseline``, in dB.

    Args:
        scores: a model's result of :func:`train.evaluate.score_folders`.
        mixture_scores: :func:`train.evaluate.score_mixture` (any ``scale``) on the same references.

    Returns:
        ``{stem: {metric: dB | None}}`` over the tracks where both are scored (:func:`paired_differences`).

    Raises:
        ValueError: either argument lacks ``"tracks"``, or they share no track.
    """
    return median_scores(paired_differences(scores, mixture_scores))


def write_scores(scores: Mapping[str, Any], out: Path) -> Path:
    """Write ``scores`` as JSON atomically (temp file + rename); NaN and ±inf become ``null``.

    Returns:
        the path written.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(json_safe(scores), indent=2, allow_nan=False) + "\n"
    write_text_atomic(out, text)
    return out


def read_scores(path: Path) -> dict[str, Any]:
    """Load a scores JSON written by :func:`write_scores`."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def json_safe(obj: Any) -> Any:
    """``obj`` with numpy scalars as Python numbers, tuples as lists and NaN/±inf as ``None`` (inf with a warning:
    :data:`train.bsseval.MAX_DB` clipping should have removed it)."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        if math.isinf(obj):
            logger.warning("write_scores: %s written as null", obj)
        return None
    return obj


__all__ = ["MIXTURE", "MUSDB_STEM_ORDER", "json_safe", "median_scores", "ordered", "paired_differences",
           "read_scores", "sdr_improvement", "write_scores"]
