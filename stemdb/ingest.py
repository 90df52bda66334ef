"""Ingest: scan sources (:mod:`stemdb.scan`), measure new or changed files in a process pool, commit them to the
catalogue.

The run is incremental and idempotent: a file whose (path, size, mtime) is unchanged since the last run is not
decoded again, files that vanished are marked ``deleted``, and every file that fails becomes a row of the rejects
table with the reason. Measured rows are committed every ``batch_size`` files, so a killed run keeps its finished
batches and a rerun completes the rest.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from stemdb import audio as audio_io
from stemdb import stem_cache
from stemdb.atomic import folder_lock
from stemdb.catalog import SCHEMA_VERSION, Catalog
from stemdb.checks import flag_length_mismatch, leakage, settle_rejects
from stemdb.config import (
    IngestConfig,
    MedleydbLayout,
    MoisesdbLayout,
    MultitrackLayout,
    MusdbLayout,
    SlakhLayout,
    SourceConfig,
    StemsLayout,
)
from stemdb.errors import AudioReadError, MissingDependencyError
from stemdb.ingest_rows import failure_reason, invalid_reason, reject_row, stem_row
from stemdb.ingest_stream import long_file, streamed_job
from stemdb.measure import measure, warm_up_tempo
from stemdb.quality.columns import mark_near_duplicates, quality_columns, quality_counts
from stemdb.scan import FileJob, scan_source
from stemdb.workers import process_pool

log = logging.getLogger(__name__)

@dataclass
class IngestReport:
    """What one ingest run did."""

    scanned: int = 0
    skipped: int = 0
    measured: int = 0
    rejected: int = 0
    deleted: int = 0
    duplicates: int = 0
    unmapped: int = 0
    lossy: int = 0
    leakage: list[str] = field(default_factory=list)
    seconds: float = 0.0
    summary: str = ""

    def line(self) -> str:
        return (
            f"ingest: {self.scanned} files scanned, {self.measured} measured, {self.skipped} unchanged, "
            f"{self.rejected} rejected ({self.unmapped} unmapped), {self.deleted} deleted, {self.duplicates} "
            f"duplicates, {self.lossy} lossy, "
            f"{len(self.leakage)} songs in several splits; {self.seconds:.1f} s | catalogue: {self.summary}"
        )


# --------------------------------------------------------------------------------------------------------------
# measuring (runs in worker processes)


def measure_job(job: FileJob, cfg: IngestConfig, *, catalog: str | Path | None = None) -> tuple[list[dict], list[dict]]:
    """Decode and measure one file. Returns (stem rows, reject rows); never raises for bad audio. With
    ``cfg.cache == "int16"`` and the ``catalog`` folder given, 16-bit PCM stems also go to the stem cache. A file
    longer than :data:`stemdb.ingest_stream.STREAM_MIN_S` is measured block by block (bounded memory)."""

    now = datetime.now(UTC)
    full = Path(job.root) / job.path
    if job.error:
        return [], [reject_row(job, k, job.error, now) for k in job.row_keys()]
    cache_to = catalog if cfg.cache == "int16" else None
    try:
        if job.bytes < 0 or not full.exists():
            raise AudioReadError(full, "unreadable: missing file or dangling link")
        if not job.is_stem_mp4 and (long_info := long_file(full)) is not None:
            return streamed_job(job, cfg, full, long_info, cache_to, now)
        if job.is_stem_mp4:
            decoded, infos = audio_io.load_streams(full)
            kinds = list(job.kinds[: len(decoded)]) + [
                f"stream{i}" for i in range(len(job.kinds), len(decoded))
            ]
        else:
            a, info = audio_io.load(full)
            decoded, infos, kinds = [a], [info], list(job.kinds)
    except (AudioReadError, MissingDependencyError) as exc:
        return [], [reject_row(job, k, str(getattr(exc, "reason", exc)), now) for k in job.row_keys()]
    except Exception as exc:  # noqa: BLE001 - a batch job records every failure and goes on
        return [], [reject_row(job, k, f"unreadable: {type(exc).__name__}: {exc}", now) for k in job.row_keys()]

    rows, rejects = [], []
    keys = job.row_keys() if job.is_stem_mp4 else [f"{job.source}:{job.path}"]
    for i, (a, info, kind) in enumerate(zip(decoded, infos, kinds, strict=False)):
        key = keys[i] if i < len(keys) else f"{job.source}:{job.path}#{i}"
        sr = info.sample_rate
        reason = invalid_reason(a.shape[0] if a.ndim == 2 else 0, a.shape[-1] if a.ndim == 2 else 0, sr,
                                job.max_channels)
        if reason:
            rejects.append(reject_row(job, key, reason, now))
            continue
        try:
            m = measure(a, sr, silence_db=cfg.silence_db, window_s=cfg.silence_window_s, clip_level=cfg.clip_level,
                        tempo=cfg.tempo)
            quality = quality_columns(a, sr, kind)
        except Exception as exc:  # noqa: BLE001 - recorded, never fatal
            rejects.append(reject_row(job, key, failure_reason(exc), now))
            continue
        rows.append({**stem_row(job, key, i if job.is_stem_mp4 else -1, kind, info, m, now, channels=a.shape[0],
                                frames=a.shape[1]), **quality})
        stem_cache.keep(cache_to, info.subtype, m.content_hash, a)
    return rows, rejects


# --------------------------------------------------------------------------------------------------------------
# the run


def plan(jobs: list[FileJob], cat: Catalog) -> tuple[list[FileJob], list[FileJob]]:
    """Split jobs into (to measure, unchanged) by comparing (path, size, mtime) with the catalogue and rejects.
    Rows written by an older schema (no ``codec``: version 1; ``schema_version`` below the current one) count as
    changed, so a rerun fills the new columns."""
    known: dict[str, tuple[int, float]] = {}
    stems = cat.table("stems", columns=["key", "bytes", "mtime", "deleted", "codec", "schema_version"]).to_pandas()
    for k, b, m, d, c, v in zip(stems["key"], stems["bytes"], stems["mtime"], stems["deleted"], stems["codec"],
                                stems["schema_version"], strict=True):
        if not d and isinstance(c, str) and v == SCHEMA_VERSION:
            known[k] = (int(b), float(m))
    rej = cat.table("rejects", columns=["key", "bytes", "mtime"]).to_pandas()
    for k, b, m in zip(rej["key"], rej["bytes"], rej["mtime"], strict=True):
        known.setdefault(k, (int(b), float(m)))
    todo, same = [], []
    for j in jobs:
        keys = j.row_keys()
        hit = [known.get(k) for k in keys] if not j.is_stem_mp4 else [known.get(f"{j.source}:{j.path}#0")]
        unchanged = all(h is not None and h[0] == j.bytes and h[1] == j.mtime for h in hit)
        (same if unchanged else todo).append(j)
    return todo, same


def ingest_sources(
    sources: Iterable[SourceConfig],
    catalog: str | Path,
    *,
    cfg: IngestConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> IngestReport:
    """Ingest every source into the catalogue folder (created when missing) and return what was done.

    Bad files never stop the run: they become rows of the rejects table. One ingest writes a catalogue at a time.

    Raises:
        BusyError: another ingest is writing the catalogue (its pid is named).
    """
    t0 = time.perf_counter()
    cfg = cfg or IngestConfig()
    sources = list(sources)
    for src in sources:  # a missing source root fails here, before anything is written
        if not Path(src.root).is_dir():
            raise AudioReadError(src.root, f"source {src.name!r}: root folder does not exist")
    with folder_lock(catalog, "stemdb ingest"):
        report = _ingest_jobs(sources, catalog, cfg, progress)
    report.seconds = time.perf_counter() - t0
    log.debug(report.line())  # the caller prints or publishes the summary: once
    return report


def _ingest_jobs(sources: list[SourceConfig], catalog: str | Path, cfg: IngestConfig,
                 progress: Callable[[int, int], None] | None) -> IngestReport:
    cat = Catalog.create(catalog)
    cat.set_source_roots({s.name: str(Path(s.root).resolve()) for s in sources})
    report = IngestReport()
    all_jobs: list[FileJob] = []
    for src in sources:
        all_jobs.extend(scan_source(src, cache=cat.root / "cache", taxonomy=cfg.taxonomy))
    report.scanned = len(all_jobs)
    todo, same = plan(all_jobs, cat)
    report.skipped = len(same)
    rows_n, rej_n = _measure_all(todo, cat, cfg, progress)
    report.measured, report.rejected = rows_n, rej_n
    report.deleted = mark_deleted(
        cat, {s.name for s in sources}, {k for j in all_jobs for k in j.row_keys()}
    )
    report.duplicates, report.leakage = finalize(cat)
    if cfg.cache == "int16":
        stem_cache.fill(cat.root)  # stems measured before the cache was on; logs the cache's size
    report.unmapped, report.lossy = quality_counts(cat)
    report.summary = cat.summary().line()
    return report


def _measure_all(
    todo: list[FileJob], cat: Catalog, cfg: IngestConfig, progress: Callable[[int, int], None] | None
) -> tuple[int, int]:
    n_rows = n_rej = 0
    buf_rows: list[dict] = []
    buf_rej: list[dict] = []
    done = 0

    def take(result: tuple[list[dict], list[dict]]) -> None:
        nonlocal n_rows, n_rej, done
        r, j = result
        buf_rows.extend(r)
        buf_rej.extend(j)
        n_rows += len(r)
        n_rej += len(j)
        done += 1
        if progress:
            progress(done, len(todo))
        if done % cfg.batch_size == 0:
            _commit(cat, buf_rows, buf_rej)

    workers = cfg.workers or (os.cpu_count() or 1)
    if workers <= 1 or len(todo) <= 1:
        for job in todo:
            take(measure_job(job, cfg, catalog=cat.root))
    else:
        if cfg.tempo:
            warm_up_tempo()  # the workers inherit librosa's compiled kernels (see warm_up_tempo)
        with process_pool(workers) as pool:
            pending: set[Future] = set()
            it = iter(todo)
            for job in it:
                pending.add(pool.submit(measure_job, job, cfg, catalog=cat.root))
                if len(pending) >= workers * 4:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for f in finished:
                        take(f.result())
            for f in pending:
                take(f.result())
    _commit(cat, buf_rows, buf_rej)
    return n_rows, n_rej


def commit_results(cat: Catalog, results: Iterable[tuple[list[dict], list[dict]]]) -> tuple[int, int]:
    """Append what :func:`measure_job` returned for some files (``(rows, rejects)`` pairs) to the catalogue as
    one part file per table. Returns (stem rows, reject rows) committed. Used by callers that measure batches
    themselves (the ``ingest-stems`` Prefect flow)."""
    rows: list[dict] = []
    rejects: list[dict] = []
    for r, j in results:
        rows.extend(r)
        rejects.extend(j)
    counts = len(rows), len(rejects)
    _commit(cat, rows, rejects)
    return counts


def _commit(cat: Catalog, rows: list[dict], rejects: list[dict]) -> None:
    if rows:
        cat.append("stems", rows)
    if rejects:
        cat.append("rejects", rejects)
    rows.clear()
    rejects.clear()


def mark_deleted(cat: Catalog, sources: set[str], present: set[str]) -> int:
    """Mark rows of ``sources`` whose key is not in ``present`` (files gone since the last run) as deleted."""
    df = cat.stems(source=sorted(sources), include_duplicates=True)
    gone = df[~df["key"].isin(present)]
    if gone.empty:
        return 0
    rows = df_records(gone.assign(deleted=True, ingested_at=datetime.now(UTC)))
    cat.append("stems", rows)
    return len(rows)


def df_records(df: pd.DataFrame) -> list[dict]:
    """Rows of a stems DataFrame as dicts the Arrow schema accepts: NaN/NA -> None, arrays -> lists."""
    out = []
    for rec in df.to_dict("records"):
        clean = {}
        for k, v in rec.items():
            if isinstance(v, np.ndarray | list | tuple):
                clean[k] = [x.tolist() if isinstance(x, np.ndarray) else x for x in v]
            elif v is None or (not isinstance(v, str | bytes | datetime) and pd.isna(v)):
                clean[k] = None
            else:
                clean[k] = v
        out.append(clean)
    return out


def finalize(cat: Catalog) -> tuple[int, list[str]]:
    """Settle each key that has both a stem row and a reject row by the newer one (a file that went bad loses its
    old row; a fixed file leaves the rejects), mark duplicates and length mismatches, compact. Returns (number of
    duplicate rows, songs found in more than one split)."""
    t = cat.table("stems").to_pandas()
    stale_rows, fixed_rejects = settle_rejects(cat, t)
    t = t[~t["key"].isin(stale_rows)]
    if t.empty:
        cat.compact("stems", drop_keys=stale_rows)
        cat.compact("rejects", drop_keys=fixed_rejects)
        return 0, []
    live = t[~t["deleted"]].sort_values("key")
    canonical = live.groupby("stem_id", sort=False)["key"].transform("first")
    dup_of = pd.Series(None, index=t.index, dtype=object)
    mask = canonical != live["key"]
    dup_of.loc[live.index[mask.to_numpy()]] = canonical[mask].to_numpy()
    flags = t["flags"].map(list)
    flag_length_mismatch(live, flags)
    near = mark_near_duplicates(live, dup_of, flags)
    changed = (dup_of.fillna("") != t["duplicate_of"].fillna("")) | (
        flags.map(tuple) != t["flags"].map(tuple)
    )
    if changed.any():
        upd = t[changed].copy()
        upd["duplicate_of"] = dup_of[changed]
        upd["flags"] = flags[changed]
        upd["ingested_at"] = datetime.now(UTC)
        recs = df_records(upd)
        cat.append("stems", recs)
    cat.compact("stems", drop_keys=stale_rows)
    cat.compact("rejects", drop_keys=fixed_rejects)
    leaks = leakage(live)
    for song, why in leaks.items():
        log.warning("train/test leakage: song %r %s", song, why)
    return int(mask.sum()) + near, sorted(leaks)


def ingest_folder(
    root: str | Path,
    *,
    layout: str,
    catalog: str | Path,
    name: str | None = None,
    cfg: IngestConfig | None = None,
    origin: str = "unknown",
    licence: str = "unknown",
    progress: Callable[[int, int], None] | None = None,
) -> IngestReport:
    """Ingest one folder with no config file (``layout``: ``stems``, ``musdb``, ``multitrack``, ``medleydb``,
    ``moisesdb`` or ``slakh``, each with its defaults; the taxonomy is ``cfg.taxonomy``)."""
    r = Path(root).resolve()
    layouts = {"stems": StemsLayout, "musdb": MusdbLayout, "multitrack": MultitrackLayout,
               "medleydb": MedleydbLayout, "moisesdb": MoisesdbLayout, "slakh": SlakhLayout}
    if layout not in layouts:
        from stemdb.errors import ConfigError

        raise ConfigError(f"layout={layout!r} is not allowed; allowed: {', '.join(map(repr, layouts))}",
                          key="layout")
    lay = layouts[layout]()
    src = SourceConfig(name=name or _safe_name(r.name), root=r, layout=lay, origin=origin, licence=licence)
    return ingest_sources([src], catalog, cfg=cfg, progress=progress)


def _safe_name(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]+", "-", s).strip("-") or "source"
