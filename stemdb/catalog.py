"""The Parquet catalogue: one row per stem file (or ``.stem.mp4`` stream), plus a rejects table.

On disk (``<root>/``)::

    stems/part-*.parquet      the stems dataset (pandas, pyarrow and DuckDB read the folder as one table)
    rejects/part-*.parquet    files that could not be ingested, with the reason
    _catalog.json             schema version and the source roots (so rows can be resolved to files)

Every file is written atomically (temp file, fsync, rename); dot-prefixed temp files are ignored by Parquet readers.
Ingest commits each measured batch as a new part file, so a kill at any moment loses at most the batch in flight,
and compacts the parts into one at the end. Readers keep, per ``key``, the row with the latest ``ingested_at``, so a
state caught between a compaction's rename and its clean-up still reads correctly.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from stemdb.atomic import atomic_open, fsync_dir, write_text_atomic
from stemdb.errors import CatalogError

#: Version 2 added ``codec``, ``bitrate_kbps`` and ``lossy``; version 3 the quality columns (``bandwidth_hz``,
#: ``bleed``, ``musical_key``, ``key_confidence``, ``fake_stereo``, ``stereo_difference_db``, ``fingerprint``; see
#: :mod:`stemdb.quality`) and ``provenance``. An older catalogue still opens (the new columns read as null) and the
#: next ingest re-measures its rows to fill them (see :func:`stemdb.ingest.plan`).
SCHEMA_VERSION = 3
#: Catalogue versions this stemdb reads.
READABLE_VERSIONS = (1, 2, 3)

STEMS_SCHEMA = pa.schema(
    [
        ("key", pa.string()),  # unique row key: "<source>:<path>" or "<source>:<path>#<stream>"
        ("stem_id", pa.string()),  # content hash of the decoded PCM (duplicates share it)
        ("source", pa.string()),
        ("root", pa.string()),  # absolute source root at ingest time
        ("path", pa.string()),  # relative to root, POSIX separators
        ("stream", pa.int16()),  # stream index inside a .stem.mp4, -1 for plain files
        ("kind", pa.string()),
        ("song", pa.string()),
        ("split", pa.string()),
        ("origin", pa.string()),
        ("licence", pa.string()),
        ("sample_rate", pa.int32()),
        ("channels", pa.int16()),
        ("frames", pa.int64()),
        ("duration_s", pa.float64()),
        ("format", pa.string()),
        ("subtype", pa.string()),
        ("codec", pa.string()),  # FFmpeg's codec name: pcm_s16le, flac, vorbis, mp3, aac, opus, alac, wmav2, ...
        ("bitrate_kbps", pa.float64()),  # the stream's bit rate, kbit/s
        ("lossy", pa.bool_()),  # decoded from a lossy codec (FFmpeg's codec descriptor); null: unknown
        ("bytes", pa.int64()),
        ("mtime", pa.float64()),  # seconds since the epoch
        ("lufs", pa.float64()),  # null for digital silence
        ("peak_dbfs", pa.float64()),
        ("rms_dbfs", pa.float64()),
        ("clipping_ratio", pa.float64()),
        ("silence_ratio", pa.float64()),
        ("active", pa.list_(pa.list_(pa.float64()))),  # [[start_s, end_s], ...]
        ("tempo_bpm", pa.float64()),
        ("beats", pa.list_(pa.float32())),  # beat times, seconds
        ("loudness_100ms", pa.list_(pa.float32())),  # K-weighted mean square per 100 ms hop (measure)
        ("bandwidth_hz", pa.float64()),  # effective bandwidth, Hz (stemdb.quality.bandwidth); 0.0 for silence
        ("bleed", pa.float64()),  # bleed score, dB above a clean stem of its kind (higher = more bleed)
        ("musical_key", pa.string()),  # e.g. "A minor" ("key" is the row key); null: no tonal content
        ("key_confidence", pa.float64()),  # in [0, 1]
        ("fake_stereo", pa.bool_()),  # both channels the same signal
        ("stereo_difference_db", pa.float64()),  # side vs mid energy, dB; null for mono
        ("fingerprint", pa.binary()),  # near-duplicate fingerprint (stemdb.quality.Fingerprint.to_bytes)
        ("provenance", pa.string()),  # JSON: the source tracks (paths, gains, hashes) a summed stem was made of
        ("flags", pa.list_(pa.string())),
        ("duplicate_of", pa.string()),  # key of the kept row when this file is a duplicate or near-duplicate
        ("deleted", pa.bool_()),  # the file was gone at the last ingest
        ("ingested_at", pa.timestamp("us", tz="UTC")),
        ("schema_version", pa.int16()),
    ]
)

REJECTS_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("source", pa.string()),
        ("root", pa.string()),
        ("path", pa.string()),
        ("stream", pa.int16()),
        ("reason", pa.string()),
        ("bytes", pa.int64()),
        ("mtime", pa.float64()),
        ("rejected_at", pa.timestamp("us", tz="UTC")),
        ("schema_version", pa.int16()),
    ]
)

_TABLES = {"stems": STEMS_SCHEMA, "rejects": REJECTS_SCHEMA}
_TIME_COL = {"stems": "ingested_at", "rejects": "rejected_at"}


def write_parquet_atomic(table: pa.Table, path: Path) -> Path:
    """Write ``table`` to ``path`` atomically (zstd), see :mod:`stemdb.atomic`."""
    with atomic_open(path, "wb") as fh:
        pq.write_table(table, fh, compression="zstd")
    return path


def write_json_atomic(data: object, path: Path) -> Path:
    """Write JSON atomically (NaN/inf refused)."""
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, allow_nan=False))


def rows_to_table(rows: Sequence[dict], table: str) -> pa.Table:
    """Build a table of the given schema from row dicts (missing columns become null)."""
    schema = _TABLES[table]
    cols = {f.name: [r.get(f.name) for r in rows] for f in schema}
    return pa.Table.from_pydict(cols, schema=schema)


@dataclass(frozen=True)
class CatalogSummary:
    """Counts and hours of a catalogue (live, non-duplicate rows)."""

    files: int
    hours: float
    rejects: int
    duplicates: int
    by_kind: dict[str, tuple[int, float]]

    def line(self) -> str:
        kinds = ", ".join(f"{k} {n} ({h:.2f} h)" for k, (n, h) in sorted(self.by_kind.items()))
        return (
            f"{self.files} stems, {self.hours:.2f} h [{kinds}]; {self.duplicates} duplicates; "
            f"{self.rejects} rejected"
        )


class Catalog:
    """A catalogue folder. Open with :meth:`open` (must exist) or :meth:`create` (may be new)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- opening -----------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, root: str | Path) -> Catalog:
        """Open an existing catalogue; raises CatalogError naming the folder when there is none."""
        r = Path(root)
        meta = r / "_catalog.json"
        if not meta.is_file():
            raise CatalogError(f"{r}: no stemdb catalogue here (missing _catalog.json); run `stemdb ingest` first")
        version = json.loads(meta.read_text()).get("schema_version")
        if version not in READABLE_VERSIONS:
            newer = isinstance(version, int) and version > SCHEMA_VERSION
            raise CatalogError(
                f"{r}: catalogue schema_version {version!r}; this stemdb reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}" + ("; upgrade stemdb to open it" if newer else "")
            )
        return cls(r)

    @classmethod
    def create(cls, root: str | Path) -> Catalog:
        """Open or initialise a catalogue folder for writing (an older readable version is marked current)."""
        r = Path(root)
        r.mkdir(parents=True, exist_ok=True)
        meta = r / "_catalog.json"
        if not meta.is_file():
            write_json_atomic({"schema_version": SCHEMA_VERSION, "sources": {}}, meta)
        cat = cls.open(r)
        data = json.loads(meta.read_text())
        if data.get("schema_version") != SCHEMA_VERSION:  # an older version, opened for writing: rows of this
            data["schema_version"] = SCHEMA_VERSION  # version follow, so older stemdb must refuse it from now on
            write_json_atomic(data, meta)
        return cat

    # -- reading -----------------------------------------------------------------------------------------------
    def _parts(self, table: str) -> list[Path]:
        d = self.root / table
        if not d.is_dir():
            return []
        return sorted(p for p in d.glob("part-*.parquet"))

    def table(self, name: str = "stems", *, columns: list[str] | None = None, filter=None) -> pa.Table:  # noqa: ANN001
        """Read a whole table (``stems`` or ``rejects``) as Arrow, latest row per key, with optional pushdown."""
        schema = _TABLES[name]
        parts = self._parts(name)
        if not parts:
            t = schema.empty_table()
            return t.select(columns) if columns else t
        need = None
        if columns is not None:
            need = list(dict.fromkeys([*columns, "key", _TIME_COL[name]]))
        dataset = ds.dataset([str(p) for p in parts], schema=schema, format="parquet")
        t = dataset.to_table(columns=need, filter=filter)
        if len(parts) > 1:
            t = _latest_per_key(t, _TIME_COL[name])
        if columns is not None:
            t = t.select(columns)
        return t

    def stems(
        self,
        *,
        kind: str | Iterable[str] | None = None,
        split: str | Iterable[str] | None = None,
        source: str | Iterable[str] | None = None,
        song: str | Iterable[str] | None = None,
        min_duration: float | None = None,
        max_silence: float | None = None,
        include_duplicates: bool = False,
        include_deleted: bool = False,
        columns: list[str] | None = None,
    ) -> pd.DataFrame:
        """Rows of the stems table as a DataFrame, filtered (filters are pushed down to Parquet).

        By default duplicates (``duplicate_of`` set) and deleted files are left out, so every row is usable audio.
        ``min_duration`` in seconds; ``max_silence`` is the largest ``silence_ratio`` kept.
        """
        expr = None
        for col, val in (("kind", kind), ("split", split), ("source", source), ("song", song)):
            if val is not None:
                vals = [val] if isinstance(val, str) else list(val)
                expr = _and(expr, pc.field(col).isin(vals))
        if min_duration is not None:
            expr = _and(expr, pc.field("duration_s") >= min_duration)
        if max_silence is not None:
            expr = _and(expr, pc.field("silence_ratio") <= max_silence)
        if not include_duplicates:
            expr = _and(expr, pc.field("duplicate_of").is_null())
        if not include_deleted:
            expr = _and(expr, pc.field("deleted") == False)  # noqa: E712 - Arrow expression
        t = self.table("stems", columns=columns, filter=expr)
        return t.to_pandas().sort_values("key", ignore_index=True) if "key" in t.column_names else t.to_pandas()

    def rejects(self) -> pd.DataFrame:
        """The rejects table (``path``, ``reason``, ...) as a DataFrame."""
        return self.table("rejects").to_pandas()

    def get(self, stem_id: str) -> pd.Series:
        """The canonical row of ``stem_id`` (a content hash; a unique prefix of at least 6 characters works)."""
        df = self.stems(include_duplicates=True, include_deleted=True)
        hit = df[df["stem_id"].str.startswith(stem_id)] if len(stem_id) >= 6 else df[df["stem_id"] == stem_id]
        if hit.empty:
            raise CatalogError(f"{self.root}: no stem with stem_id {stem_id!r}")
        if hit["stem_id"].nunique() > 1:
            raise CatalogError(f"{self.root}: stem_id prefix {stem_id!r} is ambiguous")
        canon = hit[hit["duplicate_of"].isna()]
        return (canon if not canon.empty else hit).iloc[0]

    def resolve(self, row: pd.Series | dict) -> Path:
        """Absolute path of a row's file."""
        return Path(row["root"]) / row["path"]

    def fingerprint(self) -> str:
        """Hash of the live content: the sorted (key, stem_id) pairs. Changes when audio changes, not on re-runs."""
        import hashlib

        t = self.table("stems", columns=["key", "stem_id", "deleted", "duplicate_of"])
        df = t.to_pandas()
        df = df[~df["deleted"]].sort_values("key")
        h = hashlib.blake2b(digest_size=8)
        for k, s in zip(df["key"], df["stem_id"], strict=True):
            h.update(f"{k}\0{s}\n".encode())
        return h.hexdigest()

    def summary(self) -> CatalogSummary:
        """Files, hours per kind, duplicates and rejects."""
        df = self.stems(columns=["key", "kind", "duration_s"])
        allrows = self.table("stems", columns=["duplicate_of", "deleted"]).to_pandas()
        dups = int(((~allrows["deleted"]) & allrows["duplicate_of"].notna()).sum()) if len(allrows) else 0
        by_kind = {
            str(k): (int(len(g)), float(g["duration_s"].sum() / 3600.0)) for k, g in df.groupby("kind", sort=True)
        }
        return CatalogSummary(
            files=int(len(df)),
            hours=float(df["duration_s"].sum() / 3600.0) if len(df) else 0.0,
            rejects=int(self.table("rejects", columns=["key"]).num_rows),
            duplicates=dups,
            by_kind=by_kind,
        )

    # -- writing -----------------------------------------------------------------------------------------------
    def append(self, name: str, rows: Sequence[dict]) -> Path | None:
        """Commit rows as a new part file (atomic). Later rows win over earlier ones with the same key."""
        if not rows:
            return None
        t = rows_to_table(rows, name)
        fname = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        return write_parquet_atomic(t, self.root / name / fname)

    def compact(self, name: str, *, drop_keys: set[str] | None = None) -> None:
        """Rewrite a table as one part (latest row per key), then remove the older parts."""
        parts = self._parts(name)
        if len(parts) <= 1 and not drop_keys:
            return
        t = self.table(name)
        if drop_keys:
            t = t.filter(_not_in(t, drop_keys))
        t = t.sort_by("key")
        fname = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        write_parquet_atomic(t, self.root / name / fname)
        for p in parts:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        fsync_dir(self.root / name)

    def set_source_roots(self, roots: dict[str, str]) -> None:
        meta = self.root / "_catalog.json"
        data = json.loads(meta.read_text())
        data.setdefault("sources", {}).update(roots)
        write_json_atomic(data, meta)


def _not_in(t: pa.Table, keys: set[str]) -> pa.Array:
    mask = pc.is_in(t["key"], value_set=pa.array(sorted(keys), type=pa.string()))
    return pc.invert(mask)


def _and(a, b):  # noqa: ANN001, ANN202 - Arrow expressions
    return b if a is None else a & b


def _latest_per_key(t: pa.Table, time_col: str) -> pa.Table:
    if t.num_rows == 0:
        return t
    idx = pa.array(np.arange(t.num_rows))
    t2 = t.append_column("__i", idx)
    # sort by key, then time descending, then file order descending; keep the first of each key
    order = pc.sort_indices(t2, sort_keys=[("key", "ascending"), (time_col, "descending"), ("__i", "descending")])
    t2 = t2.take(order)
    keys = t2["key"].to_numpy(zero_copy_only=False)
    first = np.ones(len(keys), dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    return t2.filter(pa.array(first)).drop_columns(["__i"])
