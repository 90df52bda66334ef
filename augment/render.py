"""The renderer: recipe -> stems and mixture in memory, and the writer of MUSDB18-HQ-layout sets.

``render_recipe`` is a pure function of a recipe and the catalogue's audio: windowed reads (only the window is
decoded), channel conversion, resampling with soxr when the source rate differs, the target's augmentation chain,
the calibrated level, a common clip-prevention scale, and quantisation to the output's sample grid (16-bit by
default) *before* the sum, so that ``mixture == sum(stems)`` holds exactly in memory and in the written files.

``build_remix`` plans ``n`` recipes, renders them in chunks (a process pool over chunks), writes each mixture folder
atomically (temp folder + rename; a folder's name carries the recipe's hash, so a stale folder is never trusted),
records each finished chunk in ``<out>/.parts/``, and writes ``<out>/recipes.parquet`` last. An interrupted build
resumes from its finished chunks; a rerun with the same arguments renders nothing.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import soxr

from augment.recipe import Recipe, StemPlan, recipes_table
from augment.remix import build_pool, chain_for, plan_recipes
from augment.transforms import StretchParams, TimeStretch
from stemdb import audio as audio_io
from stemdb.catalog import Catalog, write_parquet_atomic
from stemdb.config import RemixConfig
from stemdb.errors import CatalogError
from stemdb.measure import integrated_loudness

log = logging.getLogger(__name__)

#: Peak the mixture is scaled under when the sum would clip (full scale 1.0), leaving room for quantisation.
CLIP_LIMIT = 0.98
_QUANT = {"PCM_16": 32768.0, "PCM_24": 8388608.0}
_STRETCH = TimeStretch(min_rate=0.5, max_rate=2.0, p=1.0)


@dataclass(frozen=True)
class StemSource:
    """Where a stem's audio is: absolute path, stream (-1: plain file), rate (Hz), frames, channels."""

    path: str
    stream: int
    sample_rate: int
    frames: int
    channels: int
    subtype: str = ""


class StemTable:
    """``stem_id`` -> :class:`StemSource`, from the catalogue (canonical rows)."""

    def __init__(self, sources: dict[str, StemSource]) -> None:
        self.sources = sources

    @classmethod
    def from_catalog(cls, catalog: str | Path | Catalog) -> StemTable:
        cat = catalog if isinstance(catalog, Catalog) else Catalog.open(catalog)
        df = cat.stems(columns=["key", "stem_id", "root", "path", "stream", "sample_rate", "frames", "channels",
                                "subtype"])
        return cls({
            sid: StemSource(str(Path(root) / path), int(stream), int(sr), int(fr), int(ch), str(st))
            for sid, root, path, stream, sr, fr, ch, st in zip(
                df["stem_id"], df["root"], df["path"], df["stream"], df["sample_rate"], df["frames"],
                df["channels"], df["subtype"], strict=True)
        })

    def __getitem__(self, stem_id: str) -> StemSource:
        try:
            return self.sources[stem_id]
        except KeyError:
            raise CatalogError(f"stem_id {stem_id!r} of a recipe is not in the catalogue (deleted or re-ingested?)") from None


def read_window(src: StemSource, offset_s: float, frames_out: int, sample_rate: int, channels: int, *,
                loop: bool) -> np.ndarray:
    """Read ``frames_out`` frames at ``sample_rate`` starting ``offset_s`` into the stem, as ``(channels, frames_out)``.

    Reads only the window (plus a few samples of resampler margin), converts channels (mono -> both channels;
    stereo -> mean for mono output), resamples with soxr, pads with zeros or loops past the end.
    """
    need = int(math.ceil(frames_out * src.sample_rate / sample_rate))
    a = _read_span(src, offset_s, need, loop=loop, dtype="float32", channels_first=True)
    a = _to_channels(a, channels)
    if src.sample_rate != sample_rate:
        a = np.ascontiguousarray(soxr.resample(a.T, src.sample_rate, sample_rate, quality="HQ").T, dtype=np.float32)
    return _fit(a, frames_out)


