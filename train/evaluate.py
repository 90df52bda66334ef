"""Evaluation of separated stems in folders: every track of a folder of estimates scored against its references
(:mod:`train.bsseval`: BSSEval v4 SDR by museval, the MUSDB18 convention, and SI-SDR), medians over tracks, the
improvement over the unprocessed mixture, and the scores JSON.

Folders follow the MUSDB18-HQ layout: ``<root>/<track>/<stem>.wav`` (or ``.flac``), optionally under split
folders (``<root>/train/<track>/...``, ``<root>/test/<track>/...``); references may also be native MUSDB18
``<root>/[split/]<track>.stem.mp4`` files. All audio is read through :mod:`stemdb.audio`.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stemdb import audio
from stemdb.atomic import write_text_atomic
from stemdb.errors import StemdbError
from stemdb.shaping import fit_length
from train.bsseval import TrackScores, score_track

logger = logging.getLogger(__name__)

#: The stem holding the mixture in MUSDB18 folders; never a target unless asked for.
MIXTURE = "mixture"

#: MUSDB18's target order; other stems follow alphabetically.
MUSDB_STEM_ORDER: tuple[str, ...] = ("vocals", "drums", "bass", "other", "accompaniment")

#: Endings of stem files in track folders, in order of preference.
STEM_SUFFIXES: tuple[str, ...] = (".wav", ".flac")

#: Split folders that may sit between a root and its track folders.
SPLIT_FOLDERS: frozenset[str] = frozenset({"train", "test", "valid", "validation"})


class EvaluationError(StemdbError, ValueError):
    """Estimates and references cannot be scored together (sample rate, channels, missing track or reference)."""


class MissingEstimateError(StemdbError, FileNotFoundError):
    """An estimate file the evaluation needs does not exist; ``path`` names the file that was expected."""

    def __init__(self, path: str | Path, reason: str = "estimate file missing") -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


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
        workers: tracks scored in parallel (a ``spawn`` process pool when > 1, each worker with its share of the
            cores as BLAS threads;
            a script calling this needs the ``if __name__ == "__main__":`` guard). museval needs about 2.3 GB
            per worker for a 60 s 4-stem track and grows with track length (its FFTs span the whole track).
        window_s, hop_s: BSSEval window and hop in seconds.
        on_track: called as ``on_track(track, done, total)`` after each track (progress display).

    Returns:
        ``{"median": {STEM: {"SDR": x, "SI-SDR": y}}, "tracks": {TRACK: {STEM: {"SDR": x, "SI-SDR": y}}}}`` in dB,
        medians over the tracks where the stem was scored, ``None`` where it was not.

    Raises:
        MissingEstimateError: an estimate file is missing (its expected path is named).
        EvaluationError: no estimate tracks, a track without a reference, a missing reference stem, or a sample
            rate / channel mismatch.
    """
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
        jobs.append(_TrackJob(ref, track_stems, est_paths, window_s, hop_s))
    return _run_jobs(jobs, workers=workers, on_track=on_track)


def score_mixture(
    references: Path,
    *,
    tracks: Iterable[str] | None = None,
    stems: Iterable[str] | None = None,
    workers: int = 1,
    window_s: float = 1.0,
    hop_s: float = 1.0,
    on_track: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Score the unprocessed mixture as the estimate of every stem (the identity "model"), the baseline for
    :func:`sdr_improvement`. Same arguments and result shape as :func:`score_folders`; ``tracks`` limits the
    reference tracks scored (default: all).

    Raises:
        EvaluationError: a named track is not in ``references``, or a track has no mixture.
    """
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
        jobs.append(_TrackJob(ref, _track_stems(ref, stems), None, window_s, hop_s))
    return _run_jobs(jobs, workers=workers, on_track=on_track)


def median_scores(tracks: Mapping[str, TrackScores]) -> TrackScores:
    """Per stem and metric, the median over tracks of the non-``None`` values (``None`` if there are none)."""
    stems = _ordered({s for t in tracks.values() for s in t})
    metrics = _ordered({m for t in tracks.values() for v in t.values() for m in v}, order=("SDR", "SI-SDR"))
    out: TrackScores = {}
    for stem in stems:
        out[stem] = {}
        for metric in metrics:
            vals = [t[stem].get(metric) for t in tracks.values() if stem in t]
            vals = [float(v) for v in vals if v is not None and not math.isnan(v)]
            out[stem][metric] = float(np.median(vals)) if vals else None
    return out


def sdr_improvement(scores: Mapping[str, Any], mixture_scores: Mapping[str, Any]) -> TrackScores:
    """Improvement over the unprocessed mixture per stem: median over tracks of (model - mixture), in dB.

    Args:
        scores: a model's result of :func:`score_folders`.
        mixture_scores: :func:`score_mixture` (or identity-model :func:`score_folders`) on the same references.

    Returns:
        ``{stem: {"SDR": dB | None, "SI-SDR": dB | None}}``: the median of the per-track paired differences over
        the tracks where both are scored (``None`` where there is none). Tracks in only one of the two are
        ignored (with a warning).

    Raises:
        ValueError: either argument lacks ``"tracks"``, or they share no track.
    """
    for label, s in (("scores", scores), ("mixture_scores", mixture_scores)):
        if not isinstance(s, Mapping) or "tracks" not in s:
            raise ValueError(f"{label} has no 'tracks' key; allowed: the dict score_folders returns")
    model, base = scores["tracks"], mixture_scores["tracks"]
    common = sorted(set(model) & set(base))
    if not common:
        raise ValueError("scores and mixture_scores share no track; allowed: scores of the same references")
    only = sorted(set(model) ^ set(base))
    if only:
        logger.warning("sdr_improvement: %d track(s) scored on one side only, ignored: %s", len(only), only)
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
    return median_scores(diffs)


def write_scores(scores: Mapping[str, Any], out: Path) -> Path:
    """Write ``scores`` as JSON atomically (temp file + rename); NaN and ±inf become ``null``.

    Returns:
        the path written.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_json_safe(scores), indent=2, allow_nan=False) + "\n"
    write_text_atomic(out, text)
    return out


