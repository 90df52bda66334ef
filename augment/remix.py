"""The remix planner: recipes for random mixtures, drawn from the catalogue, thousands at a time.

Randomness. Mixture ``i`` of a set seeded ``seed`` reads one row of uniforms, ``augment.rng.uniforms(seed, [i],
width)``: a pure function of ``(seed, i)`` (counter-based Philox), so mixture *i* is the same whatever the number of
processes, the chunking, or which other indices are planned with it; planning is a pure function of (catalogue,
config, seed, i). The row's columns are laid out by :func:`layout` (a function of the config): the split coin, the
mode coin, the mixture loudness, the coherent song and start, then per target in order a block of the silence coin,
the stem draw (a first try, :data:`SONG_RETRIES` retries when its song is already in the mixture, one exact
fallback), the window (three), the relative level, the uniform gain, and the target's augmentation chain. Every
column is read by one draw only, so changing one probability never shifts another draw. Recipe schema version 2
(:mod:`augment.recipe`).

Vectorised. :func:`plan_block` plans any set of indices at once with array operations over the pool's columns
(:mod:`augment.pool`): stems by ``searchsorted`` on cumulative durations, windows inside active regions, levels from
the stored loudness profiles (:func:`stemdb.levels.windows_lufs`). Tempo-aware alignment, when on, runs per mixture
in Python after the draws (:func:`align_tempo`).

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
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import ndtri

from augment.chain import StemAugment
from augment.config import RemixConfig
from augment.keys import align_keys
from augment.params import uniform
from augment.pool import PoolRow, StemPool, TargetPool, build_pool
from augment.recipe import RECIPE_VERSION, Recipe, RecipeBlock
from augment.rng import uniforms
from stemdb.catalog import Catalog
from stemdb.config import fingerprint_of
from stemdb.errors import ConfigError
from stemdb.levels import windows_lufs

log = logging.getLogger(__name__)

LEVEL_CLAMP_DB = (-40.0, 30.0)
#: Redraws of a stem whose song is already in the mixture before the exact (slower) fallback.
SONG_RETRIES = 8
_MIX_COLUMNS = 5  # split, mode coin, mixture loudness, coherent song, coherent start
_SILENT, _STEM, _FALLBACK = 0, 1, 2 + SONG_RETRIES
_WINDOW, _REL, _GAIN, _CHAIN = 3 + SONG_RETRIES, 6 + SONG_RETRIES, 7 + SONG_RETRIES, 8 + SONG_RETRIES


@dataclass(frozen=True)
class Layout:
    """Where each draw reads its uniforms: ``base[target]`` is the first column of the target's block."""

    width: int
    base: dict[str, int]


def layout(cfg: RemixConfig) -> Layout:
    """The uniform columns of one mixture for ``cfg`` (see the module docstring)."""
    base, col = {}, _MIX_COLUMNS
    for t in cfg.targets:
        base[t] = col
        col += _CHAIN + chain_for(cfg, t).n_draws
    return Layout(col, base)


def chain_for(cfg: RemixConfig, target: str) -> StemAugment:
    """The augmentation chain of a target (built once per distinct config; shared by planner and renderer)."""
    return _chain_cached(json.dumps(cfg.augment.get(target), sort_keys=True))


@lru_cache(maxsize=64)
def _chain_cached(augment_json: str) -> StemAugment:
    return StemAugment.from_config(json.loads(augment_json))


