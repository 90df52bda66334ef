"""The numbers of a comparison: per variant, stem and metric the median over seeds and songs with its spread, the
improvement over each baseline, and each variant's difference to ``real`` with an honest verdict.

Spread: ``seeds`` is the range of the per-seed medians (over songs), ``songs`` the range of the per-song medians
(over seeds). A difference to ``real`` is paired: for each seed, the median over songs of (variant - real) on the
same song, both trained from that seed. The verdict says "better/worse by x dB in n of n seeds" only when every
seed's difference has the same sign (x: the median over seeds), else "within seed spread".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from train.bsseval import METRICS

#: The variant every other is compared with (the "MUSDB18 only" baseline of the research report).
REFERENCE_VARIANT = "real"
#: Metrics whose difference to ``real`` gets a verdict; the level error is judged by its distance from 0 dB.
VERDICT_METRICS: tuple[str, ...] = ("SDR", "SIR", "level_error")

Scores = Mapping[str, Any]  # {"median", "tracks": {song: {stem: {metric: dB}}}}


def values(by_seed: Mapping[str, Scores], stem: str, metric: str) -> dict[str, dict[str, float]]:
    """``{seed: {song: value}}`` of one stem and metric, the scored (non-``None``) values only."""
    out: dict[str, dict[str, float]] = {}
    for seed, scores in by_seed.items():
        for song, stems in scores["tracks"].items():
            v = stems.get(stem, {}).get(metric)
            if v is not None and math.isfinite(v):
                out.setdefault(seed, {})[song] = float(v)
    return out


def spread(vals: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """Median over every (seed, song) value, the range of per-seed medians and of per-song medians, the count."""
    flat = [v for per in vals.values() for v in per.values()]
    if not flat:
        return {"median": None, "seeds": None, "songs": None, "n": 0}
    seed_meds = [float(np.median(list(per.values()))) for per in vals.values() if per]
    songs = sorted({s for per in vals.values() for s in per})
    song_meds = [float(np.median([per[s] for per in vals.values() if s in per])) for s in songs]
    return {"median": float(np.median(flat)), "seeds": [min(seed_meds), max(seed_meds)],
            "songs": [min(song_meds), max(song_meds)], "n": len(flat)}


def paired(a: Mapping[str, Mapping[str, float]], b: Mapping[str, Mapping[str, float]] | Mapping[str, float], *,
           by_seed: bool = True) -> dict[str, dict[str, float]]:
    """``a - b`` per seed and song over the pairs both hold; ``b`` is ``{seed: {song: v}}`` (paired by seed) or,
    with ``by_seed=False``, ``{song: v}`` (a baseline, the same for every seed)."""
    out: dict[str, dict[str, float]] = {}
    for seed, per in a.items():
        other = b.get(seed, {}) if by_seed else b
        for song, v in per.items():
            if song in other:
                out.setdefault(seed, {})[song] = v - float(other[song])  # type: ignore[arg-type]
    return out


def verdict(per_seed: Sequence[float], *, lower_is_better: bool = False, unit: str = "dB") -> str:
    """"better/worse by x dB in n of n seeds" when every seed agrees in sign (x: the median over seeds), else
    "within seed spread (lo to hi dB over n seeds)"; with one seed no verdict (its value); "not scored" without
    values."""
    vals = [v for v in per_seed if v is not None and math.isfinite(v)]
    n = len(vals)
    if not n:
        return "not scored"
    med = float(np.median(vals))
    if n == 1:
        return f"one seed only ({med:+.2f} {unit}): no seed spread to judge by"
    if all(v > 0 for v in vals) or all(v < 0 for v in vals):
        good = (med < 0) if lower_is_better else (med > 0)
        return f"{'better' if good else 'worse'} by {abs(med):.2f} {unit} in {n} of {n} seeds"
    return f"within seed spread ({min(vals):+.2f} to {max(vals):+.2f} {unit} over {n} seeds)"


def summarize(runs: Mapping[str, Mapping[str, Scores]], baselines: Mapping[str, Scores],
              stems: Sequence[str]) -> dict[str, Any]:
    """``{"table", "improvement", "vs_real"}`` of a comparison's scores (see the module docstring).

    Args:
        runs: ``{variant: {seed: scores}}``.
        baselines: ``{"mixture_n": scores, "mixture": scores}``.
        stems: the targets, in order.
    """
    table: dict[str, Any] = {}
    for name, base in baselines.items():
        table[name] = {s: {m: spread(values({"-": base}, s, m)) for m in METRICS} for s in stems}
        for s in stems:
            for m in METRICS:
                table[name][s][m]["seeds"] = None  # no training, no seeds
    for variant, by_seed in runs.items():
        table[variant] = {s: {m: spread(values(by_seed, s, m)) for m in METRICS} for s in stems}
    improvement: dict[str, Any] = {}
    for name, base in baselines.items():
        improvement[name] = {}
        for variant, by_seed in runs.items():
            improvement[name][variant] = {
                s: {m: spread(paired(values(by_seed, s, m), values({"-": base}, s, m).get("-", {}), by_seed=False))
                    for m in METRICS} for s in stems}
    return {"table": table, "improvement": improvement, "vs_real": vs_reference(runs, stems)}


def vs_reference(runs: Mapping[str, Mapping[str, Scores]], stems: Sequence[str],
                 reference: str = REFERENCE_VARIANT) -> dict[str, Any]:
    """Per variant (not the reference), stem and verdict metric: the per-seed paired differences, their median and
    the verdict; ``{}`` when the reference variant was not run."""
    if reference not in runs:
        return {}
    out: dict[str, Any] = {}
    for variant, by_seed in runs.items():
        if variant == reference:
            continue
        out[variant] = {}
        for s in stems:
            out[variant][s] = {}
            for m in VERDICT_METRICS:
                a, b = values(by_seed, s, m), values(runs[reference], s, m)
                if m == "level_error":  # distance from the reference level: closer to 0 dB is better
                    a = {k: {t: abs(v) for t, v in per.items()} for k, per in a.items()}
                    b = {k: {t: abs(v) for t, v in per.items()} for k, per in b.items()}
                diffs = paired(a, b)
                per_seed = {seed: float(np.median(list(per.values()))) for seed, per in diffs.items() if per}
                out[variant][s][m] = {
                    "per_seed": per_seed, "median": float(np.median(list(per_seed.values()))) if per_seed else None,
                    "verdict": verdict(list(per_seed.values()), lower_is_better=m == "level_error")}
    return out


def text_table(results: Mapping[str, Any], metric: str = "SDR") -> list[str]:
    """Plain-text lines of ``results`` (:func:`train.compare.finish_comparison`): per row (the baselines, then each
    variant) the median ``metric`` per stem over seeds and songs, and per variant its SDR improvement over
    mixture / N and its verdict against ``real`` per stem."""
    stems = list(results["stems"])

    def num(x: float | None) -> str:
        return "n/a" if x is None else f"{x:+.2f}"

    head = f"{'':<22}" + "".join(f"{s[:9]:>10}" for s in stems)
    lines = [f"median {metric} (dB) over seeds and songs", head]
    for row, per in results["table"].items():
        lines.append(f"{row[:22]:<22}" + "".join(f"{num(per[s][metric]['median']):>10}" for s in stems))
    lines += ["SDR improvement over mixture / N (dB, paired per song)", head]
    for variant, per in results["improvement"]["mixture_n"].items():
        lines.append(f"{variant[:22]:<22}" + "".join(f"{num(per[s]['SDR']['median']):>10}" for s in stems))
    for variant, per in results["vs_real"].items():
        for s in stems:
            lines.append(f"{variant} vs real, {s} SDR: {per[s]['SDR']['verdict']}")
    return lines


__all__ = ["REFERENCE_VARIANT", "VERDICT_METRICS", "paired", "spread", "summarize", "text_table", "values",
           "verdict", "vs_reference"]
