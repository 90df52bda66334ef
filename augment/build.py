"""The set builder: ``n`` mixtures planned and rendered chunk by chunk, the MUSDB18-HQ set and ``recipes.parquet``.

``build_remix`` checks the pool once (a bad config fails before any work), cuts the indices ``0 .. n-1`` into chunks
(:meth:`BuildPlan.chunks`, generated, so a huge ``n`` holds no list; the Prefect flow maps the same chunks; the
process pool is fed a few ahead by :func:`stemdb.workers.bounded_map`), and each chunk is planned *and* rendered
where it runs (:func:`render_chunk`: :func:`augment.remix.plan_block` on the chunk's indices, then
:mod:`augment.render` and :mod:`augment.writer`), in a process pool over chunks when asked, so planning is no
serial prefix of a build. Each finished chunk is recorded in ``<out>/.parts/`` under a name that depends on the
build's parameters and the chunk's indices (:meth:`BuildPlan.part_name`); ``<out>/recipes.parquet`` is written last
by streaming the parts into it one row group each (:func:`finish_remix`, which also removes stale folders and
parts). An interrupted build resumes from its finished chunks; a rerun with the same arguments renders nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow.parquet as pq

from augment.config import RemixConfig, remix_section
from augment.fill import fill_check
from augment.pool import StemPool, build_pool
from augment.recipe import RECIPE_VERSION, Recipe, recipe_schema, recipes_table
from augment.remix import check_pool, plan_block
from augment.render import StemTable, measure_recipe, render_recipe
from augment.writer import is_complete, remove_stale, write_mixture
from stemdb.atomic import atomic_open, folder_lock, remove_temps, write_text_atomic
from stemdb.catalog import write_parquet_atomic
from stemdb.config import fingerprint_of
from stemdb.errors import ConfigError
from stemdb.workers import bounded_map, process_pool

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
    """``items`` cut into consecutive chunks of ``size`` (the last one shorter), as a list: the flow's ingest
    batches. A build's chunks follow the same rule, generated (:meth:`BuildPlan.chunks`)."""
    if size < 1:
        raise ValueError(f"chunk size={size}; allowed: 1 or more")
    return [items[i : i + size] for i in range(0, len(items), size)]


@dataclass(frozen=True)
class BuildPlan:
    """What a build renders: ``n`` mixtures of ``seconds`` (None: the config's) seeded ``seed``, in chunks of
    ``chunk_size``, from the catalogue and config with these fingerprints. Small and picklable: what the parent
    hands to every chunk instead of recipes."""

    n: int
    seed: int
    seconds: float | None
    chunk_size: int
    catalog_fingerprint: str
    config_fingerprint: str

    @classmethod
    def make(cls, pool: StemPool, cfg: RemixConfig, *, n: int, seed: int, seconds: float | None,
             chunk_size: int) -> BuildPlan:
        return cls(int(n), int(seed), seconds, int(chunk_size), pool.fingerprint, fingerprint_of(cfg))

    def chunks(self) -> Iterator[range]:
        """The chunks' index ranges in order (the :func:`chunked` rule), generated: a huge ``n`` costs nothing here."""
        return (range(i, min(i + self.chunk_size, self.n)) for i in range(0, self.n, self.chunk_size))

    def owns_part(self, name: str) -> bool:
        """Whether ``name`` is the part file of one of this build's chunks (found from its first index alone)."""
        try:
            start = int(name.split("-")[1])
        except (IndexError, ValueError):
            return False
        if start % self.chunk_size or not 0 <= start < self.n:
            return False
        return name == self.part_name(range(start, min(start + self.chunk_size, self.n)))

    def part_name(self, chunk: range) -> str:
        """The part file of a chunk: its first index and a hash of everything that decides its recipes."""
        key = (f"{RECIPE_VERSION}|{self.catalog_fingerprint}|{self.config_fingerprint}|{self.seed}|{self.seconds}|"
               f"{chunk.start}|{chunk.stop}")
        return f"chunk-{chunk.start:07d}-{hashlib.blake2b(key.encode(), digest_size=6).hexdigest()}.parquet"


def plan_chunk(chunk: range, plan: BuildPlan, catalog: str | Path, cfg: RemixConfig, *,
               pool: StemPool | None = None) -> list[Recipe]:
    """The recipes of one chunk, planned where the chunk runs (the pool is loaded once per process)."""
    pool = pool or _pool(str(catalog), _parts_signature(Path(catalog)), cfg)
    if pool.fingerprint != plan.catalog_fingerprint:
        raise RuntimeError(f"{catalog}: the catalogue changed during the build (fingerprint {pool.fingerprint}, "
                           f"planned with {plan.catalog_fingerprint}); rerun the build")
    return plan_block(pool, cfg, seed=plan.seed, indices=chunk, seconds=plan.seconds).recipes()