def _read_span(src: StemSource, offset_s: float, frames: int, *, loop: bool, dtype: str,
               channels_first: bool) -> np.ndarray:
    """Up to ``frames`` frames from ``offset_s`` (an offset past the end starts at 0); looped past the end when
    ``loop``, else returned short. ``(channels, frames)``, or ``(frames, channels)`` without ``channels_first``."""
    start = int(round(offset_s * src.sample_rate))
    if start >= src.frames:
        start = 0
    stream = None if src.stream < 0 else src.stream
    axis = 1 if channels_first else 0
    a, _ = audio_io.read(src.path, start=start, frames=frames, stream=stream, dtype=dtype,
                         channels_first=channels_first)
    if loop and a.shape[axis] < frames and src.frames > 0:
        whole, _ = audio_io.read(src.path, stream=stream, dtype=dtype, channels_first=channels_first)
        reps = int(math.ceil((frames - a.shape[axis]) / whole.shape[axis]))
        a = np.concatenate([a, *([whole] * reps)], axis=axis)
        a = a[:, :frames] if channels_first else a[:frames]
    return a


def _to_channels(a: np.ndarray, channels: int) -> np.ndarray:
    if a.shape[0] == channels:
        return a
    if a.shape[0] == 1:
        return np.repeat(a, channels, axis=0)
    if channels == 1:
        return a.mean(axis=0, keepdims=True, dtype=np.float32)
    return a[:channels]


def _fit(a: np.ndarray, frames: int) -> np.ndarray:
    if a.shape[1] == frames:
        return a
    if a.shape[1] > frames:
        return np.ascontiguousarray(a[:, :frames])
    out = np.zeros((a.shape[0], frames), dtype=np.float32)
    out[:, : a.shape[1]] = a
    return out


#: Transforms whose effect is a scalar gain and/or a channel flip: rendered by the fast path.
LINEAR_TRANSFORMS = frozenset({"gain", "polarity", "channel_swap"})


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
    heavy = [t for t, p in zip(chain.transforms, params, strict=True)
             if p.applied and t.name not in LINEAR_TRANSFORMS]
    if not heavy and plan.stretch_rate == 1.0 and src.sample_rate == recipe.sample_rate:
        _render_linear(dst, plan, src, recipe, params)
        return dst
    rate = plan.stretch_rate
    span = int(math.ceil(n * rate)) + (8 if rate != 1.0 else 0)
    x = read_window(src, plan.offset_s, span, recipe.sample_rate, recipe.channels, loop=plan.loop)
    if len(chain):
        x = chain.apply(x, recipe.sample_rate, params)
    if rate != 1.0 and "stretch" not in chain.names:  # a stretch planned by tempo-aware mixing
        x = _STRETCH.apply(x, recipe.sample_rate, StretchParams(stretch_rate=rate))
    x = _fit(np.asarray(x, dtype=np.float32), n)
    np.multiply(x, np.float32(10.0 ** (plan.level_db / 20.0)), out=dst)
    return dst


def _render_linear(dst: np.ndarray, plan: StemPlan, src: StemSource, recipe: Recipe, params: Sequence) -> None:
    """Fast path: one read (int16 where the file is 16-bit PCM), one scaled copy per channel into ``dst``.

    Gain, polarity and the calibrated level fold into one float32 factor; a channel swap is a row flip.
    """
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
    n = recipe.frames
    as_int = src.subtype == "PCM_16"
    a = _read_span(src, plan.offset_s, n, loop=plan.loop, dtype="int16" if as_int else "float32",
                   channels_first=False)
    factor = np.float32(scale / 32768.0 if as_int else scale)
    m = a.shape[0]  # (frames, channels): channels are read as strided views, no transposing copy
    c_in, c_out = a.shape[1], dst.shape[0]
    if c_in > c_out and c_out == 1:  # several channels to mono: their mean, scaled (strided adds, no reduce)
        acc = dst[0, :m]
        np.add(a[:, 0], a[:, 1], out=acc, dtype=np.float32, casting="unsafe")
        for c in range(2, c_in):
            np.add(acc, a[:, c], out=acc, dtype=np.float32, casting="unsafe")
        acc *= np.float32(factor / c_in)
    else:
        for c in range(c_out):
            row = c_out - 1 - c if swap and c_out == 2 else c
            np.multiply(a[:, c if c_in == c_out else 0], factor, out=dst[row, :m], dtype=np.float32,
                        casting="unsafe")
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
                  mix_out: np.ndarray | None = None) -> Rendered:
    """Render a recipe in memory. Pure: same recipe + same catalogue audio -> identical arrays.

    ``out`` / ``mix_out``: optional preallocated ``(S, C, N)`` / ``(C, N)`` float32 buffers, reused across calls
    by writers and streams. Reuse matters: a fresh 8 MB array costs more in page faults (about 10 ms for a
    6 s stereo 4-stem mixture, measured) than the whole render.
    """
    shape = (len(recipe.stems), recipe.channels, recipe.frames)
    stems = out if out is not None and out.shape == shape else np.empty(shape, dtype=np.float32)
    peaks = []
    for k, p in enumerate(recipe.stems):
        render_stem(p, recipe, table, cfg, out=stems[k])
        peaks.append(max(float(stems[k].max(initial=0.0)), -float(stems[k].min(initial=0.0))))
    # one factor for every stem keeps the mixture and each stem under CLIP_LIMIT, so nothing is clipped when
    # quantising; the mixture's peak is at most the sum of the stems' peaks, so the sum is skipped when that fits
    peak = max(peaks, default=0.0)
    if sum(peaks) > CLIP_LIMIT:
        raw = mix_stems(stems, mix_out)
        peak = max(peak, float(raw.max(initial=0.0)), -float(raw.min(initial=0.0)))
    scale_db = 0.0
    if peak > CLIP_LIMIT:
        g = np.float32(CLIP_LIMIT / peak)
        stems *= g
        scale_db = 20.0 * math.log10(float(g))
    for row in stems.reshape(-1, stems.shape[-1]):  # row by row while it is hot in cache
        _to_grid(row, recipe.subtype)
    mix = mix_stems(stems, mix_out)
    return Rendered(stems, mix, scale_db)