def plan_block(pool: StemPool, cfg: RemixConfig, *, seed: int, indices: Sequence[int] | np.ndarray,
               seconds: float | None = None) -> RecipeBlock:
    """Plan the mixtures ``indices`` (any order, any set) as one :class:`RecipeBlock`. Pure: row ``k`` depends on
    (pool, cfg, seed, ``indices[k]``) alone."""
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    lay = layout(cfg)
    u = uniforms(seed, idx, lay.width)
    dur = float(seconds if seconds is not None else cfg.seconds)
    n = idx.size
    mix_target = uniform(u[:, 2], *cfg.levels.mix_lufs)
    coherent = np.full(n, cfg.mode == "coherent") | ((cfg.mode == "mixed") & (u[:, 1] < cfg.coherent_weight))
    if coherent.any() and not pool.coherent:
        log.warning("%d coherent mixtures asked for, but no multitrack song has every target: cross_song",
                    int(coherent.sum()))
        coherent[:] = False
    cols: dict[str, Any] = {
        "recipe_version": np.full(n, RECIPE_VERSION), "index": idx, "seed": np.full(n, int(seed)),
        "split": np.where(u[:, 0] < cfg.valid_fraction, "valid", "train").astype(object),
        "mode": np.where(coherent, "coherent", "cross_song").astype(object), "duration_s": np.full(n, dur),
        "sample_rate": np.full(n, cfg.sample_rate), "channels": np.full(n, cfg.channels),
        "subtype": np.full(n, cfg.subtype, dtype=object), "mix_lufs": np.full(n, np.nan),
        "mix_peak_dbfs": np.full(n, np.nan), "clip_scale_db": np.full(n, np.nan),
        "mix_target_lufs": np.where(~coherent & (cfg.levels.mode == "calibrated"), mix_target, np.nan),
        "beat_score": np.full(n, np.nan), "catalog_fingerprint": np.full(n, pool.fingerprint, dtype=object),
        "config_fingerprint": np.full(n, fingerprint_of(cfg), dtype=object),
    }
    for t in cfg.targets:
        b = lay.base[t]
        cols.update({f"{t}_{k}": v for k, v in
                     chain_for(cfg, t).draw_columns(u[:, b + _CHAIN : b + _CHAIN + chain_for(cfg, t).n_draws]).items()})
    if (~coherent).any():
        _scatter(cols, ~coherent, _plan_cross_song(pool, cfg, u[~coherent], lay, dur, mix_target[~coherent]))
    if coherent.any():
        _scatter(cols, coherent, _plan_coherent(pool, cfg, u[coherent], dur))
    return RecipeBlock(tuple(cfg.targets), cols)


def _scatter(cols: dict[str, Any], mask: np.ndarray, part: dict[str, np.ndarray]) -> None:
    """Write the columns ``part`` (planned for the rows ``mask``) into ``cols``."""
    n = mask.size
    for k, v in part.items():
        if k not in cols:
            cols[k] = np.full(n, None, dtype=object) if v.dtype == object else np.zeros(n, dtype=v.dtype)
        cols[k][mask] = v


def plan_recipes(catalog: str | Path | Catalog, *, n: int, seed: int, cfg: RemixConfig,
                 seconds: float | None = None, start: int = 0, pool: StemPool | None = None) -> list[Recipe]:
    """Plan mixtures ``start .. start + n - 1`` as :class:`Recipe` objects."""
    if n < 0:
        raise ConfigError(f"n={n} must be >= 0", key="n")
    pool = pool or build_pool(catalog, cfg)
    check_pool(pool, cfg)
    return plan_block(pool, cfg, seed=seed, indices=np.arange(start, start + n), seconds=seconds).recipes()


def plan_mixture(index: int, *, seed: int, pool: StemPool, cfg: RemixConfig, seconds: float | None = None) -> Recipe:
    """Plan mixture ``index``. Pure: same (pool, cfg, seed, index) -> same recipe (as in any block)."""
    return plan_block(pool, cfg, seed=seed, indices=[index], seconds=seconds).recipe(0)


def check_pool(pool: StemPool, cfg: RemixConfig) -> None:
    """Raise a :class:`ConfigError` naming the key when the pool cannot give the mixtures ``cfg`` asks for."""
    empty = [t for t in cfg.targets if not len(pool.pools[t]) and cfg.silent_prob.get(t, 0.0) < 1.0]
    if empty:
        raise ConfigError(f"remix.targets: no usable stems in the catalogue for {empty} "
                          f"(check remix.kind_map and the catalogue's kinds)", key="remix.targets")
    if cfg.mode == "cross_song":
        songs = set().union(*(set(pool.pools[t].cols["song_code"].tolist()) for t in cfg.targets))
        if len(songs) < len(cfg.targets):
            raise ConfigError(f"remix.mode=cross_song needs at least {len(cfg.targets)} songs, the catalogue has "
                              f"{len(songs)}", key="remix.mode")


