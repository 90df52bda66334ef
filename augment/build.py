"""The set builder: plan ``n`` recipes, render them chunk by chunk, write the MUSDB18-HQ set and ``recipes.parquet``.

``build_remix`` plans the recipes (:mod:`augment.remix`), cuts them into chunks (:func:`chunked`: the one chunking
rule, which the Prefect flow uses too), renders each chunk (:mod:`augment.render`) and writes its mixture folders
(:mod:`augment.writer`), in a process pool over chunks when asked; each finished chunk is recorded in
``<out>/.parts/``, and ``<out>/recipes.parquet`` is written last (:func:`finish_remix`, which also removes stale
folders and parts). An interrupted build resumes from its finished chunks; a rerun with the same arguments renders
nothing.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

import pandas as pd
import pyarrow as pa

from augment.config import RemixConfig
from augment.fill import fill_check
from augment.pool import build_pool
from augment.recipe import Recipe, recipes_table
from augment.remix import plan_recipes
from augment.render import StemTable, measure_recipe, render_recipe
from augment.writer import is_complete, remove_stale, write_mixture
from stemdb.catalog import write_parquet_atomic

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Mixtures per chunk unless the caller says otherwise (``pipelines.chunk_size`` for the flow).
DEFAULT_CHUNK_SIZE = 25


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


def chunked(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """``items`` cut into consecutive chunks of ``size`` (the last one shorter): the chunks of a build."""
    if size < 1:
        raise ValueError(f"chunk size={size}; allowed: 1 or more")
    return [items[i : i + size] for i in range(0, len(items), size)]


def chunk_name(chunk: Sequence[Recipe]) -> str:
    """The part file of a chunk: its first index and a hash of its mix ids."""
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
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Callable[[int, int], None] | None = None,
) -> RemixSummary:
    """Plan and render ``n`` mixtures into ``out`` (MUSDB18-HQ layout + ``recipes.parquet``). Idempotent.

    ``progress(done, total)`` counts mixtures (by finished chunk). Logs a warning (:mod:`augment.fill`) when the
    mixtures are longer than most candidate stems, with the share of silence that padding will leave.
    """
    t0 = time.perf_counter()
    out = Path(out)
    pool = build_pool(catalog, cfg)
    recipes = plan_recipes(catalog, n=n, seed=seed, cfg=cfg, seconds=seconds, pool=pool)
    warning = fill_check(pool, recipes, short=cfg.short).warning()
    if warning:
        log.warning(warning)
    chunks = chunked(recipes, chunk_size)
    jobs = [(c, str(catalog), str(out), cfg) for c in chunks]
    sizes = [len(c) for c in chunks]
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as executor:
            rendered = _count(executor.map(_render_chunk_job, jobs), sizes, progress)
    else:
        rendered = _count(map(_render_chunk_job, jobs), sizes, progress)
    finish_remix(out, recipes, chunk_size=chunk_size)
    secs = time.perf_counter() - t0
    hours = sum(r.duration_s for r in recipes) / 3600.0
    summary = RemixSummary(str(out), len(recipes), rendered, len(recipes) - rendered, hours, secs)
    log.debug(summary.line())  # the caller prints or publishes the summary: once
    return summary


def _count(results: Iterable[int], sizes: Sequence[int], progress: Callable[[int, int], None] | None) -> int:
    """Sum the chunks' rendered counts as they finish, reporting ``progress(mixtures done, mixtures)``."""
    rendered = done = 0
    for size, r in zip(sizes, results, strict=False):
        rendered += r
        done += size
        if progress:
            progress(done, sum(sizes))
    return rendered


def finish_remix(out: Path, recipes: Sequence[Recipe], *, chunk_size: int) -> Path:
    """Collect the chunk parts into ``recipes.parquet`` (atomic) and remove stale folders and parts."""
    names = [chunk_name(c) for c in chunked(recipes, chunk_size)]
    tables = [pa.Table.from_pandas(pd.read_parquet(out / ".parts" / nme), preserve_index=False) for nme in names]
    table = pa.concat_tables(tables, promote_options="default") if tables else recipes_table([])
    path = write_parquet_atomic(table, out / "recipes.parquet")
    keep_parts = set(names)
    for p in (out / ".parts").glob("chunk-*.parquet"):
        if p.name not in keep_parts:
            p.unlink()
    remove_stale(out, recipes)
    return path


__all__ = ["DEFAULT_CHUNK_SIZE", "RemixSummary", "build_remix", "chunk_name", "chunked", "finish_remix",
           "render_chunk"]
