"""Scoring a comparison: the two baselines (the unprocessed mixture, and the mixture divided by the number of
stems, each scored once per comparison) and every run's separated held-out songs, all as :class:`TrackJob`s of one
process pool (:func:`train.evaluate.score_jobs`: parallel over songs and runs, bounded by cores and memory).

Scores are cached: ``<run>/scores.json`` holds the checkpoint it scored and ``baselines.json`` the test set it
scored; a rerun scores only what changed. The cost is measured: seconds of scoring wall time per minute of
audio scored.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from train.compare.runner import ESTIMATES, RUN_RECORD, Comparison
from train.evaluate import TrackJob, folder_jobs, mixture_jobs, score_jobs, scores_table
from train.scores import read_scores, write_scores

logger = logging.getLogger(__name__)

BASELINES = "baselines.json"
SCORES = "scores.json"
#: The two baselines every table shows, in the order they are shown.
BASELINE_KEYS: tuple[str, ...] = ("mixture_n", "mixture")


def score_comparison(comp: Comparison, targets: tuple[str, ...]) -> dict[str, Any]:
    """Score what is not scored yet; returns ``{"baselines": {key: scores}, "runs": {variant: {seed: scores}},
    "timing": {...}}`` (scores: :func:`train.evaluate.score_folders`' shape)."""
    ho = comp.heldout
    stamp = {"root": str(ho.root), "tracks": list(ho.tracks), "targets": list(targets)}
    cached_base = _cached(comp.out / BASELINES, stamp)
    jobs: list[TrackJob] = []
    if cached_base is None:
        for key in BASELINE_KEYS:
            scale = 1.0 / len(targets) if key == "mixture_n" else 1.0
            jobs += mixture_jobs(ho.root, tracks=ho.tracks, stems=targets, scale=scale, label=key)
    run_stamps: dict[str, dict[str, Any]] = {}
    cached_runs: dict[str, dict[str, Any]] = {}
    for spec in comp.specs:
        folder = comp.run_dir(spec.folder)
        record = _read_json(folder / RUN_RECORD)
        run_stamps[spec.key] = {**stamp, "checkpoint": record.get("checkpoint")}
        hit = _cached(folder / SCORES, run_stamps[spec.key])
        if hit is not None:
            cached_runs[spec.key] = hit
        else:
            jobs += [j for j in folder_jobs(folder / ESTIMATES, ho.root, stems=targets, label=spec.key)
                     if j.ref.name in ho.tracks]
    t0 = time.perf_counter()
    results = score_jobs(jobs, workers=comp.cfg.scoring.workers) if jobs else []
    wall = time.perf_counter() - t0
    by_label: dict[str, tuple[list[TrackJob], list[Any]]] = {}
    for job, res in zip(jobs, results, strict=True):
        by_label.setdefault(job.label, ([], []))[0].append(job)
        by_label[job.label][1].append(res)
    baselines = cached_base or {k: scores_table(*by_label[k]) for k in BASELINE_KEYS}
    if cached_base is None:
        write_scores({"stamp": stamp, **baselines}, comp.out / BASELINES)
    runs: dict[str, dict[str, Any]] = {}
    for spec in comp.specs:
        scores = cached_runs.get(spec.key)
        if scores is None:
            scores = scores_table(*by_label[spec.key])
            write_scores({"stamp": run_stamps[spec.key], **scores}, comp.run_dir(spec.folder) / SCORES)
        runs.setdefault(spec.variant, {})[str(spec.seed)] = {"median": scores["median"], "tracks": scores["tracks"]}
    audio_min = sum(ho.seconds[j.ref.name] for j in jobs) / 60.0
    timing = {"jobs": len(jobs), "wall_s": round(wall, 3), "audio_minutes": round(audio_min, 4),
              "s_per_audio_minute": round(wall / audio_min, 3) if audio_min else None}
    if jobs:
        logger.info("scored %d tracks (%.2f min of audio) in %.1f s: %.2f s per minute of audio", len(jobs),
                    audio_min, wall, timing["s_per_audio_minute"])
    return {"baselines": {k: baselines[k] for k in BASELINE_KEYS}, "runs": runs, "timing": timing}


def _cached(path: Path, stamp: dict[str, Any]) -> dict[str, Any] | None:
    """The scores stored at ``path`` when they were made for ``stamp``, else ``None``."""
    try:
        data = read_scores(path)
    except (OSError, ValueError):
        return None
    return data if data.get("stamp") == json.loads(json.dumps(stamp)) else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


__all__ = ["BASELINES", "BASELINE_KEYS", "SCORES", "score_comparison"]