def measure_recipe(recipe: Recipe, rendered: Rendered) -> Recipe:
    """The recipe with its measured mixture loudness, peak and clip scale filled in."""
    peak = float(np.max(np.abs(rendered.mixture))) if rendered.mixture.size else 0.0
    return recipe.measured(
        mix_lufs=integrated_loudness(rendered.mixture, recipe.sample_rate),
        mix_peak_dbfs=20.0 * math.log10(peak) if peak > 0 else float("-inf"),
        clip_scale_db=rendered.clip_scale_db,
    )


def write_mixture(out: Path, recipe: Recipe, rendered: Rendered) -> Path:
    """Write ``out/<split>/<mix_id>/{mixture,<targets>}.wav`` atomically (temp folder, then rename)."""
    final = out / recipe.split / recipe.mix_id
    if final.is_dir():
        return final
    tmp = out / recipe.split / f".tmp-{recipe.mix_id}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    audio_io.write(tmp / "mixture.wav", rendered.mixture, recipe.sample_rate, subtype=recipe.subtype)
    for name, s in zip(recipe.targets, rendered.stems, strict=True):
        audio_io.write(tmp / f"{name}.wav", s, recipe.sample_rate, subtype=recipe.subtype)
    try:
        os.rename(tmp, final)
    except OSError:  # a concurrent writer finished first: same recipe, same bytes
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def is_complete(out: Path, recipe: Recipe) -> bool:
    d = out / recipe.split / recipe.mix_id
    return all((d / f"{n}.wav").is_file() for n in ("mixture", *recipe.targets))


# --------------------------------------------------------------------------------------------------------------
# building a set


@dataclass
class RemixSummary:
    """What a build did."""

    out: str
    mixtures: int
    rendered: int
    skipped: int
    hours: float
    seconds: float

    @property
    def realtime_factor(self) -> float:
        return self.hours * 3600.0 / self.seconds if self.seconds > 0 else float("inf")

    def line(self) -> str:
        return (f"remix: {self.mixtures} mixtures ({self.rendered} rendered, {self.skipped} already there), "
                f"{self.hours:.3f} h of audio in {self.seconds:.1f} s ({self.realtime_factor:.0f}x real time) -> "
                f"{self.out}")


def chunk_name(chunk: Sequence[Recipe]) -> str:
    import hashlib

    h = hashlib.blake2b("".join(r.mix_id for r in chunk).encode(), digest_size=6).hexdigest()
    return f"chunk-{chunk[0].index:07d}-{h}.parquet"


