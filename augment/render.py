"""The renderer: recipe + catalogue audio -> stems and mixture in memory. Pure: it writes nothing.

``render_recipe`` is a pure function of a recipe and the catalogue's audio: windowed reads (only the window is
decoded), channel fitting and resampling (:mod:`stemdb.shaping`: one rule for every layer), the target's
augmentation chain, the calibrated level, a common clip-prevention scale, and quantisation to the output's sample
grid (16-bit by default) *before* the sum, so that ``mixture == sum(stems)`` holds exactly in memory and in the
written files. The MUSDB18-HQ writer is :mod:`augment.writer`; building a whole set is :mod:`augment.build`.

Two paths give the same bits. A recipe whose stems are all *linear* (gain, polarity, channel swap and the level:
one factor per stem; 16-bit PCM at the output rate; PCM_16 output) goes through one compiled kernel
(:mod:`augment.render_kernels`) that reads the int16 windows and writes the quantised stems and their sum straight
into the output buffers, float32 or int16 (:func:`render_into`). Every other recipe takes the numpy path, stem by
stem. Both read windows as slices of memory maps when the catalogue has the int16 stem cache
(:mod:`stemdb.stem_cache`).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from augment.config import RemixConfig
from augment.recipe import Recipe, StemPlan
from augment.remix import chain_for
from augment.render_kernels import MEAN, render_linear
from augment.render_kernels import kernel as fast_kernel
from augment.transforms import PitchParams, PitchShift, StretchParams, TimeStretch
from stemdb import audio as audio_io
from stemdb import stem_cache
from stemdb.catalog import Catalog
from stemdb.errors import CatalogError
from stemdb.measure import integrated_loudness
from stemdb.shaping import channel_source, fit_channels, fit_length, resample

log = logging.getLogger(__name__)

#: Peak the mixture is scaled under when the sum would clip (full scale 1.0), leaving room for quantisation.
CLIP_LIMIT = 0.98
_QUANT = {"PCM_16": 32768.0, "PCM_24": 8388608.0}
_STRETCH = TimeStretch(min_rate=0.5, max_rate=2.0, p=1.0)
_PITCH = PitchShift(min_semitones=-12.0, max_semitones=12.0, p=1.0)


@dataclass(frozen=True)
class StemSource:
    """Where a stem's audio is: absolute path, stream (-1: plain file), rate (Hz), frames, channels, the decoded
    sample format, and its stem-cache file (None: not cached)."""

    path: str
    stream: int
    sample_rate: int
    frames: int
    channels: int
    subtype: str = ""
    cache: str | None = None


class StemTable:
    """``stem_id`` -> :class:`StemSource`, from the catalogue: every live row, so that a pool that keeps
    near-duplicates (``filters.dedupe: false``) resolves too; a ``stem_id`` of several rows (exact copies) maps to
    its canonical row."""

    def __init__(self, sources: dict[str, StemSource]) -> None:
        self.sources = sources

    @classmethod
    def from_catalog(cls, catalog: str | Path | Catalog) -> StemTable:
        cat = catalog if isinstance(catalog, Catalog) else Catalog.open(catalog)
        t = cat.stems_table(columns=["key", "stem_id", "root", "path", "stream", "sample_rate", "frames",
                                     "channels", "subtype", "duplicate_of"], include_duplicates=True)
        # canonical rows last, so that they win where exact copies share a stem_id
        canonical = t["duplicate_of"].is_null().to_numpy(zero_copy_only=False)
        t = t.take(np.argsort(canonical, kind="stable"))
        cached = stem_cache.cached_ids(cat.root)
        cdir = str(stem_cache.cache_dir(cat.root))
        cols = [t[c].to_pylist() for c in ("stem_id", "root", "path", "stream", "sample_rate", "frames", "channels",
                                           "subtype")]
        return cls({
            sid: StemSource(f"{root}/{path}", int(stream), int(sr), int(fr), int(ch), str(st),
                            f"{cdir}/{sid}.npy" if sid in cached else None)
            for sid, root, path, stream, sr, fr, ch, st in zip(*cols, strict=True)
        })

    def __getitem__(self, stem_id: str) -> StemSource:
        try:
            return self.sources[stem_id]
        except KeyError:
            raise CatalogError(f"stem_id {stem_id!r} of a recipe is not in the catalogue (deleted or re-ingested?)") from None


def read_window(src: StemSource, offset_s: float, frames_out: int, sample_rate: int, channels: int, *,
                loop: bool) -> np.ndarray:
    """Read ``frames_out`` frames at ``sample_rate`` starting ``offset_s`` into the stem, as ``(channels, frames_out)``.

    Reads only the window (plus a few samples of resampler margin), fits the channels
    (:func:`stemdb.shaping.fit_channels`), resamples with soxr, pads with zeros or loops past the end.
    """
    need = int(math.ceil(frames_out * src.sample_rate / sample_rate))
    a = _read_span(src, offset_s, need, loop=loop, dtype="float32", channels_first=True)
    a = resample(fit_channels(a, channels), src.sample_rate, sample_rate)
    return fit_length(a, frames_out)


def _read_span(src: StemSource, offset_s: float, frames: int, *, loop: bool, dtype: str,
               channels_first: bool) -> np.ndarray:
    """Up to ``frames`` frames from ``offset_s`` (an offset past the end starts at 0); looped past the end when
    ``loop``, else returned short. ``(channels, frames)``, or ``(frames, channels)`` without ``channels_first``."""
    start = int(round(offset_s * src.sample_rate))
    if start >= src.frames:
        start = 0
    stream = None if src.stream < 0 else src.stream
    axis = 1 if channels_first else 0
    mapped = src.cache is not None and dtype == "int16" and not channels_first
    if mapped:
        a = _MAPS.get(src.cache)[start : start + frames]
    else:
        a, _ = audio_io.read(src.path, start=start, frames=frames, stream=stream, dtype=dtype,
                             channels_first=channels_first)
    if loop and a.shape[axis] < frames and src.frames > 0:
        if mapped:
            whole = _MAPS.get(src.cache)
        else:
            whole, _ = audio_io.read(src.path, stream=stream, dtype=dtype, channels_first=channels_first)
        reps = int(math.ceil((frames - a.shape[axis]) / whole.shape[axis]))
        a = np.concatenate([a, *([whole] * reps)], axis=axis)
        a = a[:, :frames] if channels_first else a[:frames]
    return a


#: Transforms whose effect is a scalar gain and/or a channel flip: rendered by the fast path.
LINEAR_TRANSFORMS = frozenset({"gain", "polarity", "channel_swap"})
#: Stem-cache memory maps of this process.
_MAPS = stem_cache.MappedStems()


def render_stem(plan: StemPlan, recipe: Recipe, table: StemTable, cfg: RemixConfig,
                out: np.ndarray | None = None) -> np.ndarray:
    """One target's audio for a recipe, before the common clip scale: ``(channels, frames)`` float32.

    Writes into ``out`` when given (a preallocated ``(channels, frames)`` float32 view).
    """
    n = recipe.frames
    dst = out if out is not None else np.empty((recipe.channels, n), dtype=np.float32)
    if plan.stem_id is None:
        dst.fill(0.0)
        return dst
    src = table[plan.stem_id]
    chain = chain_for(cfg, plan.target)
    params = chain.params_from_record(plan.augment) if len(chain) else ()
    pitch = _planned_pitch(chain, plan)
    if _is_linear(chain, params, plan, src, recipe):
        _render_linear(dst, plan, src, recipe, params)
        return dst
    rate = plan.stretch_rate
    span = int(math.ceil(n * rate)) + (8 if rate != 1.0 else 0)
    x = read_window(src, plan.offset_s, span, recipe.sample_rate, recipe.channels, loop=plan.loop)
    if len(chain):
        x = chain.apply(x, recipe.sample_rate, params)
    if pitch:
        x = _PITCH.apply(x, recipe.sample_rate, PitchParams(pitch_semitones=pitch))
    if rate != 1.0 and "stretch" not in chain.names:  # a stretch planned by tempo-aware mixing
        x = _STRETCH.apply(x, recipe.sample_rate, StretchParams(stretch_rate=rate))
    x = fit_length(np.asarray(x, dtype=np.float32), n)
    np.multiply(x, np.float32(10.0 ** (plan.level_db / 20.0)), out=dst)
    return dst


def _planned_pitch(chain, plan: StemPlan) -> float:  # noqa: ANN001
    """A pitch shift planned by key-aware mixing for a target whose chain has no pitch transform (else 0)."""
    return 0.0 if "pitch" in chain.names else float(plan.augment.get("pitch_semitones", 0.0) or 0.0)


def _is_linear(chain, params: Sequence, plan: StemPlan, src: StemSource, recipe: Recipe) -> bool:  # noqa: ANN001
    heavy = [t for t, p in zip(chain.transforms, params, strict=True) if p.applied and t.name not in LINEAR_TRANSFORMS]
    return (not heavy and plan.stretch_rate == 1.0 and not _planned_pitch(chain, plan)
            and src.sample_rate == recipe.sample_rate)


def _linear_scale(plan: StemPlan, params: Sequence) -> tuple[float, bool]:
    """Gain, polarity and the calibrated level folded into one factor (float64), and whether to swap channels."""
    scale = 10.0 ** (plan.level_db / 20.0)
    swap = False
    for p in params:
        rec = p.to_record()
        if "gain_db" in rec:
            scale *= 10.0 ** (float(rec["gain_db"]) / 20.0)
        if "polarity" in rec:
            scale *= float(rec["polarity"])
        if "channel_swap" in rec:
            swap = bool(rec["channel_swap"])
    return scale, swap


def _render_linear(dst: np.ndarray, plan: StemPlan, src: StemSource, recipe: Recipe, params: Sequence) -> None:
    """Fast path of the numpy renderer: one read (int16 where the file is 16-bit PCM), one scaled copy per channel
    into ``dst``. Gain, polarity and the calibrated level fold into one float32 factor; a channel swap is a row
    flip."""
    scale, swap = _linear_scale(plan, params)
    n = recipe.frames
    as_int = src.subtype == "PCM_16"
    a = _read_span(src, plan.offset_s, n, loop=plan.loop, dtype="int16" if as_int else "float32",
                   channels_first=False)
    factor = np.float32(scale / 32768.0 if as_int else scale)
    m = a.shape[0]  # (frames, channels): channels are read as strided views, no transposing copy
    c_in, c_out = a.shape[1], dst.shape[0]
    sources = channel_source(c_in, c_out)  # the channel rule of stemdb.shaping, channel by channel
    if sources is None:  # several channels to mono: their mean, scaled (strided adds, no reduce)
        acc = dst[0, :m]
        np.add(a[:, 0], a[:, 1], out=acc, dtype=np.float32, casting="unsafe")
        for c in range(2, c_in):
            np.add(acc, a[:, c], out=acc, dtype=np.float32, casting="unsafe")
        acc *= np.float32(factor / c_in)
    else:
        for c in range(c_out):
            row = c_out - 1 - c if swap and c_out == 2 else c
            np.multiply(a[:, sources[c]], factor, out=dst[row, :m], dtype=np.float32, casting="unsafe")
    if m < n:
        dst[:, m:] = 0.0


def quantize(x: np.ndarray, subtype: str) -> np.ndarray:
    """Round float32 audio onto the sample grid of ``subtype`` (exactly what the file will hold), in place."""
    q = _QUANT.get(subtype)
    if q is None:
        return x
    x *= np.float32(q)
    np.rint(x, out=x)
    np.clip(x, -q, q - 1, out=x)
    x *= np.float32(1.0 / q)  # a power of two: exact
    return x


def _to_grid(x: np.ndarray, subtype: str) -> None:
    """:func:`quantize` for audio known to lie within ±CLIP_LIMIT (no clipping pass), in place."""
    q = _QUANT.get(subtype)
    if q is not None:
        x *= np.float32(q)
        np.rint(x, out=x)
        x *= np.float32(1.0 / q)


def mix_stems(stems: Sequence[np.ndarray] | np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The mixture as the sum of stems in target order, in float32: the definition the tests hold us to."""
    if out is not None and out.shape == stems[0].shape:
        mix = out
        np.copyto(mix, stems[0])
    else:
        mix = np.array(stems[0], dtype=np.float32, copy=True)
    for s in stems[1:]:
        mix += s
    return mix


