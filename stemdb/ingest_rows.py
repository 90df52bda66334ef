"""The rows ingest writes: a measured stem's row of the stems table, a reject row, and the reasons a file is
rejected (:func:`stemdb.ingest.measure_job` and the block-wise :func:`stemdb.ingest_stream.streamed_job`)."""

from __future__ import annotations

from datetime import datetime

from stemdb.audio_facts import AudioInfo
from stemdb.catalog import SCHEMA_VERSION
from stemdb.measure import Measurements
from stemdb.scan import FileJob, hash_split


def invalid_reason(channels: int, frames: int, sr: int, max_channels: int) -> str | None:
    """Why decoded audio of this shape cannot be a stem row, or ``None``."""
    if frames == 0:
        return "empty: 0 frames"
    if channels > max_channels:
        return f"too many channels: {channels} > max_channels {max_channels}"
    if sr <= 0:
        return f"bad sample rate {sr}"
    return None  # NaN/inf samples are caught by measure() in the same pass as the measurements


def failure_reason(exc: Exception) -> str:
    """The reject reason of a measurement that raised ``exc``."""
    if "NaN/inf" in str(exc):
        return f"non-finite samples: {exc}"
    return f"measurement failed: {type(exc).__name__}: {exc}"


def stem_row(
    job: FileJob,
    key: str,
    stream: int,
    kind: str,
    info: AudioInfo,
    m: Measurements,
    now: datetime,
    *,
    channels: int,
    frames: int,
) -> dict:
    """The stems-table row of one measured stem (``channels`` and ``frames`` as decoded)."""
    sr = info.sample_rate
    flags = [f for f, on in (("silent", m.silence_ratio >= 1.0), ("clipping", m.clipping_ratio > 0.0),
                             ("lossy", bool(info.lossy))) if on] + list(job.flags)
    rec = m.as_record()
    song = job.song if job.song is not None else m.content_hash
    split = job.split
    if split is None:
        valid, test = job.hash_split or (0.0, 0.0)
        split = hash_split(song, valid, test)
    return {
        "key": key,
        "stem_id": m.content_hash,
        "source": job.source,
        "root": job.root,
        "path": job.path,
        "stream": stream,
        "kind": kind,
        "song": song,
        "split": split,
        "origin": job.origin,
        "licence": job.licence,
        "sample_rate": int(sr),
        "channels": int(channels),
        "frames": int(frames),
        "duration_s": float(frames / sr),
        "format": info.format,
        "subtype": info.subtype,
        "codec": info.codec,
        "bitrate_kbps": info.bitrate_kbps,
        "lossy": info.lossy,
        "bytes": job.bytes,
        "mtime": job.mtime,
        **{k: rec[k] for k in ("lufs", "peak_dbfs", "rms_dbfs", "clipping_ratio", "silence_ratio", "active",
                               "tempo_bpm")},
        "beats": rec["beats_s"],
        "loudness_100ms": rec["loudness_100ms"],
        "flags": flags,
        "provenance": job.provenance,
        "duplicate_of": None,
        "deleted": False,
        "ingested_at": now,
        "schema_version": SCHEMA_VERSION,
    }


def reject_row(job: FileJob, key: str, reason: str, now: datetime) -> dict:
    stream = int(key.rsplit("#", 1)[1]) if "#" in key else -1
    return {
        "key": key,
        "source": job.source,
        "root": job.root,
        "path": job.path,
        "stream": stream,
        "reason": reason,
        "bytes": job.bytes,
        "mtime": job.mtime,
        "rejected_at": now,
        "schema_version": SCHEMA_VERSION,
    }
