"""The remix pool: the catalogue's candidate stems per target, as columns, loaded once per build, chunk or stream.

The vectorised planner (:mod:`augment.remix`) reads a :class:`TargetPool` as numpy columns (durations and their
cumulative sum for draws proportional to duration, song codes shared by every target, rates, channels), and its
ragged columns (active regions, the 100 ms loudness profile, beats) as flat value arrays with per-stem starts and
lengths, so a block of thousands of recipes is planned with a few array operations whatever the catalogue's size.
:class:`PoolRow` is one stem as a dataclass, built on demand (``TargetPool.row``, ``TargetPool.rows``) for the
per-recipe paths (tempo-aware alignment, coherent mixtures) and for inspection.

``StemPool.coherent`` holds the aligned stems of the multitrack songs that have every target (all from one source),
and ``StemPool.rel_lufs`` each target's level relative to the mixture as measured on the catalogue's real multitracks
(the calibration of the planner's levels).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from augment.config import RemixConfig
from augment.filters import FILTER_COLUMNS, filter_mask
from stemdb.catalog import Catalog

#: Catalogue columns the pool reads.
POOL_COLUMNS = ["key", "stem_id", "source", "kind", "song", "split", "sample_rate", "channels", "frames",
                "duration_s", "lufs", "silence_ratio", "active", "loudness_100ms", "tempo_bpm", "beats"]
#: Catalogue columns of key-aware mixing (read beside :data:`POOL_COLUMNS`; null in older catalogues).
KEY_COLUMNS = ["musical_key", "key_confidence"]
_SCALARS = ("key", "stem_id", "source", "kind", "song", "split", "sample_rate", "channels", "frames", "duration_s",
            "lufs", "silence_ratio", "tempo_bpm", "musical_key", "key_confidence")


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


@dataclass(frozen=True)
class Ragged:
    """A list column as flat ``values`` with per-row ``starts`` and ``lengths`` (row ``k`` is
    ``values[starts[k] : starts[k] + lengths[k]]``)."""

    values: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray

    @classmethod
    def from_arrow(cls, arr: pa.ChunkedArray | pa.Array, dtype: type = np.float64) -> Ragged:
        arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
        lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy().astype(np.int64)
        values = pc.list_flatten(arr).to_numpy(zero_copy_only=False).astype(dtype)
        return cls(values, np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64), lengths)

    def row(self, k: int) -> np.ndarray:
        return self.values[self.starts[k] : self.starts[k] + self.lengths[k]]


@dataclass
class TargetPool:
    """Candidate stems of one target as columns, in catalogue key order.

    ``cols``: the scalar columns of :data:`POOL_COLUMNS` as numpy arrays plus ``song_code`` (the pool-wide song
    number); ``regions``: active regions as ``(start_s, end_s)`` pairs (a stem without any gets its whole length);
    ``profile``: the loudness profiles; ``beats``: beat times. ``cum``: cumulative durations (draws proportional to
    duration in O(log n)).
    """

    target: str
    cols: dict[str, np.ndarray]
    regions: Ragged
    profile: Ragged
    beats: Ragged

    def __post_init__(self) -> None:
        self.cum = np.cumsum(self.cols["duration_s"]) if len(self) else np.zeros(0)
        lengths = self.regions.values[1::2] - self.regions.values[0::2] if self.regions.values.size else np.zeros(0)
        self.region_cum = np.cumsum(lengths)  # inclusive, over every region of every stem in order
        self.active_total = np.add.reduceat(lengths, self.regions.starts // 2) if len(self) else np.zeros(0)

    def __len__(self) -> int:
        return len(self.cols["key"])

    def row(self, k: int) -> PoolRow:
        """Stem ``k`` as a :class:`PoolRow`."""
        c = {name: self.cols[name][k] for name in _SCALARS}
        reg = self.regions.row(k)
        return PoolRow(key=str(c["key"]), stem_id=str(c["stem_id"]), source=str(c["source"]), kind=str(c["kind"]),
                       target=self.target, song=str(c["song"]), split=str(c["split"]),
                       sample_rate=int(c["sample_rate"]), channels=int(c["channels"]), frames=int(c["frames"]),
                       duration_s=float(c["duration_s"]), lufs=_opt(c["lufs"]),
                       silence_ratio=float(c["silence_ratio"]),
                       active=tuple(zip(reg[0::2].tolist(), reg[1::2].tolist(), strict=True)),
                       loudness_100ms=self.profile.row(k).astype(np.float32), tempo_bpm=_opt(c["tempo_bpm"]),
                       beats=self.beats.row(k),
                       musical_key=c["musical_key"] if isinstance(c["musical_key"], str) else None,
                       key_confidence=_opt(c["key_confidence"]) or 0.0)

    @cached_property
    def rows(self) -> list[PoolRow]:
        """Every stem as a :class:`PoolRow` (built on first use; the planner reads the columns)."""
        return [self.row(k) for k in range(len(self))]


@dataclass
class StemPool:
    """Everything the planner needs from the catalogue, loaded once."""

    targets: tuple[str, ...]
    pools: dict[str, TargetPool]
    coherent: dict[str, dict[str, PoolRow]]  # song -> target -> row (songs with every target, one source)
    rel_lufs: dict[str, tuple[float, float, int]]  # target -> (mean LU, std LU, songs measured)
    fingerprint: str


def _opt(v: object) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)  # type: ignore[arg-type]


def target_of(kind: str, cfg: RemixConfig) -> str:
    """The output target of a catalogue kind (``kind_map``, else the kind itself)."""
    return cfg.kind_map.get(kind, kind)


def build_pool(catalog: str | Path | Catalog, cfg: RemixConfig, *, splits: Sequence[str] = ("train",)) -> StemPool:
    """Load candidate stems: live, canonical, not silent, of a kind that maps to a target, in ``splits``, passing
    ``cfg.filters`` (:func:`augment.filters.filter_mask`). Levels are calibrated on every canonical row."""
    cat = catalog if isinstance(catalog, Catalog) else Catalog.open(catalog)
    cols = list(dict.fromkeys(POOL_COLUMNS + FILTER_COLUMNS + KEY_COLUMNS))
    t = cat.stems_table(split=list(splits), columns=cols, include_duplicates=not cfg.filters.dedupe)
    kinds = t["kind"].to_numpy(zero_copy_only=False).astype(object)
    target = np.array([target_of(k, cfg) for k in kinds], dtype=object)
    small = pd.DataFrame({c: t[c].to_numpy(zero_copy_only=False) for c in
                          ("kind", "song", "lufs", *FILTER_COLUMNS)}).assign(target=target)
    rel = measured_relative_levels(small[small["duplicate_of"].isna()], cfg)
    ok = filter_mask(small, cfg.filters, small["target"]).to_numpy()
    keep = ok & (kinds != "mixture") & np.isin(target, list(cfg.targets)) & (t["silence_ratio"].to_numpy() < 1.0)
    t, target = t.filter(pa.array(keep)), target[keep]
    songs = t["song"].to_numpy(zero_copy_only=False).astype(object)
    codes = pd.factorize(songs, sort=True)[0].astype(np.int64)
    pools = {}
    for name in cfg.targets:
        pos = np.flatnonzero(target == name)
        pools[name] = _target_pool(name, t.take(pa.array(pos)), codes[pos])
    return StemPool(tuple(cfg.targets), pools, coherent_songs(pools, cfg.targets), rel, cat.fingerprint())


def _target_pool(target: str, t: pa.Table, codes: np.ndarray) -> TargetPool:
    cols: dict[str, np.ndarray] = {}
    for name in _SCALARS:
        a = t[name].combine_chunks() if t.num_rows else pa.array([], type=t.schema.field(name).type)
        cols[name] = a.to_numpy(zero_copy_only=False)
        if pa.types.is_floating(a.type):
            cols[name] = cols[name].astype(np.float64)  # nulls read as NaN
    cols["song_code"] = codes
    active = t["active"].combine_chunks() if t.num_rows else pa.array([], type=pa.list_(pa.list_(pa.float64())))
    regions = _regions(active, cols["duration_s"])
    empty = pa.array([], type=pa.list_(pa.float32()))
    profile = Ragged.from_arrow(t["loudness_100ms"] if t.num_rows else empty)
    beats = Ragged.from_arrow(t["beats"] if t.num_rows else empty)
    return TargetPool(target, cols, regions, profile, beats)


def _regions(active: pa.Array, dur: np.ndarray) -> Ragged:
    """Active regions as ``(start_s, end_s)`` pairs; a stem without any (never silent enough to be cut) gets
    ``(0, duration)``."""
    n_reg = pc.fill_null(pc.list_value_length(active), 0).to_numpy().astype(np.int64)
    pairs = pc.list_flatten(pc.list_flatten(active)).to_numpy(zero_copy_only=False).astype(np.float64)
    n_eff = n_reg + (n_reg == 0)
    owner = np.repeat(np.arange(n_eff.size), n_eff)  # the stem of each region slot
    whole = (n_reg == 0)[owner]
    flat = np.zeros(2 * owner.size)
    flat[0::2][~whole], flat[1::2][~whole] = pairs[0::2], pairs[1::2]
    flat[1::2][whole] = dur[owner[whole]]
    return Ragged(flat, 2 * (np.cumsum(n_eff) - n_eff), 2 * n_eff)


def coherent_songs(pools: dict[str, TargetPool], targets: Sequence[str]) -> dict[str, dict[str, PoolRow]]:
    """Songs with a stem for every target, all from one source: song -> target -> its first row in key order."""
    frames = [pd.DataFrame({"song": p.cols["song"], "source": p.cols["source"], "key": p.cols["key"],
                            "target": name, "pos": np.arange(len(p))}) for name, p in pools.items() if len(p)]
    if not frames:
        return {}
    df = pd.concat(frames, ignore_index=True)
    per_song = df.groupby("song").agg(sources=("source", "nunique"), targets=("target", "nunique"))
    ok = per_song.index[(per_song["sources"] == 1) & (per_song["targets"] == len(targets))]
    if not len(ok):
        return {}
    first = df[df["song"].isin(ok)].sort_values("key", kind="stable").drop_duplicates(["song", "target"])
    out: dict[str, dict[str, PoolRow]] = {}
    for song, target, pos in zip(first["song"], first["target"], first["pos"], strict=True):
        out.setdefault(str(song), {})[str(target)] = pools[target].row(int(pos))
    return {song: {t: out[song][t] for t in targets} for song in sorted(out)}


def measured_relative_levels(df: pd.DataFrame, cfg: RemixConfig) -> dict[str, tuple[float, float, int]]:
    """Per target: mean and std of (stem LUFS - mixture LUFS) over the songs that have a ``mixture`` row.

    ``df``: the catalogue's ``kind``, ``song``, ``lufs`` and ``target`` columns. Silent stems (an instrumental
    song's vocals) are left out. Targets with no measurement fall back to ``levels.fallback_rel_lufs`` (std 0,
    count 0).
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


__all__ = ["POOL_COLUMNS", "PoolRow", "Ragged", "StemPool", "TargetPool", "build_pool", "coherent_songs",
           "measured_relative_levels", "target_of"]