def render_chunk(chunk: range, plan: BuildPlan, catalog: str | Path, out: str | Path, cfg: RemixConfig, *,
                 table: StemTable | None = None, pool: StemPool | None = None) -> int:
    """Plan, render and write one chunk of mixture indices; record it in ``out/.parts``. Returns how many were
    rendered: 0 when the chunk's part file exists and all its folders are present."""
    out = Path(out)
    recipes = plan_chunk(chunk, plan, catalog, cfg, pool=pool)
    part = out / ".parts" / plan.part_name(chunk)
    if part.is_file() and all(is_complete(out, r) for r in recipes):
        return 0
    table = table or _table(str(catalog), _parts_signature(Path(catalog)))
    done = []
    buf = mix_buf = None
    for r in recipes:
        rendered = render_recipe(r, table, cfg, out=buf, mix_out=mix_buf)
        buf, mix_buf = rendered.stems, rendered.mixture
        done.append(measure_recipe(r, rendered))
        write_mixture(out, r, rendered)
    write_parquet_atomic(recipes_table(done, cfg.targets), part)
    return len(done)


@lru_cache(maxsize=4)
def _table(catalog: str, parts: tuple[str, ...]) -> StemTable:  # noqa: ARG001 - ``parts`` keys the cache
    return StemTable.from_catalog(catalog)


_POOLS: dict[tuple[str, tuple[str, ...], str], StemPool] = {}


def _pool(catalog: str, parts: tuple[str, ...], cfg: RemixConfig) -> StemPool:
    """The pool of (catalogue, config), loaded once per process while the catalogue's parts stay the same."""
    key = (catalog, parts, fingerprint_of(cfg))
    if key not in _POOLS:
        if len(_POOLS) >= 4:
            _POOLS.pop(next(iter(_POOLS)))
        _POOLS[key] = build_pool(catalog, cfg)
    return _POOLS[key]


def _parts_signature(catalog: Path) -> tuple[str, ...]:
    """Names of the catalogue's stems part files: they change on every write, so a cached table is never stale."""
    return tuple(sorted(p.name for p in (catalog / "stems").glob("part-*.parquet")))


def _render_chunk_job(args: tuple) -> int:  # process-pool entry point
    chunk, plan, catalog, out, cfg = args
    return render_chunk(chunk, plan, catalog, out, cfg)


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
    if seconds is not None:  # the same bounds as remix.seconds in data.yaml
        remix_section({**cfg.model_dump(mode="python"), "seconds": seconds})
    plan, pool = prepare_build(catalog, cfg, n=n, seed=seed, seconds=seconds, chunk_size=chunk_size)
    warning = fill_warning(pool, cfg, plan)
    if warning:
        log.warning(warning)
    with claimed_output(out, seed=seed, cfg=cfg, seconds=seconds, what="stemdb remix"):
        # chunks are generated and handed out a few per worker ahead: memory does not grow with n
        if workers > 1:
            jobs = ((c, plan, str(catalog), str(out), cfg) for c in plan.chunks())
            with process_pool(workers) as executor:
                results = bounded_map(executor, _render_chunk_job, jobs, window=4 * workers)
                rendered = _count(results, plan, progress)
        else:
            rendered = _count((render_chunk(c, plan, catalog, out, cfg, pool=pool) for c in plan.chunks()), plan,
                              progress)
        finish_remix(out, plan, cfg.targets)
    secs = time.perf_counter() - t0
    hours = n * float(seconds if seconds is not None else cfg.seconds) / 3600.0
    summary = RemixSummary(str(out), n, rendered, n - rendered, hours, secs)
    log.debug(summary.line())  # the caller prints or publishes the summary: once
    return summary


def prepare_build(catalog: str | Path, cfg: RemixConfig, *, n: int, seed: int, seconds: float | None,
                  chunk_size: int) -> tuple[BuildPlan, StemPool]:
    """Load and check the pool once (a config the catalogue cannot serve fails here, naming the key) and the
    build's :class:`BuildPlan`. ``n`` must be >= 0 and ``chunk_size`` >= 1."""
    if n < 0:
        from stemdb.errors import ConfigError

        raise ConfigError(f"n={n} must be >= 0", key="n")
    chunked((), chunk_size)  # validates the size
    pool = _pool(str(catalog), _parts_signature(Path(catalog)), cfg)
    check_pool(pool, cfg)
    return BuildPlan.make(pool, cfg, n=n, seed=seed, seconds=seconds, chunk_size=chunk_size), pool