@dataclass(frozen=True)
class Rendered:
    """A rendered mixture: ``stems`` (S, C, N) float32 in target order, ``mixture`` (C, N), and the scale used."""

    stems: np.ndarray
    mixture: np.ndarray
    clip_scale_db: float


def render_recipe(recipe: Recipe, table: StemTable, cfg: RemixConfig, *, out: np.ndarray | None = None,
                  mix_out: np.ndarray | None = None, backend: str = "auto") -> Rendered:
    """Render a recipe in memory. Pure: same recipe + same catalogue audio -> identical arrays.

    ``out`` / ``mix_out``: optional preallocated ``(S, C, N)`` / ``(C, N)`` float32 buffers, reused across calls
    by writers and streams. Reuse matters: a fresh 8 MB array costs more in page faults (about 10 ms for a
    6 s stereo 4-stem mixture, measured) than the whole render. ``backend``: see :func:`render_into`.
    """
    shape = (len(recipe.stems), recipe.channels, recipe.frames)
    stems = out if out is not None and out.shape == shape and out.dtype == np.float32 else np.empty(shape, np.float32)
    mix = mix_out if mix_out is not None and mix_out.shape == shape[1:] and mix_out.dtype == np.float32 \
        else np.empty(shape[1:], np.float32)
    scale_db = render_into(recipe, table, cfg, stems, mix, backend=backend)
    return Rendered(stems, mix, scale_db)