def render_chunk(chunk: Sequence[Recipe], catalog: str | Path, out: str | Path, cfg: RemixConfig, *,
                 table: StemTable | None = None) -> int:
    """Render and write one chunk of recipes; record it in ``out/.parts``. Returns how many were rendered.

    A chunk whose part file exists and whose folders are all present is skipped (0).
    """
    out = Path(out)
    part = out / ".parts" / chunk_name(chunk)
    if part.is_file() and all(is_complete(out, r) for r in chunk):
        return 0
    table = table or _table(str(catalog), _parts_signature(Path(catalog)))
    done = []
    buf = mix_buf = None
    for r in chunk:
        rendered = render_recipe(r, table, cfg, out=buf, mix_out=mix_buf)
        buf, mix_buf = rendered.stems, rendered.mixture
        measured = measure_recipe(r, rendered)
        write_mixture(out, r, rendered)
        done.append(measured)
    write_parquet_atomic(recipes_table(done), part)
    return len(done)


@lru_cache(maxsize=4)
def _table(catalog: str, parts: tuple[str, ...]) -> StemTable:  # noqa: ARG001 - ``parts`` keys the cache
    return StemTable.from_catalog(catalog)


def _parts_signature(catalog: Path) -> tuple[str, ...]:
    """Names of the catalogue's stems part files: they change on every write, so a cached table is never stale."""
    return tuple(sorted(p.name for p in (catalog / "stems").glob("part-*.parquet")))


def _render_chunk_job(args: tuple) -> int:  # process-pool entry point
    chunk, catalog, out, cfg = args
    return render_chunk(chunk, catalog, out, cfg)


def build_remix(
    catalog: str | Path,
    out: str | Path,
    *,
    n: int,
    seed: int,
    cfg: RemixConfig,
    seconds: float | None = None,
    workers: int = 1,
    chunk_size: int = 25,
    progress: Callable[[int, int], None] | None = None,
) -> RemixSummary:
    """Plan and render ``n`` mixtures into ``out`` (MUSDB18-HQ layout + ``recipes.parquet``). Idempotent."""
    t0 = time.perf_counter()
    out = Path(out)
    recipes = plan_recipes(catalog, n=n, seed=seed, cfg=cfg, seconds=seconds, pool=build_pool(catalog, cfg))
    chunks = [recipes[i : i + chunk_size] for i in range(0, len(recipes), chunk_size)]
    rendered = 0
    if workers <= 1:
        for k, c in enumerate(chunks):
            rendered += render_chunk(c, catalog, out, cfg)
            if progress:
                progress(k + 1, len(chunks))
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            jobs = [(c, str(catalog), str(out), cfg) for c in chunks]
            for k, r in enumerate(pool.map(_render_chunk_job, jobs)):
                rendered += r
                if progress:
                    progress(k + 1, len(chunks))
    finish_remix(out, recipes, chunk_size=chunk_size)
    secs = time.perf_counter() - t0
    hours = sum(r.duration_s for r in recipes) / 3600.0
    summary = RemixSummary(str(out), len(recipes), rendered, len(recipes) - rendered, hours, secs)
    log.info(summary.line())
    return summary


def finish_remix(out: Path, recipes: Sequence[Recipe], *, chunk_size: int) -> Path:
    """Collect the chunk parts into ``recipes.parquet`` (atomic) and remove stale folders and parts."""
    chunks = [recipes[i : i + chunk_size] for i in range(0, len(recipes), chunk_size)]
    names = [chunk_name(c) for c in chunks]
    tables = [pa.Table.from_pandas(pd.read_parquet(out / ".parts" / nme), preserve_index=False) for nme in names]
    table = pa.concat_tables(tables, promote_options="default") if tables else recipes_table([])
    path = write_parquet_atomic(table, out / "recipes.parquet")
    keep_parts = set(names)
    for p in (out / ".parts").glob("chunk-*.parquet"):
        if p.name not in keep_parts:
            p.unlink()
    keep = {(r.split, r.mix_id) for r in recipes}
    for split_dir in (d for d in out.iterdir() if d.is_dir() and not d.name.startswith(".")):
        for d in split_dir.iterdir():
            if d.is_dir() and (d.name.startswith("mix-") or d.name.startswith(".tmp-")) and \
                    (split_dir.name, d.name) not in keep:
                log.info("removing stale mixture folder %s", d)
                shutil.rmtree(d, ignore_errors=True)
    with contextlib.suppress(OSError):
        for split_dir in out.iterdir():
            if split_dir.is_dir() and not split_dir.name.startswith(".") and not any(split_dir.iterdir()):
                split_dir.rmdir()
    return path