#: Recipes :func:`fill_warning` plans to estimate the padding (spread evenly over the set).
FILL_SAMPLE = 512


def fill_warning(pool: StemPool, cfg: RemixConfig, plan: BuildPlan) -> str | None:
    """:mod:`augment.fill`'s padding warning for the build, from up to :data:`FILL_SAMPLE` of its recipes planned
    in the parent (evenly spaced indices: the chunks plan the rest where they render)."""
    if plan.n == 0:
        return None
    idx = sorted({round(i) for i in np.linspace(0, plan.n - 1, min(plan.n, FILL_SAMPLE))})
    sample = plan_block(pool, cfg, seed=plan.seed, indices=idx, seconds=plan.seconds).recipes()
    return fill_check(pool, sample, short=cfg.short).warning()
@contextlib.contextmanager
def claimed_output(out: Path, *, seed: int, cfg: RemixConfig, seconds: float | None, what: str) -> Iterator[Path]:
    """Hold ``out`` for one build (``stemdb.atomic.folder_lock``: a second writer fails at once, naming ``what``
    holds it), refuse it when it holds another seed's or other settings' set (:func:`claim_output`), and remove the
    temp files of a killed build; both ``build_remix`` and the ``build-remix`` flow write inside it."""
    with folder_lock(out, what):
        claim_output(out, seed=seed, settings=fingerprint_of({"cfg": cfg.model_dump(mode="json"),
                                                              "seconds": seconds or cfg.seconds}))
        for d in (out, out / ".parts"):  # temp files of a killed build (the lock says no build is running)
            remove_temps(d)
        yield out


def claim_output(out: Path, *, seed: int, settings: str) -> None:
    """Record in ``out/.remix.json`` which build writes ``out`` (its seed and a hash of its settings), refusing an
    ``out`` that holds the mixtures of another build: a build replaces whatever is not its own, so re-using a
    folder with another seed or other settings would delete the earlier mixtures without a word.

    Raises:
        ConfigError: ``out`` holds a set of another seed or other settings (named in the message).
    """
    marker = out / ".remix.json"
    mine = {"seed": int(seed), "settings": settings}
    if marker.is_file():
        theirs = json.loads(marker.read_text())
    elif (out / "recipes.parquet").is_file():  # a set written before the marker existed: its seed is known
        seeds = pq.read_table(out / "recipes.parquet", columns=["seed"]).column("seed").to_pylist()
        theirs = {"seed": seeds[0] if seeds else int(seed), "settings": settings}
    else:
        theirs = mine
    if theirs != mine:
        what = f"seed {theirs.get('seed')}" if theirs.get("seed") != seed else "other settings"
        raise ConfigError(f"{out}: holds a remix of {what}; this build (seed {seed}) would delete its mixtures; "
                          "use another --out, or remove the folder first", key="out")
    if not marker.is_file():
        write_text_atomic(marker, json.dumps(mine))


def _count(results: Iterable[int], plan: BuildPlan, progress: Callable[[int, int], None] | None) -> int:
    """Sum the chunks' rendered counts as they finish (in chunk order), reporting ``progress(mixtures done, n)``."""
    rendered = 0
    for chunk, r in zip(plan.chunks(), results, strict=False):
        rendered += r
        if progress:
            progress(chunk.stop, plan.n)
    return rendered


def finish_remix(out: Path, plan: BuildPlan, targets: Sequence[str] | None = None) -> Path:
    """Stream the chunk parts into ``recipes.parquet`` (one row group per part, atomic: temp file, then rename;
    memory bounded by one part), then remove stale parts and mixture folders."""
    out = Path(out)
    first_chunk = next(plan.chunks(), None)
    first = pq.read_schema(out / ".parts" / plan.part_name(first_chunk)) if first_chunk else \
        recipe_schema(targets or ())
    keep: set[tuple[str, str]] = set()
    path = out / "recipes.parquet"
    with atomic_open(path, "wb") as fh, pq.ParquetWriter(fh, first) as writer:
        for chunk in plan.chunks():
            t = pq.read_table(out / ".parts" / plan.part_name(chunk), schema=first)
            writer.write_table(t, row_group_size=max(1, t.num_rows))
            keep.update(zip(t["split"].to_pylist(), t["mix_id"].to_pylist(), strict=True))
    for p in (out / ".parts").glob("chunk-*.parquet"):
        if not plan.owns_part(p.name):
            p.unlink()
    remove_stale(out, keep)
    return path


__all__ = ["DEFAULT_CHUNK_SIZE", "FILL_SAMPLE", "BuildPlan", "RemixSummary", "build_remix", "chunked",
           "fill_warning", "finish_remix", "plan_chunk", "prepare_build", "render_chunk"]
