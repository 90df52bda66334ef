"""The remix pool: the catalogue's candidate stems per target as typed rows, loaded once per build or stream.

Two kinds of pool share one row type (:class:`PoolRow`): the per-target pools the cross-song planner draws from
(:class:`TargetPool`, draws proportional to duration) and the aligned stems of the multitrack songs that have every
target (``StemPool.coherent``). ``StemPool.rel_lufs`` holds each target's level relative to the mixture as measured
on the catalogue's real multitracks (the calibration of the planner's levels).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from augment.config import RemixConfig
from augment.filters import FILTER_COLUMNS, filter_mask
from stemdb.catalog import Catalog

#: Catalogue columns the pool reads.
POOL_COLUMNS = ["key", "stem_id", "source", "kind", "song", "split", "sample_rate", "channels", "frames",
                "duration_s", "lufs", "silence_ratio", "active", "loudness_100ms", "tempo_bpm", "beats"]
#: Catalogue columns of key-aware mixing (read beside :data:`POOL_COLUMNS`; null in older catalogues).
KEY_COLUMNS = ["musical_key", "key_confidence"]


@dataclass(frozen=True)
class PoolRow:
    """One candidate stem: the catalogue columns the planner reads.

    ``active``: ``((start_s, end_s), ...)`` regions above the silence threshold; ``loudness_100ms``: the stored
    K-weighted loudness profile (one value per 100 ms hop, LUFS); ``tempo_bpm`` ``None`` when not estimated;
    ``beats`` in seconds from the stem's start (empty when not estimated).
    """

    key: str
    stem_id: str
    source: str
    kind: str
    target: str
    song: str
    split: str
    sample_rate: int
    channels: int
    frames: int
    duration_s: float
    lufs: float | None
    silence_ratio: float
    active: tuple[tuple[float, float], ...]
    loudness_100ms: np.ndarray = field(repr=False)
    tempo_bpm: float | None = None
    beats: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    musical_key: str | None = None  # e.g. "A minor" (catalogue column musical_key); None: not estimated
    key_confidence: float = 0.0

    @property
    def has_beats(self) -> bool:
        """A tempo and at least two beats (usable by tempo-aware mixing)."""
        return bool(self.tempo_bpm) and len(self.beats) > 1


def _opt_float(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def rows_of(df: pd.DataFrame) -> list[PoolRow]:
    """:class:`PoolRow` objects of a frame of :data:`POOL_COLUMNS` plus ``target`` (and, when present,
    ``musical_key`` and ``key_confidence``), in frame order."""
    cols = [df[c].tolist() for c in (*POOL_COLUMNS, "target")]
    cols.append(df["musical_key"].tolist() if "musical_key" in df else [None] * len(df))
    cols.append(df["key_confidence"].tolist() if "key_confidence" in df else [None] * len(df))
    out = []
    for (key, sid, source, kind, song, split, sr, ch, frames, dur, lufs, silence, active, prof, bpm, beats,
         target, mkey, kconf) in zip(*cols, strict=True):
        out.append(PoolRow(
            key=str(key), stem_id=str(sid), source=str(source), kind=str(kind), target=str(target), song=str(song),
            split=str(split), sample_rate=int(sr), channels=int(ch), frames=int(frames), duration_s=float(dur),
            lufs=_opt_float(lufs), silence_ratio=float(silence),
            active=tuple((float(a), float(b)) for a, b in (active if active is not None else ())),
            loudness_100ms=np.asarray(prof if prof is not None else ()), tempo_bpm=_opt_float(bpm),
            beats=np.asarray(beats if beats is not None else ()),
            musical_key=mkey if isinstance(mkey, str) else None, key_confidence=_opt_float(kconf) or 0.0,
        ))
    return out


@dataclass
class TargetPool:
    """Candidate stems of one target, with cumulative duration weights for O(log n) draws proportional to
    duration."""

    rows: list[PoolRow]

    def __post_init__(self) -> None:
        self.durations = np.array([r.duration_s for r in self.rows], dtype=np.float64)
        self.cum = np.cumsum(self.durations)
        self.songs = np.array([r.song for r in self.rows], dtype=str)

    def draw(self, rng: np.random.Generator, exclude_songs: set[str]) -> PoolRow | None:
        """A stem drawn with probability proportional to its duration, from a song not in ``exclude_songs``
        (``None`` when every stem's song is excluded)."""
        if not self.rows:
            return None
        for _ in range(32):
            i = int(np.searchsorted(self.cum, rng.random() * self.cum[-1], side="right"))
            row = self.rows[min(i, len(self.rows) - 1)]
            if row.song not in exclude_songs:
                return row
        ok = np.flatnonzero(~np.isin(self.songs, list(exclude_songs)))
        if ok.size == 0:
            return None
        w = self.durations[ok]
        i = int(np.searchsorted(np.cumsum(w), rng.random() * w.sum(), side="right"))
        return self.rows[int(ok[min(i, ok.size - 1)])]


@dataclass
class StemPool:
    """Everything the planner needs from the catalogue, loaded once."""

    targets: tuple[str, ...]
    pools: dict[str, TargetPool]
    coherent: dict[str, dict[str, PoolRow]]  # song -> target -> row (songs with every target, one source)
    rel_lufs: dict[str, tuple[float, float, int]]  # target -> (mean LU, std LU, songs measured)
    fingerprint: str


def target_of(kind: str, cfg: RemixConfig) -> str:
    """The output target of a catalogue kind (``kind_map``, else the kind itself)."""
    return cfg.kind_map.get(kind, kind)


def build_pool(catalog: str | Path | Catalog, cfg: RemixConfig, *, splits: Sequence[str] = ("train",)) -> StemPool:
    """Load candidate stems: live, canonical, not silent, of a kind that maps to a target, in ``splits``, passing
    ``cfg.filters`` (:func:`augment.filters.filter_mask`). Levels are calibrated on every canonical row."""
    cat = catalog if isinstance(catalog, Catalog) else Catalog.open(catalog)
    df = cat.stems(split=list(splits), columns=list(dict.fromkeys(POOL_COLUMNS + FILTER_COLUMNS + KEY_COLUMNS)),
                   include_duplicates=not cfg.filters.dedupe)
    df = df.assign(target=[target_of(k, cfg) for k in df["kind"]])
    rel = measured_relative_levels(df[df["duplicate_of"].isna()], cfg)
    ok = filter_mask(df, cfg.filters, df["target"])
    stems = df[ok & (df["kind"] != "mixture") & df["target"].isin(cfg.targets) & (df["silence_ratio"] < 1.0)]
    rows = rows_of(stems.sort_values("key", ignore_index=True))
    pools = {t: TargetPool([r for r in rows if r.target == t]) for t in cfg.targets}
    return StemPool(tuple(cfg.targets), pools, coherent_songs(rows, cfg.targets), rel, cat.fingerprint())


def coherent_songs(rows: Sequence[PoolRow], targets: Sequence[str]) -> dict[str, dict[str, PoolRow]]:
    """Songs with a stem for every target, all from one source: song -> target -> its first row in ``rows``."""
    by_song: dict[str, dict[str, PoolRow]] = {}
    sources: dict[str, set[str]] = {}
    for r in rows:
        by_song.setdefault(r.song, {}).setdefault(r.target, r)
        sources.setdefault(r.song, set()).add(r.source)
    return {song: {t: by_t[t] for t in targets} for song, by_t in sorted(by_song.items())
            if all(t in by_t for t in targets) and len(sources[song]) == 1}


def measured_relative_levels(df: pd.DataFrame, cfg: RemixConfig) -> dict[str, tuple[float, float, int]]:
    """Per target: mean and std of (stem LUFS - mixture LUFS) over the songs that have a ``mixture`` row.

    Silent stems (an instrumental song's vocals) are left out. Targets with no measurement fall back to
    ``levels.fallback_rel_lufs`` (std 0, count 0).
    """
    out: dict[str, tuple[float, float, int]] = {}
    mix = df[df["kind"] == "mixture"].dropna(subset=["lufs"]).drop_duplicates("song").set_index("song")["lufs"]
    stems = df[(df["kind"] != "mixture") & df["song"].isin(mix.index)].dropna(subset=["lufs"])
    for t in cfg.targets:
        g = stems[stems["target"] == t]
        # several stems of one target in a song (keys + guitar -> other): power-sum them first
        per_song = g.groupby("song")["lufs"].apply(lambda x: 10 * np.log10(np.sum(10 ** (x.to_numpy() / 10))))
        rel = (per_song - mix.reindex(per_song.index)).dropna()
        if len(rel):
            out[t] = (float(rel.mean()), float(rel.std(ddof=0)), int(len(rel)))
        else:
            out[t] = (float(cfg.levels.fallback_rel_lufs.get(t, -6.0)), 0.0, 0)
    return out


__all__ = ["POOL_COLUMNS", "PoolRow", "StemPool", "TargetPool", "build_pool", "coherent_songs",
           "measured_relative_levels", "rows_of", "target_of"]