@dataclass
class Drafts:
    """One target's draws for ``n`` cross-song mixtures: the stem (``row`` position in the target pool, -1 silent),
    the window start (seconds, on the stem's grid), loop, the relative level (LU) and the stretch rate."""

    row: np.ndarray
    offset: np.ndarray
    loop: np.ndarray
    rel: np.ndarray
    rate: np.ndarray


def _plan_cross_song(pool: StemPool, cfg: RemixConfig, u: np.ndarray, lay: Layout, dur: float,
                     mix_target: np.ndarray) -> dict[str, np.ndarray]:
    n = len(u)
    used = np.full((n, len(cfg.targets)), -1, dtype=np.int64)
    drafts: dict[str, Drafts] = {}
    for j, t in enumerate(cfg.targets):
        tp, b = pool.pools[t], lay.base[t]
        silent = u[:, b + _SILENT] < cfg.silent_prob.get(t, 0.0)
        k = draw_stems(tp, u[:, b + _STEM : b + _FALLBACK + 1], used[:, :j], ~silent)
        live = k >= 0
        used[live, j] = tp.cols["song_code"][k[live]]
        rate = _stretch_column(cfg, t, u[:, b + _CHAIN :], n)
        offset, loop = np.zeros(n), np.zeros(n, dtype=bool)
        offset[live], loop[live] = draw_windows(tp, k[live], dur * rate[live], u[live, b + _WINDOW : b + _REL],
                                                cfg.short)
        mean = pool.rel_lufs[t][0]
        rel = mean + cfg.levels.spread_lu * ndtri(u[:, b + _REL]) if cfg.levels.spread_lu > 0 else np.full(n, mean)
        drafts[t] = Drafts(k, offset, loop, np.where(live, rel, np.nan), rate)
    beat = _align_all(pool, cfg, drafts, dur) if cfg.tempo.enabled else np.full(n, np.nan)
    rel_all = np.stack([d.rel for d in drafts.values()], axis=1)
    with np.errstate(divide="ignore"):
        c = np.where(np.isnan(rel_all).all(axis=1), 0.0, 10.0 * np.log10(np.nansum(10.0 ** (rel_all / 10.0), axis=1)))
    out: dict[str, np.ndarray] = {"beat_score": beat}
    for t, d in drafts.items():
        out.update(_stem_columns(pool.pools[t], t, d, cfg, dur, mix_target, c, u[:, lay.base[t] + _GAIN]))
    if cfg.key.enabled:
        pitch = {t: chain_for(cfg, t).draw_columns(u[:, lay.base[t] + _CHAIN : lay.base[t] + _CHAIN
                                                      + chain_for(cfg, t).n_draws])["pitch_semitones"].copy()
                 for t in cfg.targets}
        _align_keys_all(pool, cfg, drafts, pitch)
        out.update({f"{t}_pitch_semitones": v for t, v in pitch.items()})
    return out


def _stretch_column(cfg: RemixConfig, target: str, u_chain: np.ndarray, n: int) -> np.ndarray:
    chain = chain_for(cfg, target)
    if "stretch" not in chain.names:
        return np.ones(n)
    return chain.draw_columns(u_chain[:, : chain.n_draws])["stretch_rate"]