def render_into(recipe: Recipe, table: StemTable, cfg: RemixConfig, stems: np.ndarray, mixture: np.ndarray, *,
                backend: str = "auto") -> float:
    """Render a recipe into ``stems`` ``(S, C, N)`` and ``mixture`` ``(C, N)``, both float32 (full scale 1.0) or
    both int16 (PCM values; PCM_16 recipes only, where it is lossless); returns the clip scale in dB.

    ``backend``: ``"auto"`` (the compiled kernel for a linear 16-bit recipe, else numpy: measured 1.0 / 1.1-1.5 ms
    per 6 s stereo 4-stem mixture into int16 / float32 against 4.0 / 3.3 ms on the numpy path), ``"numpy"`` (always
    the numpy path), ``"kernel"`` (the kernel or a ValueError: for tests). Both paths give identical bits.
    """
    if backend not in ("auto", "numpy", "kernel"):
        raise ValueError(f"backend={backend!r}: allowed are 'auto', 'numpy', 'kernel'")
    if stems.dtype == np.int16 and recipe.subtype != "PCM_16":
        raise ValueError(f"int16 output needs a PCM_16 recipe, this one is {recipe.subtype}")
    if backend != "numpy" and fast_kernel() is not None:
        inputs = _linear_inputs(recipe, table, cfg)
        if inputs is not None:
            g = render_linear(*inputs, stems, mixture, CLIP_LIMIT)
            return 0.0 if g == 1.0 else 20.0 * math.log10(g)
    if backend == "kernel":
        raise ValueError(f"{recipe.mix_id}: not a linear 16-bit recipe (or numba is missing): no kernel path")
    if stems.dtype == np.float32:
        return _render_numpy(recipe, table, cfg, stems, mixture)
    fs, fm = _scratch(stems.shape)
    scale_db = _render_numpy(recipe, table, cfg, fs, fm)
    np.multiply(fs, np.float32(32768.0), out=stems, casting="unsafe")  # on the 16-bit grid: exact
    np.multiply(fm, np.float32(32768.0), out=fm)
    np.copyto(mixture, np.clip(fm, -32768.0, 32767.0), casting="unsafe")
    return scale_db


