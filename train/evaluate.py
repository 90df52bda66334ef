"""Evaluation of separated stems in folders: every track of a folder of estimates scored against its references
(:mod:`train.bsseval`: BSSEval v4 SDR, SIR, SAR, ISR by museval, the MUSDB18 convention, SI-SDR and the level
error), the baselines (the unprocessed mixture, or the mixture divided by the number of stems, as the estimate of
every stem), medians over tracks, the improvement over a baseline, and the scores JSON (:mod:`train.scores`).

Folders follow the MUSDB18-HQ layout: ``<root>/<track>/<stem>.wav`` (or ``.flac``), optionally under split
folders (``<root>/train/<track>/...``, ``<root>/test/<track>/...``); references may also be native MUSDB18
``<root>/[split/]<track>.stem.mp4`` files. All audio is read through :mod:`stemdb.audio`.

Scoring runs one track per job (:class:`TrackJob`) in a ``spawn`` process pool (:func:`score_jobs`) whose size is
bounded by the cores and by the memory museval needs for the longest track (:func:`scoring_workers`).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stemdb import audio
from stemdb.errors import PathError, StemdbError
from stemdb.shaping import fit_length
from stemdb.workers import process_pool
from train.bsseval import TrackScores, estimate_problem, score_track
from train.scores import (
    MIXTURE,
    MUSDB_STEM_ORDER,
    median_scores,
    ordered,
    read_scores,
    sdr_improvement,
    write_scores,
)

logger = logging.getLogger(__name__)

#: Endings of stem files in track folders, in order of preference.
STEM_SUFFIXES: tuple[str, ...] = (".wav", ".flac")

#: Split folders that may sit between a root and its track folders.
SPLIT_FOLDERS: frozenset[str] = frozenset({"train", "test", "valid", "validation"})

#: Peak memory of museval scoring one 4-stem stereo track: about ``MUSEVAL_BASE_BYTES`` plus
#: ``MUSEVAL_BYTES_PER_S`` per second of the track (measured: 0.79 GB at 5 s, 1.17 GB at 20 s, 1.56 GB at 36 s).
MUSEVAL_BASE_BYTES: int = 700 * 2**20
MUSEVAL_BYTES_PER_S: int = 25 * 2**20


class EvaluationError(StemdbError, ValueError):
    """Estimates and references cannot be scored together (sample rate, channels, missing track or reference)."""


class MissingEstimateError(PathError, FileNotFoundError):
    """An estimate file the evaluation needs does not exist; ``path`` names the file that was expected."""


# --------------------------------------------------------------------------------------------------------------
# Scoring folders
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReferenceTrack:
    """Where one reference track lives: a folder of stem files, or a native ``.stem.mp4``."""

    name: str
    path: Path

    @property
    def is_stem_mp4(self) -> bool:
        return audio.is_stem_mp4(self.path)

    def stems(self) -> tuple[str, ...]:
        """Stem names available (``mixture`` included)."""
        if self.is_stem_mp4:
            return audio.STEM_MP4_STREAMS
        return tuple(sorted({p.stem for p in self.path.iterdir() if p.suffix.lower() in STEM_SUFFIXES}))

    def stem_path(self, stem: str) -> Path | None:
        """The file holding ``stem`` (the ``.stem.mp4`` itself for native files), or ``None``."""
        if self.is_stem_mp4:
            return self.path if stem in audio.STEM_MP4_STREAMS else None
        return _stem_file(self.path, stem)


def find_tracks(root: Path, *, allow_stem_mp4: bool = False) -> dict[str, Path]:
    """Track name -> track folder (or ``.stem.mp4`` file) under ``root``, a MUSDB18-style folder.

    A track folder is a folder holding ``.wav``/``.flac`` files; it may sit directly in ``root`` or one level
    down in a split folder (``train``, ``test``, ...). With ``allow_stem_mp4``, ``<track>.stem.mp4`` files count too.

    Raises:
        EvaluationError: ``root`` is not a folder, or one track name appears twice (e.g. in train and test).
    """
    root = Path(root)
    if not root.is_dir():
        raise EvaluationError(f"{root}: not a folder of tracks")
    found: dict[str, Path] = {}

    def add(name: str, path: Path) -> None:
        if name in found:
            raise EvaluationError(f"track {name!r} appears twice: {found[name]} and {path}")
        found[name] = path

    for child in sorted(root.iterdir()):
        if child.is_dir() and _has_stem_files(child):
            add(child.name, child)
        elif child.is_dir() and child.name.lower() in SPLIT_FOLDERS:
            for sub in sorted(child.iterdir()):
                if sub.is_dir() and _has_stem_files(sub):
                    add(sub.name, sub)
                elif allow_stem_mp4 and sub.is_file() and audio.is_stem_mp4(sub):
                    add(sub.name[: -len(".stem.mp4")], sub)
        elif allow_stem_mp4 and child.is_file() and audio.is_stem_mp4(child):
            add(child.name[: -len(".stem.mp4")], child)
    return found


def score_folders(
    estimates: Path,
    references: Path,
    *,
    stems: Iterable[str] | None = None,
    workers: int = 1,
    window_s: float = 1.0,
    hop_s: float = 1.0,
    on_track: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Score every track folder of ``estimates`` against its namesake in ``references``.

    Args:
        estimates: ``EST/<track>/<stem>.wav`` (or ``.flac``; split folders allowed).
        references: ``REF/<track>/<stem>.{wav,flac}``: a MUSDB18-HQ root (``train/``, ``test/``), a flat folder
            of tracks, or native ``.stem.mp4`` files. Tracks are matched by name; reference tracks without
            estimates are ignored.
        stems: stems to score; ``None`` scores every reference stem except ``mixture``. ``"accompaniment"`` may
            be asked for even when the references lack it (it is then the sum of the other non-vocal stems).
        workers: tracks scored in parallel at most (:func:`score_jobs`; a script calling this with ``workers > 1``
            needs the ``if __name__ == "__main__":`` guard).
        window_s, hop_s: BSSEval window and hop in seconds.
        on_track: called as ``on_track(track, done, total)`` after each track (progress display).

    Returns:
        ``{"median": {STEM: {METRIC: x}}, "tracks": {TRACK: {STEM: {METRIC: x}}}}`` in dB with the metrics of
        :data:`train.bsseval.METRICS` (SDR, SIR, SAR, ISR, SI-SDR, level_error); medians over the tracks where the
        stem was scored, ``None`` where it was not.

    Raises:
        MissingEstimateError: an estimate file is missing (its expected path is named).
        EvaluationError: no estimate tracks, a track without a reference, a missing reference stem, or a sample
            rate / channel mismatch.
    """
    jobs = folder_jobs(estimates, references, stems=stems, window_s=window_s, hop_s=hop_s)
    return scores_table(jobs, score_jobs(jobs, workers=workers, on_track=on_track))