def draw_stems(tp: TargetPool, u: np.ndarray, used: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Stems (positions in ``tp``, -1 for none) drawn proportionally to duration for the rows ``want``, each from a
    song not in its row of ``used`` (song codes, -1 = none): a first try, then :data:`SONG_RETRIES` redraws, then an
    exact draw among the allowed stems from the last column (``-1`` when every song is taken)."""
    n = len(u)
    k = np.full(n, -1, dtype=np.int64)
    if not len(tp):
        return k
    total, last = tp.cum[-1], len(tp) - 1
    todo = want.copy()
    for r in range(1 + SONG_RETRIES):
        rows = np.flatnonzero(todo)
        if not rows.size:
            return k
        cand = np.minimum(np.searchsorted(tp.cum, u[rows, r] * total, side="right"), last)
        ok = ~(tp.cols["song_code"][cand][:, None] == used[rows]).any(axis=1)
        k[rows[ok]] = cand[ok]
        todo[rows[ok]] = False
    for row in np.flatnonzero(todo):
        allowed = np.flatnonzero(~np.isin(tp.cols["song_code"], used[row]))
        if allowed.size:
            cum = np.cumsum(tp.cols["duration_s"][allowed])
            pick = int(np.searchsorted(cum, u[row, -1] * cum[-1], side="right"))
            k[row] = allowed[min(pick, allowed.size - 1)]
    return k


def draw_windows(tp: TargetPool, rows: np.ndarray, span: np.ndarray, u: np.ndarray,
                 short: str) -> tuple[np.ndarray, np.ndarray]:
    """Window starts (seconds, on each source's sample grid) and loop flags of windows of ``span`` seconds that
    overlap an active region: a region drawn proportionally to its length (``u[:, 0]``), a moment in it
    (``u[:, 1]``), the window placed around that moment (``u[:, 2]``). A stem no longer than its span starts at 0
    and loops when ``short == "loop"``."""
    dur, sr = tp.cols["duration_s"][rows], tp.cols["sample_rate"][rows]
    first = tp.regions.starts[rows] // 2
    count = tp.regions.lengths[rows] // 2
    base = np.where(first > 0, tp.region_cum[np.maximum(first - 1, 0)], 0.0)
    j = np.searchsorted(tp.region_cum, base + u[:, 0] * tp.active_total[rows], side="right")
    j = np.clip(j, first, first + count - 1)
    a, b = tp.regions.values[2 * j], tp.regions.values[2 * j + 1]
    point = a + u[:, 1] * (b - a)
    lo = np.maximum(0.0, point - span)
    hi = np.minimum(point, dur - span)
    start = lo + u[:, 2] * np.maximum(0.0, hi - lo)
    short_ = dur <= span
    return np.where(short_, 0.0, np.rint(start * sr) / sr), short_ & (short == "loop")


def _stem_columns(tp: TargetPool, t: str, d: Drafts, cfg: RemixConfig, dur: float, mix_target: np.ndarray,
                  c: np.ndarray, u_gain: np.ndarray) -> dict[str, np.ndarray]:
    """A target's stem columns with its level: calibrated (the gain that brings the window's loudness, from the
    stored profile, to ``mix_target + rel - c``) or uniform (a random gain)."""
    live = d.row >= 0
    rows = d.row[live]
    level = np.zeros(live.size)
    if cfg.levels.mode == "calibrated":
        rel = np.where(live, d.rel - c, np.nan)
        wl = windows_lufs(tp.profile.values, tp.profile.starts[rows], tp.profile.lengths[rows], d.offset[live],
                          dur * d.rate[live])
        wl = wl + channel_change_lu(tp.cols["channels"][rows], cfg.channels)
        with np.errstate(invalid="ignore"):
            lv = np.clip(mix_target[live] + rel[live] - wl, *LEVEL_CLAMP_DB)
        level[live] = np.where(np.isfinite(wl), lv, 0.0)
    else:
        rel = np.full(live.size, np.nan)
        level[live] = uniform(u_gain[live], *cfg.levels.uniform_gain_db)
    out = {"offset_s": np.where(live, d.offset, 0.0), "loop": live & d.loop, "rel_lufs": rel, "level_db": level,
           "silent": ~live, "stretch_rate": d.rate}
    for name in ("stem_id", "kind", "song"):
        col = np.full(live.size, None, dtype=object)
        col[live] = tp.cols[name][rows]
        out[name] = col
    return {f"{t}_{k}": v for k, v in out.items()}


def channel_change_lu(src_channels: np.ndarray | int, out_channels: int) -> np.ndarray:
    """Loudness change of the render's channel conversion: mono copied to both channels adds 10 log10(2) LU;
    a stereo pair averaged to mono loses that much (exact for dual mono, close for typical stems)."""
    src = np.asarray(src_channels)
    lu = 10.0 * math.log10(2.0)
    if out_channels == 2:
        return np.where(src == 1, lu, 0.0)
    if out_channels == 1:
        return np.where(src >= 2, -lu, 0.0)
    return np.zeros(src.shape)


def _plan_coherent(pool: StemPool, cfg: RemixConfig, u: np.ndarray, dur: float) -> dict[str, np.ndarray]:
    """The aligned stems of one multitrack song per mixture, one window for all, original levels, no stretch."""
    songs = sorted(pool.coherent)
    pick = np.minimum((u[:, 3] * len(songs)).astype(np.int64), len(songs) - 1)
    length = np.array([min(r.duration_s for r in pool.coherent[s].values()) for s in songs])[pick]
    start = np.minimum(np.maximum(0.0, length - dur), np.maximum(0.0, length - dur) * u[:, 4])
    n = len(u)
    out: dict[str, np.ndarray] = {"beat_score": np.full(n, np.nan)}
    for t in cfg.targets:
        rows = [pool.coherent[s][t] for s in songs]
        sr = np.array([r.sample_rate for r in rows], dtype=np.float64)[pick]
        cols = {"stem_id": [r.stem_id for r in rows], "kind": [r.kind for r in rows], "song": songs}
        out.update({f"{t}_{k}": np.array(v, dtype=object)[pick] for k, v in cols.items()})
        out.update({f"{t}_offset_s": np.rint(start * sr) / sr, f"{t}_loop": np.zeros(n, dtype=bool),
                    f"{t}_rel_lufs": np.full(n, np.nan), f"{t}_level_db": np.zeros(n),
                    f"{t}_silent": np.zeros(n, dtype=bool), f"{t}_stretch_rate": np.ones(n)})
    return out


# -- tempo-aware mixing (per mixture) ---------------------------------------------------------------------------

#: Beats closer than this (seconds, in the mixture's time) count as aligned in the beat score.
BEAT_TOLERANCE_S = 0.07


@dataclass(frozen=True)
class Draft:
    """One target of a cross-song mixture for tempo and key alignment: the stem (``None``: silent), the window
    start (seconds, on the stem's sample grid), the stretch rate and the augmentation columns key alignment reads."""

    target: str
    row: PoolRow | None
    offset_s: float = 0.0
    stretch_rate: float = 1.0
    augment: dict[str, Any] = dataclasses.field(default_factory=dict)  # what key alignment reads and shifts


def _align_all(pool: StemPool, cfg: RemixConfig, drafts: dict[str, Drafts], dur: float) -> np.ndarray:
    """:func:`align_tempo` on every mixture; updates offsets and rates in ``drafts``, returns the beat scores."""
    n = len(next(iter(drafts.values())).row)
    score = np.full(n, np.nan)
    rows: dict[tuple[str, int], PoolRow] = {}
    for i in range(n):
        ds = []
        for t, d in drafts.items():
            k = int(d.row[i])
            row = None if k < 0 else rows.setdefault((t, k), pool.pools[t].row(k))
            ds.append(Draft(t, row, float(d.offset[i]), float(d.rate[i])))
        aligned, s = align_tempo(ds, dur, cfg.tempo.max_rate_change)
        for a in aligned:
            drafts[a.target].offset[i], drafts[a.target].rate[i] = a.offset_s, a.stretch_rate
        score[i] = np.nan if s is None else s
    return score


def _align_keys_all(pool: StemPool, cfg: RemixConfig, drafts: dict[str, Drafts], pitch: dict[str, np.ndarray]) -> None:
    """:func:`augment.keys.align_keys` on every mixture (no draws): adds the key shifts to ``pitch`` (semitones)."""
    rows: dict[tuple[str, int], PoolRow] = {}
    for i in range(len(next(iter(pitch.values())))):
        ds = []
        for t, d in drafts.items():
            k = int(d.row[i])
            row = None if k < 0 else rows.setdefault((t, k), pool.pools[t].row(k))
            ds.append(Draft(t, row, augment={"pitch_semitones": float(pitch[t][i])}))
        for a in align_keys(ds, cfg.key.max_shift, cfg.key.min_confidence)[0]:
            pitch[a.target][i] = a.augment["pitch_semitones"]


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
    return dataclasses.replace(d, offset_s=offset, stretch_rate=float(rate))
