"""Ingest of long files block by block: bounded memory whatever a file's length (issue 18).

A single-stream file longer than :data:`STREAM_MIN_S` (its header's duration) is decoded in blocks
(:func:`stemdb.audio.blocks`) and measured by :func:`stemdb.measure_stream.measure_blocks`: the same content hash,
levels, loudness and silence map as the whole-array path, with tempo and the quality columns from the middle
:data:`stemdb.measure_stream.EXCERPT_S` seconds; the int16 stem cache file is written from the same pass. Shorter
files keep the whole-array path (:func:`stemdb.ingest.measure_job`), which is as fast and holds at most
:data:`STREAM_MIN_S` seconds of audio. Native ``.stem.mp4`` multitracks are decoded whole (their streams are short
songs).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path

from stemdb import audio as audio_io
from stemdb import measure_stream, stem_cache
from stemdb.audio_facts import AudioInfo
from stemdb.config import IngestConfig
from stemdb.errors import AudioReadError, MissingDependencyError
from stemdb.ingest_rows import failure_reason, invalid_reason, reject_row, stem_row
from stemdb.measure_stream import EXCERPT_S, measure_blocks
from stemdb.quality.columns import quality_columns
from stemdb.scan import FileJob

#: Files longer than this (seconds, by the header) are measured block by block.
STREAM_MIN_S: float = EXCERPT_S
#: Flag of a row whose tempo, beats and quality columns come from the middle excerpt only.
EXCERPT_FLAG = "excerpt_analysis"
#: Frames per decoded block (about 6 s at 44.1 kHz: 2 MB of float32 stereo).
BLOCK_FRAMES: int = 1 << 18


def long_file(path: Path, min_s: float | None = None) -> AudioInfo | None:
    """The header facts of ``path`` when it lasts longer than ``min_s`` seconds (:data:`STREAM_MIN_S` when
    ``None``), else ``None`` (also for a file whose header cannot be read: the whole-array path names the fault)."""
    min_s = STREAM_MIN_S if min_s is None else min_s
    try:
        info = audio_io.info(path)
    except (AudioReadError, MissingDependencyError):
        return None
    return info if info.sample_rate > 0 and info.frames > min_s * info.sample_rate else None


def streamed_job(job: FileJob, cfg: IngestConfig, full: Path, info: AudioInfo, cache_to: str | Path | None,
                 now: datetime) -> tuple[list[dict], list[dict]]:
    """:func:`stemdb.ingest.measure_job` for one long single-stream file: ``(rows, rejects)``, never raises for bad
    audio. The row's ``frames`` is the decoded count; a PyAV format's header states only a duration."""
    key = f"{job.source}:{job.path}"
    reason = invalid_reason(info.channels, info.frames, info.sample_rate, job.max_channels)
    if reason:
        return [], [reject_row(job, key, reason, now)]
    exact = not audio_io.uses_pyav(full)  # soundfile's header count is exact (checked while decoding)
    writer = stem_cache.Pcm16Writer(cache_to, info.channels, info.frames) \
        if cache_to is not None and exact and stem_cache.cacheable(info.subtype) else None
    try:
        s = measure_blocks(audio_io.blocks(full, block_frames=BLOCK_FRAMES), info.sample_rate, info.channels,
                           frames=info.frames if exact else None, frames_hint=info.frames, silence_db=cfg.silence_db,
                           window_s=cfg.silence_window_s, clip_level=cfg.clip_level, tempo=cfg.tempo,
                           excerpt_s=measure_stream.EXCERPT_S, sinks=[writer] if writer else [])
        quality = quality_columns(s.excerpt, info.sample_rate, job.kinds[0])
        decoded = dataclasses.replace(info, frames=s.frames) if exact else audio_io.info(full, frames=s.frames)
    except (AudioReadError, MissingDependencyError) as exc:
        return [], [_discarded(writer, reject_row(job, key, str(getattr(exc, "reason", exc)), now))]
    except Exception as exc:  # noqa: BLE001 - a batch job records every failure and goes on
        return [], [_discarded(writer, reject_row(job, key, failure_reason(exc), now))]
    if writer is not None:
        writer.commit(s.measurements.content_hash)
    row = stem_row(job, key, -1, job.kinds[0], decoded, s.measurements, now, channels=info.channels, frames=s.frames)
    if s.excerpt.shape[1] < s.frames:
        row["flags"] = [*row["flags"], EXCERPT_FLAG]
    return [{**row, **quality}], []


def _discarded(writer: stem_cache.Pcm16Writer | None, reject: dict) -> dict:
    if writer is not None:
        writer.discard()
    return reject