def score_mixture(
    references: Path,
    *,
    tracks: Iterable[str] | None = None,
    stems: Iterable[str] | None = None,
    scale: float = 1.0,
    workers: int = 1,
    window_s: float = 1.0,
    hop_s: float = 1.0,
    on_track: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Score ``scale`` times the unprocessed mixture as the estimate of every stem (``scale=1``: the identity
    "model"; ``scale=1/N`` for N stems: the mixture divided by the number of stems, a baseline that SDR's
    punishment of scale does not flatter), the baseline for :func:`train.scores.sdr_improvement`. Same arguments
    and result shape as :func:`score_folders`; ``tracks`` limits the reference tracks scored (default: all).

    Raises:
        EvaluationError: a named track is not in ``references``, or a track has no mixture.
        ValueError: ``scale`` is not a positive finite number.
    """
    jobs = mixture_jobs(references, tracks=tracks, stems=stems, scale=scale, window_s=window_s, hop_s=hop_s)
    return scores_table(jobs, score_jobs(jobs, workers=workers, on_track=on_track))


@dataclass(frozen=True)
class TrackJob:
    """One track to score: its references, the stems, the estimate files (``None``: ``scale`` times the mixture is
    the estimate of every stem), BSSEval window and hop in seconds, and a ``label`` to tell jobs apart."""

    ref: ReferenceTrack
    stems: tuple[str, ...]
    est_paths: dict[str, Path] | None
    window_s: float = 1.0
    hop_s: float = 1.0
    scale: float = 1.0
    label: str = ""

    def seconds(self) -> float:
        """The reference track's duration in seconds (from its mixture or first stem's header)."""
        stem = MIXTURE if self.ref.stem_path(MIXTURE) is not None else self.stems[0]
        path = self.ref.stem_path(stem) or self.ref.path
        info = audio.info(path, stream=0 if self.ref.is_stem_mp4 else None)
        return info.frames / info.sample_rate


def folder_jobs(estimates: Path, references: Path, *, stems: Iterable[str] | None = None, window_s: float = 1.0,
                hop_s: float = 1.0, label: str = "") -> list[TrackJob]:
    """The :class:`TrackJob` of every track folder of ``estimates`` (see :func:`score_folders`)."""
    est_tracks = find_tracks(Path(estimates))
    if not est_tracks:
        raise EvaluationError(f"{estimates}: no track folders with .wav/.flac stems")
    ref_tracks = find_tracks(Path(references), allow_stem_mp4=True)
    jobs = []
    for name, est_dir in est_tracks.items():
        if name not in ref_tracks:
            raise EvaluationError(f"{est_dir}: no reference track named {name!r} under {references}")
        ref = ReferenceTrack(name, ref_tracks[name])
        track_stems = _track_stems(ref, stems)
        est_paths = {}
        for stem in track_stems:
            path = _stem_file(est_dir, stem)
            if path is None:
                raise MissingEstimateError(est_dir / f"{stem}.wav", f"estimate of {stem!r} for track {name!r} missing")
            est_paths[stem] = path
        jobs.append(TrackJob(ref, track_stems, est_paths, window_s, hop_s, label=label))
    return jobs


def mixture_jobs(references: Path, *, tracks: Iterable[str] | None = None, stems: Iterable[str] | None = None,
                 scale: float = 1.0, window_s: float = 1.0, hop_s: float = 1.0, label: str = "") -> list[TrackJob]:
    """The :class:`TrackJob` of every reference track (or of ``tracks``) with ``scale`` times the mixture as the
    estimate (see :func:`score_mixture`)."""
    if not (isinstance(scale, int | float) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale={scale!r}; allowed: a positive finite number")
    ref_tracks = find_tracks(Path(references), allow_stem_mp4=True)
    names = sorted(ref_tracks) if tracks is None else list(tracks)
    if not names:
        raise EvaluationError(f"{references}: no reference tracks")
    jobs = []
    for name in names:
        if name not in ref_tracks:
            raise EvaluationError(f"track {name!r} not found under {references}")
        ref = ReferenceTrack(name, ref_tracks[name])
        if ref.stem_path(MIXTURE) is None:
            raise EvaluationError(f"{ref.path}: no {MIXTURE}.wav/.flac to use as the identity estimate")
        jobs.append(TrackJob(ref, _track_stems(ref, stems), None, window_s, hop_s, float(scale), label))
    return jobs


def scores_table(jobs: Sequence[TrackJob], results: Sequence[TrackScores]) -> dict[str, Any]:
    """``{"median", "tracks"}`` of jobs of one estimate set and their :func:`score_jobs` results, tracks by name."""
    tracks = {job.ref.name: r for job, r in sorted(zip(jobs, results, strict=True), key=lambda p: p[0].ref.name)}
    return {"median": median_scores(tracks), "tracks": tracks}


def scoring_workers(jobs: Sequence[TrackJob], requested: int, *, available: int | None = None) -> int:
    """How many jobs to score at once: at most ``requested``, the cores, the jobs, and what the available memory
    holds of museval's peak for the longest track (:data:`MUSEVAL_BASE_BYTES` + :data:`MUSEVAL_BYTES_PER_S` per
    second), keeping a quarter of it free; never less than 1.

    Args:
        available: bytes of memory to plan with (default: ``psutil.virtual_memory().available``).
    """
    if not isinstance(requested, int) or requested < 1:
        raise ValueError(f"workers={requested!r}; allowed: an integer >= 1")
    if requested == 1 or len(jobs) <= 1:
        return 1
    if available is None:
        import psutil

        available = int(psutil.virtual_memory().available)
    longest = max(job.seconds() for job in jobs)
    per_job = MUSEVAL_BASE_BYTES + MUSEVAL_BYTES_PER_S * longest
    by_memory = int(0.75 * available // per_job)
    n = max(1, min(requested, os.cpu_count() or 1, len(jobs), by_memory))
    if n < min(requested, len(jobs)):
        logger.info("scoring with %d process(es), not %d: %.1f s tracks need about %.1f GB each, %.1f GB available",
                    n, requested, longest, per_job / 2**30, available / 2**30)
    return n


def score_jobs(jobs: Sequence[TrackJob], *, workers: int = 1,
               on_track: Callable[[str, int, int], None] | None = None) -> list[TrackScores]:
    """Score every job; the results in the order of ``jobs``.

    Jobs of one reference track (same stems, window and hop) are scored together (:func:`score_group`: the
    references read and their correlations factorized once). Groups run in a ``spawn`` process pool of
    :func:`scoring_workers` processes when that is above 1, each with its share of the cores as BLAS threads and a
    fresh process every few groups so museval's peak memory is given back.

    Raises:
        ValueError: ``workers`` is not an integer >= 1.
    """
    groups: dict[tuple, list[int]] = {}
    for i, job in enumerate(jobs):
        groups.setdefault((str(job.ref.path), job.stems, job.window_s, job.hop_s), []).append(i)
    batches = [[jobs[i] for i in idx] for idx in groups.values()]
    procs = scoring_workers([b[0] for b in batches], workers)
    t0 = time.perf_counter()
    results: list[Any] = [None] * len(jobs)
    done = 0

    def finished(idx: list[int], scores: list[TrackScores]) -> None:
        nonlocal done
        for i, one in zip(idx, scores, strict=True):
            results[i], job = one, jobs[i]
            done += 1
            logger.info("scored %s%s (%d/%d)", job.ref.name, f" [{job.label}]" if job.label else "", done, len(jobs))
            if on_track is not None:
                on_track(job.ref.name, done, len(jobs))

    if procs == 1:
        for idx, batch in zip(groups.values(), batches, strict=True):
            finished(idx, score_group(batch))
    else:
        ctx = multiprocessing.get_context("spawn")  # safe with torch/OpenMP threads in the parent
        threads = max(1, (os.cpu_count() or 1) // procs)  # BLAS threads per worker: the cores, shared out
        with process_pool(procs, mp_context=ctx, max_tasks_per_child=4) as pool:
            futures = [pool.submit(_score_group_limited, batch, threads) for batch in batches]
            for idx, fut in zip(groups.values(), futures, strict=True):
                finished(idx, fut.result())
    logger.info("scored %d estimate sets of %d tracks with %d process(es) in %.1f s", len(jobs), len(batches), procs,
                time.perf_counter() - t0)
    return results


def score_job(job: TrackJob) -> TrackScores:
    """Read one job's references and estimates and score them (:func:`train.bsseval.score_track`).

    Raises:
        EvaluationError: a sample rate or channel count that does not match the references.
    """
    return score_group([job])[0]


def score_group(jobs: Sequence[TrackJob]) -> list[TrackScores]:
    """Score jobs of one reference track (same stems, window, hop): the references are read once and their
    correlation matrix factorized once for all of them (:func:`train.bsseval.score_track`'s ``factors``).

    Raises:
        EvaluationError: a sample rate or channel count that does not match the references.
    """
    first = jobs[0]
    refs, sr = _load_references(first.ref, first.stems, with_mixture=any(j.est_paths is None for j in jobs))
    factors: dict = {}
    return [score_track(refs, _estimates(job, refs, sr), sr, window_s=job.window_s, hop_s=job.hop_s, factors=factors)
            for job in jobs]


def _estimates(job: TrackJob, refs: dict[str, np.ndarray], sr: int) -> dict[str, np.ndarray]:
    """One job's estimates: ``scale`` times the mixture for every stem, or its files (checked against ``refs``)."""
    if job.est_paths is None:
        scaled = refs[MIXTURE] * np.float32(job.scale) if job.scale != 1.0 else refs[MIXTURE]
        return dict.fromkeys(job.stems, scaled)
    ests = {}
    for stem, path in job.est_paths.items():
        est, est_sr = audio.read(path)
        if est_sr != sr:
            raise EvaluationError(f"{path}: sample rate {est_sr} Hz, references of {job.ref.name!r} are {sr} Hz")
        if est.shape[0] != refs[stem].shape[0]:
            raise EvaluationError(f"{path}: {est.shape[0]} channel(s), the reference of {stem!r} has "
                                  f"{refs[stem].shape[0]}")
        if why := estimate_problem(est, refs[stem].shape[1], sr):  # NaN/inf, or a length padding would hide
            raise EvaluationError(f"{path}: {why}")
        ests[stem] = est
    return ests


# --------------------------------------------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------------------------------------------


def _score_group_limited(jobs: list[TrackJob], threads: int) -> list[TrackScores]:
    """:func:`score_group` with at most ``threads`` BLAS/OpenMP threads (a pool worker's share of the cores)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scipy's usual stacks
        return score_group(jobs)
    with threadpool_limits(limits=threads):
        return score_group(jobs)


def _load_references(ref: ReferenceTrack, stems: tuple[str, ...], *, with_mixture: bool) -> tuple[dict, int]:
    wanted = list(stems) + ([MIXTURE] if with_mixture and MIXTURE not in stems else [])
    derive_acc = "accompaniment" in wanted and ref.stem_path("accompaniment") is None
    if derive_acc:
        wanted.remove("accompaniment")
        wanted += [s for s in ref.stems() if s not in ("vocals", MIXTURE, "accompaniment") and s not in wanted]
    out: dict[str, np.ndarray] = {}
    rate = 0
    if ref.is_stem_mp4:
        idx = [audio.STEM_MP4_STREAMS.index(s) for s in wanted]
        data, rate = audio.read_stem_mp4(ref.path, streams=idx)
        out = dict(zip(wanted, data, strict=True))
    else:
        for stem in wanted:
            path = ref.stem_path(stem)
            if path is None:
                raise EvaluationError(f"{ref.path}: reference stem {stem!r} missing (no {stem}.wav or .flac)")
            out[stem], sr = audio.read(path)
            if rate and sr != rate:
                raise EvaluationError(f"{path}: sample rate {sr} Hz, other stems of {ref.name!r} are {rate} Hz")
            rate = sr
    if derive_acc:
        parts = [out[s] for s in out if s not in ("vocals", MIXTURE)]
        n = max(p.shape[-1] for p in parts)
        out["accompaniment"] = sum(fit_length(p, n) for p in parts)
    return out, rate


def _track_stems(ref: ReferenceTrack, stems: Iterable[str] | None) -> tuple[str, ...]:
    if stems is None:
        found = [s for s in ref.stems() if s != MIXTURE]
        if not found:
            raise EvaluationError(f"{ref.path}: no reference stems besides {MIXTURE}")
        return tuple(ordered(found))
    chosen = tuple(dict.fromkeys(stems))
    if not chosen:
        raise ValueError("stems=[] ; allowed: None or a non-empty list of stem names")
    for stem in chosen:
        if ref.stem_path(stem) is None and stem != "accompaniment":
            raise EvaluationError(f"{ref.path}: reference stem {stem!r} missing (no {stem}.wav or .flac)")
    return chosen


def _stem_file(folder: Path, stem: str) -> Path | None:
    for suffix in STEM_SUFFIXES:
        p = folder / f"{stem}{suffix}"
        if p.is_file():
            return p
    return None


def _has_stem_files(folder: Path) -> bool:
    return any(p.suffix.lower() in STEM_SUFFIXES and p.is_file() for p in folder.iterdir())


__all__ = ["MIXTURE", "MUSDB_STEM_ORDER", "EvaluationError", "MissingEstimateError", "ReferenceTrack", "TrackJob",
           "find_tracks", "folder_jobs", "median_scores", "mixture_jobs", "read_scores", "score_folders", "score_group",
           "score_job", "score_jobs", "score_mixture", "scores_table", "scoring_workers", "sdr_improvement",
           "write_scores"]
