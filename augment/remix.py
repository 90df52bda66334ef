"""The remix planner: recipes for random mixtures, drawn from the catalogue.

For mixture index ``i`` every random choice comes from ``numpy.random.default_rng(SeedSequence([seed, i]))``, so
mixture *i* is the same whatever the number of processes that build the set, and planning is a pure function of
(catalogue, config, seed, i). Draw order for one mixture: split coin, mode coin, mixture loudness, then for each
target in order: silence coin, stem, window, level, and the target's augmentation chain.

Modes:
- ``cross_song`` (default): each target's stem from a different song, stems chosen with probability
  proportional to their duration, windows drawn inside the stem's active (non-silent) regions;
- ``coherent``: the aligned stems of one multitrack song, at their original levels (one window for all);
- ``mixed``: coherent with probability ``coherent_weight``, else cross-song.

Levels (``levels.mode = calibrated``): each stem's level relative to the mixture is drawn from a normal
distribution around the mean measured on the catalogue's real multitracks for its target (spread ``spread_lu``),
the mixture loudness from ``mix_lufs``, and the gain that brings the window there is computed from the stem's
stored loudness profile (no decoding). ``uniform`` draws plain random gains in dB instead.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from augment.recipe import Recipe, StemPlan
from augment.transforms import StemAugment
from stemdb.catalog import Catalog
from stemdb.config import RemixConfig, fingerprint_of
from stemdb.errors import ConfigError
from stemdb.levels import window_lufs

log = logging.getLogger(__name__)

POOL_COLUMNS = ["key", "stem_id", "source", "root", "path", "stream", "kind", "song", "split", "sample_rate",
                "channels", "frames", "duration_s", "lufs", "silence_ratio", "active", "loudness_100ms",
                "tempo_bpm", "beats"]
LEVEL_CLAMP_DB = (-40.0, 30.0)


@dataclass
class TargetPool:
    """Candidate stems of one target (rows as plain dicts for fast access), with cumulative duration weights for
    O(log n) draws proportional to duration."""

    rows: pd.DataFrame
    cum: np.ndarray  # cumulative duration_s

    def __post_init__(self) -> None:
        self.records: list[dict] = self.rows.to_dict("records")
        self.songs = np.asarray(self.rows["song"].astype(str)) if len(self.rows) else np.array([], dtype=str)

    def draw(self, rng: np.random.Generator, exclude_songs: set[str]) -> dict | None:
        if not self.records:
            return None
        for _ in range(32):
            i = int(np.searchsorted(self.cum, rng.random() * self.cum[-1], side="right"))
            row = self.records[min(i, len(self.records) - 1)]
            if row["song"] not in exclude_songs:
                return row
        ok = np.flatnonzero(~np.isin(self.songs, list(exclude_songs)))
        if ok.size == 0:
            return None
        w = self.rows["duration_s"].to_numpy()[ok]
        i = int(np.searchsorted(np.cumsum(w), rng.random() * w.sum(), side="right"))
        return self.records[int(ok[min(i, ok.size - 1)])]


@dataclass
class StemPool:
    """Everything the planner needs from the catalogue, loaded once."""

    targets: tuple[str, ...]
    pools: dict[str, TargetPool]
    coherent: dict[str, dict[str, pd.Series]]  # song -> target -> row (songs with every target)
    rel_lufs: dict[str, tuple[float, float, int]]  # target -> (mean LU, std LU, songs measured)
    fingerprint: str


def target_of(kind: str, cfg: RemixConfig) -> str:
    """The output target of a catalogue kind (``kind_map``, else the kind itself)."""
    return cfg.kind_map.get(kind, kind)


def build_pool(catalog: str | Path | Catalog, cfg: RemixConfig, *, splits: Sequence[str] = ("train",)) -> StemPool:
    """Load candidate stems: live, canonical, not silent, of a kind that maps to a target, in ``splits``."""
    cat = catalog if isinstance(catalog, Catalog) else Catalog.open(catalog)
    df = cat.stems(split=list(splits), columns=POOL_COLUMNS)
    df = df.assign(target=[target_of(k, cfg) for k in df["kind"]])
    rel = measured_relative_levels(df, cfg)
    stems = df[(df["kind"] != "mixture") & df["target"].isin(cfg.targets) & (df["silence_ratio"] < 1.0)]
    stems = stems.sort_values("key", ignore_index=True)
    pools = {}
    for t in cfg.targets:
        rows = stems[stems["target"] == t].reset_index(drop=True)
        pools[t] = TargetPool(rows, np.cumsum(rows["duration_s"].to_numpy()))
    coherent: dict[str, dict[str, pd.Series]] = {}
    for song, g in stems.groupby("song", sort=True):
        by_t = {t: g[g["target"] == t].iloc[0] for t in cfg.targets if (g["target"] == t).any()}
        if len(by_t) == len(cfg.targets) and g["source"].nunique() == 1:
            coherent[str(song)] = by_t
    return StemPool(tuple(cfg.targets), pools, coherent, rel, cat.fingerprint())


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


def mixture_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of mixture ``index``: depends on (seed, index) alone."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def plan_mixture(index: int, *, seed: int, pool: StemPool, cfg: RemixConfig, seconds: float | None = None) -> Recipe:
    """Plan mixture ``index``. Pure: same (pool, cfg, seed, index) -> same recipe."""
    rng = mixture_rng(seed, index)
    dur = float(seconds if seconds is not None else cfg.seconds)
    split = "valid" if rng.random() < cfg.valid_fraction else "train"
    coherent_coin = rng.random()
    mix_target = float(rng.uniform(*cfg.levels.mix_lufs))
    want_coherent = cfg.mode == "coherent" or (cfg.mode == "mixed" and coherent_coin < cfg.coherent_weight)
    beat_score = None
    if want_coherent and pool.coherent:
        stems = _plan_coherent(rng, pool, cfg, dur)
        mode = "coherent"
    else:
        if want_coherent:
            log.warning("coherent mixture %d asked for, but no multitrack song has every target: cross_song", index)
        stems, beat_score = _plan_cross_song(rng, pool, cfg, dur, mix_target)
        mode = "cross_song"
    return Recipe(
        index=int(index), seed=int(seed), split=split, mode=mode, duration_s=dur, sample_rate=cfg.sample_rate,
        channels=cfg.channels, subtype=cfg.subtype, stems=tuple(stems),
        mix_target_lufs=mix_target if mode == "cross_song" and cfg.levels.mode == "calibrated" else None,
        beat_score=beat_score, catalog_fingerprint=pool.fingerprint, config_fingerprint=fingerprint_of(cfg),
    )


def plan_recipes(catalog: str | Path | Catalog, *, n: int, seed: int, cfg: RemixConfig,
                 seconds: float | None = None, start: int = 0, pool: StemPool | None = None) -> list[Recipe]:
    """Plan mixtures ``start .. start + n - 1``."""
    if n < 0:
        raise ConfigError(f"n={n} must be >= 0", key="n")
    pool = pool or build_pool(catalog, cfg)
    _check_pool(pool, cfg)
    return [plan_mixture(i, seed=seed, pool=pool, cfg=cfg, seconds=seconds) for i in range(start, start + n)]


def _check_pool(pool: StemPool, cfg: RemixConfig) -> None:
    empty = [t for t in cfg.targets if pool.pools[t].rows.empty and cfg.silent_prob.get(t, 0.0) < 1.0]
    if empty:
        raise ConfigError(f"remix.targets: no usable stems in the catalogue for {empty} "
                          f"(check remix.kind_map and the catalogue's kinds)", key="remix.targets")
    if cfg.mode == "cross_song":
        songs = set()
        for t in cfg.targets:
            songs.update(pool.pools[t].rows["song"])
        if len(songs) < len(cfg.targets):
            raise ConfigError(f"remix.mode=cross_song needs at least {len(cfg.targets)} songs, the catalogue has "
                              f"{len(songs)}", key="remix.mode")


def chain_for(cfg: RemixConfig, target: str) -> StemAugment:
    """The augmentation chain of a target (built once per distinct config; shared by planner and renderer)."""
    return _chain_cached(json.dumps(cfg.augment.get(target), sort_keys=True))


@lru_cache(maxsize=64)
def _chain_cached(augment_json: str) -> StemAugment:
    return StemAugment.from_config(json.loads(augment_json))


def _plan_cross_song(rng: np.random.Generator, pool: StemPool, cfg: RemixConfig, dur: float,
                     mix_target: float) -> tuple[list[StemPlan], float | None]:
    used: set[str] = set()
    drafts = []
    for t in cfg.targets:
        silent = rng.random() < cfg.silent_prob.get(t, 0.0)
        row = None if silent else pool.pools[t].draw(rng, used)
        chain = chain_for(cfg, t)
        params = chain.draw(rng)
        aug = chain.to_record(params)
        rate = float(aug.get("stretch_rate", 1.0))
        if row is None:
            if not silent:
                log.debug("target %s: no stem from an unused song; silent", t)
            drafts.append((t, None, 0.0, False, 0.0, aug))
            continue
        used.add(str(row["song"]))
        offset, loop = _draw_window(rng, row, dur * rate, cfg.short)
        mean, _std, _n = pool.rel_lufs[t]
        rel = float(rng.normal(mean, cfg.levels.spread_lu)) if cfg.levels.spread_lu > 0 else mean
        drafts.append((t, row, offset, loop, rel, aug))
    beat_score = None
    if cfg.tempo.enabled:
        drafts, beat_score = align_tempo(drafts, dur, cfg.tempo.max_rate_change)
    live = [d[4] for d in drafts if d[1] is not None]
    c = 10.0 * math.log10(sum(10.0 ** (r / 10.0) for r in live)) if live else 0.0
    plans = []
    for t, row, offset, loop, rel, aug in drafts:
        if row is None:
            plans.append(StemPlan(target=t, stem_id=None, augment=aug))
            continue
        rate = float(aug.get("stretch_rate", 1.0))
        if cfg.levels.mode == "calibrated":
            rel_mix = rel - c
            wl = window_lufs(np.asarray(row["loudness_100ms"]), offset, dur * rate)
            wl += _channel_change_lu(int(row["channels"]), cfg.channels)
            level = float(np.clip(mix_target + rel_mix - wl, *LEVEL_CLAMP_DB)) if math.isfinite(wl) else 0.0
        else:
            rel_mix = None
            level = float(rng.uniform(*cfg.levels.uniform_gain_db))
        plans.append(StemPlan(target=t, stem_id=str(row["stem_id"]), kind=str(row["kind"]), song=str(row["song"]),
                              offset_s=offset, loop=loop, rel_lufs=rel_mix, level_db=level, augment=aug))
    return plans, beat_score


#: Beats closer than this (seconds, in the mixture's time) count as aligned in the beat score.
BEAT_TOLERANCE_S = 0.07


def align_tempo(drafts: list[tuple], dur: float, max_rate_change: float) -> tuple[list[tuple], float | None]:
    """Tempo-aware mixing: stretch stems to the reference stem's tempo and align their beats to its beat grid.

    The reference is the drums stem when it has a tempo, else the first stem that has one. Another stem with a
    tempo is stretched by ``rate = ref_bpm / bpm`` (times 1/2 or 2 if that is closer to 1: octave errors of beat
    trackers) when ``|rate - 1| <= max_rate_change``, and its window start moves (by less than one beat) so that
    one of its beats lands on the reference's first beat in the mixture. Draft tuples are
    ``(target, row, offset_s, loop, rel_lufs, augment)``. Returns the new drafts and the beat score: the share of
    beats of the other stems, mapped to mixture time, within :data:`BEAT_TOLERANCE_S` of a reference beat
    (None when fewer than two stems have beats).
    """
    with_beats = [d for d in drafts if d[1] is not None and d[1].get("tempo_bpm") and len(d[1].get("beats", [])) > 1]
    if len(with_beats) < 2:
        return drafts, None
    ref = next((d for d in with_beats if d[0] == "drums"), with_beats[0])
    ref_rate = float(ref[5].get("stretch_rate", 1.0))
    ref_beats = (np.asarray(ref[1]["beats"], dtype=np.float64) - ref[2]) / ref_rate
    ref_beats = ref_beats[(ref_beats >= 0) & (ref_beats < dur)]
    if ref_beats.size == 0:
        return drafts, None
    out, hits, total = [], 0, 0
    beat_ids = {id(d) for d in with_beats}
    for d in drafts:
        t, row, offset, loop, rel, aug = d
        if d is ref or row is None or id(d) not in beat_ids:
            out.append(d)
            continue
        rate = float(ref[1]["tempo_bpm"]) * ref_rate / float(row["tempo_bpm"])
        rate = min((rate * k for k in (0.5, 1.0, 2.0)), key=lambda r: abs(r - 1.0))
        beats = np.asarray(row["beats"], dtype=np.float64)
        if abs(rate - 1.0) <= max_rate_change:
            aug = {**aug, "stretch_rate": float(rate)}
            # the first beat of the stem at or after the drawn window start lands on the first reference beat
            b = beats[beats >= offset + ref_beats[0] * rate]
            if b.size:
                sr = int(row["sample_rate"])
                offset = max(0.0, round((float(b[0]) - ref_beats[0] * rate) * sr) / sr)
        mapped = (beats - offset) / float(aug.get("stretch_rate", 1.0))
        mapped = mapped[(mapped >= 0) & (mapped < dur)]
        if mapped.size:
            dist = np.min(np.abs(mapped[:, None] - ref_beats[None, :]), axis=1)
            hits += int((dist <= BEAT_TOLERANCE_S).sum())
            total += int(mapped.size)
        out.append((t, row, offset, loop, rel, aug))
    return out, (hits / total if total else None)


def _channel_change_lu(src_channels: int, out_channels: int) -> float:
    """Loudness change of the render's channel conversion: mono copied to both channels adds 10 log10(2) LU;
    a stereo pair averaged to mono loses that much (exact for dual mono, close for typical stems)."""
    if src_channels == 1 and out_channels == 2:
        return 10.0 * math.log10(2.0)
    if src_channels >= 2 and out_channels == 1:
        return -10.0 * math.log10(2.0)
    return 0.0


def _plan_coherent(rng: np.random.Generator, pool: StemPool, cfg: RemixConfig, dur: float) -> list[StemPlan]:
    songs = sorted(pool.coherent)
    song = songs[int(rng.integers(len(songs)))]
    rows = pool.coherent[song]
    length = min(float(r["duration_s"]) for r in rows.values())
    start = float(rng.uniform(0.0, max(0.0, length - dur)))
    plans = []
    for t in cfg.targets:
        chain = chain_for(cfg, t)
        aug = chain.to_record(chain.draw(rng))
        aug["stretch_rate"] = 1.0  # aligned stems keep their timing
        r = rows[t]
        off = round(start * int(r["sample_rate"])) / int(r["sample_rate"])
        plans.append(StemPlan(target=t, stem_id=str(r["stem_id"]), kind=str(r["kind"]), song=song, offset_s=off,
                              loop=False, rel_lufs=None, level_db=0.0, augment=aug))
    return plans


def _draw_window(rng: np.random.Generator, row: dict, span_s: float, short: str) -> tuple[float, bool]:
    """Start (seconds, on the source's sample grid) of a window of ``span_s`` that overlaps an active region."""
    sr = int(row["sample_rate"])
    dur = float(row["duration_s"])
    u1, u2, u3 = rng.random(), rng.random(), rng.random()
    if dur <= span_s:
        return 0.0, short == "loop"
    regions = [(float(a), float(b)) for a, b in row["active"]] or [(0.0, dur)]
    lengths = np.array([b - a for a, b in regions])
    k = int(np.searchsorted(np.cumsum(lengths), u1 * lengths.sum(), side="right"))
    a, b = regions[min(k, len(regions) - 1)]
    point = a + u2 * (b - a)  # a moment of activity the window must contain
    lo = max(0.0, point - span_s)
    hi = min(point, dur - span_s)
    start = lo + u3 * max(0.0, hi - lo)
    return round(start * sr) / sr, False