_LOCAL = threading.local()


def _scratch(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Reused float32 buffers of this thread for int16 renders on the numpy path (one shape kept; per thread, so
    renders in several threads of one process never share them)."""
    held = getattr(_LOCAL, "buffers", None)
    if held is None or held[0] != shape:
        held = (shape, (np.empty(shape, np.float32), np.empty(shape[1:], np.float32)))
        _LOCAL.buffers = held
    return held[1]


_EMPTY = np.zeros((0, 1), dtype=np.int16)
_EMPTY.flags.writeable = False


def _linear_inputs(recipe: Recipe, table: StemTable, cfg: RemixConfig) -> tuple | None:
    """The kernel's inputs (int16 windows, lengths, factors, channel map) when every stem is linear 16-bit PCM at
    the output rate and the output is PCM_16; else None."""
    if recipe.subtype != "PCM_16":
        return None
    n_stems, c_out, n = len(recipe.stems), recipe.channels, recipe.frames
    srcs, lengths = [], np.zeros(n_stems, dtype=np.int64)
    factors, chan = np.zeros(n_stems, dtype=np.float32), np.zeros((n_stems, c_out), dtype=np.int64)
    for k, plan in enumerate(recipe.stems):
        if plan.stem_id is None:
            srcs.append(_EMPTY)
            continue
        src = table[plan.stem_id]
        chain = chain_for(cfg, plan.target)
        params = chain.params_from_record(plan.augment) if len(chain) else ()
        if src.subtype != "PCM_16" or not _is_linear(chain, params, plan, src, recipe):
            return None
        scale, swap = _linear_scale(plan, params)
        a = np.ascontiguousarray(_read_span(src, plan.offset_s, n, loop=plan.loop, dtype="int16",
                                            channels_first=False))
        a.flags.writeable = False
        srcs.append(a)
        lengths[k] = a.shape[0]
        factor = np.float32(scale / 32768.0)
        sources = channel_source(a.shape[1], c_out)
        if sources is None:  # several channels to mono: their mean (the numpy path's rule and rounding)
            factors[k], chan[k, :] = np.float32(factor / a.shape[1]), MEAN
            continue
        factors[k] = factor
        for c in range(c_out):
            chan[k, c_out - 1 - c if swap and c_out == 2 else c] = sources[c]
    return tuple(srcs), lengths, factors, chan


def _render_numpy(recipe: Recipe, table: StemTable, cfg: RemixConfig, stems: np.ndarray, mix: np.ndarray) -> float:
    """The numpy path: stem by stem into ``stems``, then the clip scale, the grid and the sum into ``mix``."""
    peaks = []
    for k, p in enumerate(recipe.stems):
        render_stem(p, recipe, table, cfg, out=stems[k])
        peaks.append(max(float(stems[k].max(initial=0.0)), -float(stems[k].min(initial=0.0))))
    # one factor for every stem keeps the mixture and each stem under CLIP_LIMIT, so nothing is clipped when
    # quantising; the mixture's peak is at most the sum of the stems' peaks, so the sum is skipped when that fits
    peak = max(peaks, default=0.0)
    if sum(peaks) > CLIP_LIMIT:
        raw = mix_stems(stems, mix)
        peak = max(peak, float(raw.max(initial=0.0)), -float(raw.min(initial=0.0)))
    scale_db = 0.0
    if peak > CLIP_LIMIT:
        g = np.float32(CLIP_LIMIT / peak)
        stems *= g
        scale_db = 20.0 * math.log10(float(g))
    for row in stems.reshape(-1, stems.shape[-1]):  # row by row while it is hot in cache
        _to_grid(row, recipe.subtype)
    mix_stems(stems, mix)
    return scale_db


def measure_recipe(recipe: Recipe, rendered: Rendered) -> Recipe:
    """The recipe with its measured mixture loudness, peak and clip scale filled in."""
    peak = float(np.max(np.abs(rendered.mixture))) if rendered.mixture.size else 0.0
    return recipe.measured(
        mix_lufs=integrated_loudness(rendered.mixture, recipe.sample_rate),
        mix_peak_dbfs=20.0 * math.log10(peak) if peak > 0 else float("-inf"),
        clip_scale_db=rendered.clip_scale_db,
    )
