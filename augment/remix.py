"""The remix planner: recipes for random mixtures, drawn from the catalogue.

For mixture index ``i`` every random choice comes from ``numpy.random.default_rng(SeedSequence([seed, i]))``, so
mixture *i* is the same whatever the number of processes that build the set, and planning is a pure function of
(catalogue, config, seed, i). Draw order for one mixture: split coin, mode coin, mixture loudness, then for each
target in order: silence coin, stem, the target's augmentation chain, window, level (a :class:`Draft`); then
(uniform levels only) one gain per live stem. The candidate stems come from :mod:`augment.pool` as typed rows.

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

import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from augment.chain import StemAugment
from augment.config import RemixConfig
from augment.keys import align_keys
from augment.pool import PoolRow, StemPool, build_pool
from augment.recipe import Recipe, StemPlan
from stemdb.catalog import Catalog
from stemdb.config import fingerprint_of
from stemdb.errors import ConfigError
from stemdb.levels import window_lufs

log = logging.getLogger(__name__)

LEVEL_CLAMP_DB = (-40.0, 30.0)


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
    empty = [t for t in cfg.targets if not pool.pools[t].rows and cfg.silent_prob.get(t, 0.0) < 1.0]
    if empty:
        raise ConfigError(f"remix.targets: no usable stems in the catalogue for {empty} "
                          f"(check remix.kind_map and the catalogue's kinds)", key="remix.targets")
    if cfg.mode == "cross_song":
        songs = {r.song for t in cfg.targets for r in pool.pools[t].rows}
        if len(songs) < len(cfg.targets):
            raise ConfigError(f"remix.mode=cross_song needs at least {len(cfg.targets)} songs, the catalogue has "
                              f"{len(songs)}", key="remix.mode")


def chain_for(cfg: RemixConfig, target: str) -> StemAugment:
    """The augmentation chain of a target (built once per distinct config; shared by planner and renderer)."""
    return _chain_cached(json.dumps(cfg.augment.get(target), sort_keys=True))


@lru_cache(maxsize=64)
def _chain_cached(augment_json: str) -> StemAugment:
    return StemAugment.from_config(json.loads(augment_json))


@dataclass(frozen=True)
class Draft:
    """One target of a cross-song mixture before its level is set: the stem (``None``: silent), the window start
    (seconds, on the stem's sample grid), whether the window loops, the drawn level relative to the mixture (LU,
    before normalisation over the live stems) and the augmentation record (recipe columns)."""

    target: str
    row: PoolRow | None
    offset_s: float = 0.0
    loop: bool = False
    rel_lufs: float = 0.0
    augment: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def stretch_rate(self) -> float:
        return float(self.augment.get("stretch_rate", 1.0))


def _plan_cross_song(rng: np.random.Generator, pool: StemPool, cfg: RemixConfig, dur: float,
                     mix_target: float) -> tuple[list[StemPlan], float | None]:
    drafts = _draw_drafts(rng, pool, cfg, dur)
    beat_score = None
    if cfg.tempo.enabled:
        drafts, beat_score = align_tempo(drafts, dur, cfg.tempo.max_rate_change)
    if cfg.key.enabled:
        drafts, _key_score = align_keys(drafts, cfg.key.max_shift, cfg.key.min_confidence)
    live = [d.rel_lufs for d in drafts if d.row is not None]
    c = 10.0 * math.log10(sum(10.0 ** (r / 10.0) for r in live)) if live else 0.0
    return [_stem_plan(rng, d, cfg, dur, mix_target, c) for d in drafts], beat_score


def _draw_drafts(rng: np.random.Generator, pool: StemPool, cfg: RemixConfig, dur: float) -> list[Draft]:
    """Per target in order: silence coin, stem from an unused song, augmentation, window, relative level."""
    used: set[str] = set()
    drafts = []
    for t in cfg.targets:
        silent = rng.random() < cfg.silent_prob.get(t, 0.0)
        row = None if silent else pool.pools[t].draw(rng, used)
        chain = chain_for(cfg, t)
        aug = chain.to_record(chain.draw(rng))
        if row is None:
            if not silent:
                log.debug("target %s: no stem from an unused song; silent", t)
            drafts.append(Draft(t, None, augment=aug))
            continue
        used.add(row.song)
        offset, loop = _draw_window(rng, row, dur * float(aug.get("stretch_rate", 1.0)), cfg.short)
        mean, _std, _n = pool.rel_lufs[t]
        rel = float(rng.normal(mean, cfg.levels.spread_lu)) if cfg.levels.spread_lu > 0 else mean
        drafts.append(Draft(t, row, offset, loop, rel, aug))
    return drafts


def _stem_plan(rng: np.random.Generator, d: Draft, cfg: RemixConfig, dur: float, mix_target: float,
               c: float) -> StemPlan:
    """A draft's plan with its level: calibrated (the gain that brings the window's loudness, from the stored
    profile, to ``mix_target + rel - c``) or uniform (a random gain)."""
    if d.row is None:
        return StemPlan(target=d.target, stem_id=None, augment=d.augment)
    row = d.row
    if cfg.levels.mode == "calibrated":
        rel_mix = d.rel_lufs - c
        wl = window_lufs(np.asarray(row.loudness_100ms), d.offset_s, dur * d.stretch_rate)
        wl += _channel_change_lu(row.channels, cfg.channels)
        level = float(np.clip(mix_target + rel_mix - wl, *LEVEL_CLAMP_DB)) if math.isfinite(wl) else 0.0
    else:
        rel_mix = None
        level = float(rng.uniform(*cfg.levels.uniform_gain_db))
    return StemPlan(target=d.target, stem_id=row.stem_id, kind=row.kind, song=row.song, offset_s=d.offset_s,
                    loop=d.loop, rel_lufs=rel_mix, level_db=level, augment=d.augment)


#: Beats closer than this (seconds, in the mixture's time) count as aligned in the beat score.
BEAT_TOLERANCE_S = 0.07


def align_tempo(drafts: list[Draft], dur: float, max_rate_change: float) -> tuple[list[Draft], float | None]:
    """Tempo-aware mixing: stretch stems to the reference stem's tempo and align their beats to its beat grid.

    The reference is the drums stem when it has a tempo, else the first stem that has one. Another stem with a
    tempo is stretched by ``rate = ref_bpm / bpm`` (times 1/2 or 2 if that is closer to 1: octave errors of beat
    trackers) when ``|rate - 1| <= max_rate_change``, and its window start moves (by less than one beat) so that
    one of its beats lands on the reference's first beat in the mixture. Returns the new drafts and the beat score:
    the share of beats of the other stems, mapped to mixture time, within :data:`BEAT_TOLERANCE_S` of a reference
    beat (None when fewer than two stems have beats).
    """
    with_beats = [d for d in drafts if d.row is not None and d.row.has_beats]
    if len(with_beats) < 2:
        return drafts, None
    ref = next((d for d in with_beats if d.target == "drums"), with_beats[0])
    ref_beats = (np.asarray(ref.row.beats, dtype=np.float64) - ref.offset_s) / ref.stretch_rate
    ref_beats = ref_beats[(ref_beats >= 0) & (ref_beats < dur)]
    if ref_beats.size == 0:
        return drafts, None
    out, hits, total = [], 0, 0
    for d in drafts:
        if d is ref or not any(d is b for b in with_beats):
            out.append(d)
            continue
        d = _align_to(d, ref, ref_beats, max_rate_change)
        mapped = (np.asarray(d.row.beats, dtype=np.float64) - d.offset_s) / d.stretch_rate
        mapped = mapped[(mapped >= 0) & (mapped < dur)]
        if mapped.size:
            dist = np.min(np.abs(mapped[:, None] - ref_beats[None, :]), axis=1)
            hits += int((dist <= BEAT_TOLERANCE_S).sum())
            total += int(mapped.size)
        out.append(d)
    return out, (hits / total if total else None)


def _align_to(d: Draft, ref: Draft, ref_beats: np.ndarray, max_rate_change: float) -> Draft:
    """``d`` stretched to the reference's tempo and moved so that a beat lands on its first beat (when the rate
    change is allowed), else ``d`` unchanged."""
    row = d.row
    rate = float(ref.row.tempo_bpm) * ref.stretch_rate / float(row.tempo_bpm)
    rate = min((rate * k for k in (0.5, 1.0, 2.0)), key=lambda r: abs(r - 1.0))
    if abs(rate - 1.0) > max_rate_change:
        return d
    beats = np.asarray(row.beats, dtype=np.float64)
    offset = d.offset_s
    # the first beat of the stem at or after the drawn window start lands on the first reference beat
    b = beats[beats >= offset + ref_beats[0] * rate]
    if b.size:
        sr = row.sample_rate
        offset = max(0.0, round((float(b[0]) - ref_beats[0] * rate) * sr) / sr)
    return dataclasses.replace(d, offset_s=offset, augment={**d.augment, "stretch_rate": float(rate)})


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
    length = min(r.duration_s for r in rows.values())
    start = float(rng.uniform(0.0, max(0.0, length - dur)))
    plans = []
    for t in cfg.targets:
        chain = chain_for(cfg, t)
        aug = chain.to_record(chain.draw(rng))
        aug["stretch_rate"] = 1.0  # aligned stems keep their timing
        r = rows[t]
        off = round(start * r.sample_rate) / r.sample_rate
        plans.append(StemPlan(target=t, stem_id=r.stem_id, kind=r.kind, song=song, offset_s=off,
                              loop=False, rel_lufs=None, level_db=0.0, augment=aug))
    return plans


def _draw_window(rng: np.random.Generator, row: PoolRow, span_s: float, short: str) -> tuple[float, bool]:
    """Start (seconds, on the source's sample grid) of a window of ``span_s`` that overlaps an active region."""
    sr = row.sample_rate
    dur = row.duration_s
    u1, u2, u3 = rng.random(), rng.random(), rng.random()
    if dur <= span_s:
        return 0.0, short == "loop"
    regions = list(row.active) or [(0.0, dur)]
    lengths = np.array([b - a for a, b in regions])
    k = int(np.searchsorted(np.cumsum(lengths), u1 * lengths.sum(), side="right"))
    a, b = regions[min(k, len(regions) - 1)]
    point = a + u2 * (b - a)  # a moment of activity the window must contain
    lo = max(0.0, point - span_s)
    hi = min(point, dur - span_s)
    start = lo + u3 * max(0.0, hi - lo)
    return round(start * sr) / sr, False