def read_scores(path: Path) -> dict[str, Any]:
    """Load a scores JSON written by :func:`write_scores`."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


# --------------------------------------------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _TrackJob:
    ref: ReferenceTrack
    stems: tuple[str, ...]
    est_paths: dict[str, Path] | None  # None: the mixture is the estimate of every stem
    window_s: float
    hop_s: float


def _run_jobs(
    jobs: list[_TrackJob], *, workers: int, on_track: Callable[[str, int, int], None] | None
) -> dict[str, Any]:
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r}; allowed: an integer >= 1")
    jobs = sorted(jobs, key=lambda j: j.ref.name)
    t0 = time.perf_counter()
    results: dict[str, TrackScores] = {}

    def done(name: str, track_scores: TrackScores) -> None:
        results[name] = track_scores
        logger.info("scored %s (%d/%d)", name, len(results), len(jobs))
        if on_track is not None:
            on_track(name, len(results), len(jobs))

    if workers == 1 or len(jobs) == 1:
        for job in jobs:
            done(job.ref.name, _score_job(job))
    else:
        ctx = multiprocessing.get_context("spawn")  # safe with torch/OpenMP threads in the parent
        procs = min(workers, len(jobs))
        threads = max(1, (os.cpu_count() or 1) // procs)  # BLAS threads per worker: the cores, shared out
        with ProcessPoolExecutor(max_workers=procs, mp_context=ctx) as pool:
            futures = [(job.ref.name, pool.submit(_score_job_limited, job, threads)) for job in jobs]
            for name, fut in futures:
                done(name, fut.result())
    tracks = {name: results[name] for name in sorted(results)}
    n_stems = sum(len(t) for t in tracks.values())
    logger.info("scored %d tracks (%d stems) in %.1f s", len(tracks), n_stems, time.perf_counter() - t0)
    return {"median": median_scores(tracks), "tracks": tracks}


def _score_job_limited(job: _TrackJob, threads: int) -> TrackScores:
    """:func:`_score_job` with at most ``threads`` BLAS/OpenMP threads (a pool worker's share of the cores)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scipy's usual stacks
        return _score_job(job)
    with threadpool_limits(limits=threads):
        return _score_job(job)


def _score_job(job: _TrackJob) -> TrackScores:
    refs, sr = _load_references(job.ref, job.stems, with_mixture=job.est_paths is None)
    if job.est_paths is None:
        ests = {stem: refs[MIXTURE] for stem in job.stems}
    else:
        ests = {}
        for stem, path in job.est_paths.items():
            est, est_sr = audio.read(path)
            if est_sr != sr:
                raise EvaluationError(f"{path}: sample rate {est_sr} Hz, references of {job.ref.name!r} are {sr} Hz")
            if est.shape[0] != refs[stem].shape[0]:
                raise EvaluationError(
                    f"{path}: {est.shape[0]} channel(s), the reference of {stem!r} has {refs[stem].shape[0]}"
                )
            ests[stem] = est
    return score_track(refs, ests, sr, window_s=job.window_s, hop_s=job.hop_s)


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
        return tuple(_ordered(found))
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


def _ordered(names: Iterable[str], order: tuple[str, ...] = (MIXTURE, *MUSDB_STEM_ORDER)) -> list[str]:
    rank = {n: i for i, n in enumerate(order)}
    return sorted(set(names), key=lambda n: (rank.get(n, len(rank)), n))


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        if math.isinf(obj):
            logger.warning("write_scores: %s written as null", obj)
        return None
    return obj
