"""Prefect flows: ``ingest-stems``, ``build-remix`` and ``dataset-stats``. Thin wrappers over stemdb and augment.

Each flow validates its parameters first (:mod:`pipelines.params`; a bad value fails the run at once with a message
naming it), does the cheap planning in plain Python, maps a task over *batches* (files to measure, chunks of 10-50
mixtures to render; never one task per file, since a task costs about 5 ms with threads and about 200 ms with
processes or Dask), and returns a small summary dict (counts, hours, output path, seconds), never arrays.

Tasks receive recipes, jobs and paths, never audio. The mapped tasks run on the task runner chosen in ``data.yaml``
(``pipelines.task_runner``: threads, processes or dask; see :func:`make_task_runner`); the I/O tasks retry
(``pipelines.retries``). ``build-remix`` is resumable because the renderer is: a chunk whose part file and mixture
folders exist is skipped (its folders are named by the recipe hash, so a stale one is never trusted), so a rerun
with the same parameters renders nothing and an interrupted run resumes from its finished chunks.

Run them as deployments under ``stemdb serve`` (``prefect deployment run build-remix/default --watch``) or call
them in Python; from the repository root the project's ``prefect.toml`` points them at
http://127.0.0.1:4200/api (``stemdb serve`` must be running), elsewhere Prefect starts a temporary local API::

    from pipelines.flows import build_remix_flow
    build_remix_flow(catalog="work/catalog", n_mixtures=16, seconds=4.0, out="work/remix")
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, wait
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner
from prefect.utilities.annotations import quote, unmapped

from augment.build import (
    BuildPlan,
    chunked,
    claimed_output,
    fill_warning,
    finish_remix,
    prepare_build,
    render_chunk,
)
from augment.config import ProjectConfig, RemixConfig, load_project
from pipelines.artifacts import publish_catalog_stats, publish_catalog_table, publish_remix_stats
from pipelines.params import (
    DEFAULT_REMIX_OUT,
    DEFAULT_REPORTS_OUT,
    BatchSize,
    ChunkSize,
    IngestParams,
    NMixtures,
    PipelinesConfig,
    RemixParams,
    Seconds,
    Seed,
    StatsParams,
    TaskRunnerName,
    Workers,
    check_params,
    pipelines_config,
)
from stemdb import stem_cache
from stemdb.atomic import folder_lock
from stemdb.catalog import Catalog
from stemdb.config import IngestConfig, SourceConfig
from stemdb.errors import CatalogError, ConfigError
from stemdb.ingest import commit_results, finalize, mark_deleted, measure_job, plan
from stemdb.scan import FileJob, scan_source

log = logging.getLogger(__name__)

FLOW_NAMES: tuple[str, ...] = ("ingest-stems", "build-remix", "dataset-stats")


# --------------------------------------------------------------------------------------------------------------
# configuration helpers (plain Python, cheap)


def load_project_config(config: Path | None) -> ProjectConfig:
    """``data.yaml`` as given, else ``./data.yaml`` when present, else the built-in defaults."""
    if config is not None and not Path(config).is_file():
        raise ConfigError(f"config={str(config)!r} is not allowed: no such file", key="config")
    return load_project(config)


def open_catalog(path: Path, *, param: str = "catalog") -> Catalog:
    """Open an existing catalogue; a missing one is a ConfigError naming the parameter."""
    try:
        return Catalog.open(path)
    except CatalogError as exc:
        raise ConfigError(f"{param}={str(path)!r} is not allowed: {exc}", key=param) from exc


def select_sources(cfg: ProjectConfig, names: Sequence[str] | None) -> list[SourceConfig]:
    """The config's sources named in ``names`` (all when ``None``), in config order.

    Raises:
        ConfigError: an unknown name, or no source at all.
    """
    srcs = list(cfg.sources)
    if names is not None:
        have = [s.name for s in srcs]
        unknown = [n for n in names if n not in have]
        if unknown:
            raise ConfigError(f"sources={list(names)!r} is not allowed: unknown {unknown}; the config has {have}",
                              key="sources")
        srcs = [s for s in srcs if s.name in names]
    if not srcs:
        raise ConfigError("config: no sources to ingest (add `sources:` to data.yaml)", key="sources")
    return srcs


def make_task_runner(pcfg: PipelinesConfig) -> TaskRunner:
    """The task runner ``pipelines`` asks for (not started: use it as a context manager).

    - ``threads``: a thread pool of ``workers`` threads (default: one per core). The renderer and the measurement
      spend their time in soundfile / soxr / numpy calls that release the GIL, so threads scale.
    - ``processes``: a process pool of ``workers`` processes (spawned; about 200 ms per task).
    - ``dask``: ``prefect-dask``; a LocalCluster of ``dask_workers`` single-threaded worker processes bound to
      127.0.0.1 with no dashboard, or the existing scheduler at ``dask_address``.
    """
    if pcfg.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=pcfg.workers or os.cpu_count() or 1)
    if pcfg.task_runner == "processes":
        return ProcessPoolTaskRunner(max_workers=pcfg.workers or os.cpu_count() or 1)
    from prefect_dask import DaskTaskRunner

    if pcfg.dask_address:
        return DaskTaskRunner(address=pcfg.dask_address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": pcfg.workers or pcfg.dask_workers,
            "threads_per_worker": 1,
            "processes": True,
            "host": "127.0.0.1",
            "dashboard_address": None,
        },
    )


def _pipelines(cfg: ProjectConfig, **overrides: Any) -> PipelinesConfig:
    return pipelines_config(cfg.pipelines).with_overrides(**overrides)


def _io_task(t: Any, pcfg: PipelinesConfig) -> Any:
    return t.with_options(retries=pcfg.retries, retry_delay_seconds=pcfg.retry_delay_s)


def _run_mapped(runner: TaskRunner, t: Any, iterable: dict[str, Sequence[Any]], static: dict[str, Any]
                ) -> tuple[list[Any], list[BaseException]]:
    """Map ``t`` over ``iterable`` on ``runner``; wait for every task (so every batch that can finish does) and
    return (results of the finished tasks, exceptions of the failed ones).

    The mapped values are ``quote``d for the thread and process runners, so Prefect does not walk every recipe / job
    looking for futures (they hold none; the walk costs about 1.5 ms per recipe). Not for Dask: its client
    unpacks the annotation (a named tuple) as a plain tuple.
    """
    if not next(iter(iterable.values())):
        return [], []
    wrap = quote if type(runner).__name__ != "DaskTaskRunner" else list
    params: dict[str, Any] = {k: wrap(list(v)) for k, v in iterable.items()}
    params.update({k: unmapped(v) for k, v in static.items()})
    with runner:
        futures: Sequence[PrefectFuture[Any]] = runner.map(t, parameters=params)
        wait(list(futures))
        results, errors = [], []
        for f in futures:
            try:
                results.append(f.result())
            except Exception as exc:  # noqa: BLE001 - reported together below
                errors.append(exc)
    return results, errors


# --------------------------------------------------------------------------------------------------------------
# tasks: each calls one library function with paths / recipes / jobs


@task(name="measure-batch", cache_policy=NO_CACHE, persist_result=False)
def measure_batch_task(jobs: list[FileJob], catalog: str, cfg: IngestConfig) -> dict[str, int]:
    """Measure a batch of files (``stemdb.ingest.measure_job``) and commit them to the catalogue as one part."""
    results = [measure_job(j, cfg, catalog=catalog) for j in jobs]
    rows, rejects = commit_results(Catalog.open(catalog), results)
    return {"files": len(jobs), "rows": rows, "rejects": rejects}


@task(name="render-chunk", cache_policy=NO_CACHE, persist_result=False)
def render_chunk_task(chunk: range, plan: BuildPlan, catalog: str, out: str, cfg: RemixConfig) -> int:
    """Plan, render and write one chunk of mixture indices (``augment.build.render_chunk``); returns how many were
    rendered (0 when the chunk was already complete)."""
    return render_chunk(chunk, plan, catalog, out, cfg)


@task(name="finish-remix", cache_policy=NO_CACHE, persist_result=False)
def finish_remix_task(out: str, plan: BuildPlan, targets: list[str]) -> str:
    """Stream the chunk parts into ``recipes.parquet`` and remove stale folders (``augment.build.finish_remix``)."""
    return str(finish_remix(Path(out), plan, targets))


@task(name="publish-remix-stats", cache_policy=NO_CACHE, persist_result=False)
def publish_remix_stats_task(out: str, catalog: str) -> dict[str, Any]:
    """Publish the remix set's statistics as a markdown and a table artifact; returns the totals."""
    return publish_remix_stats(Path(out), Path(catalog))


@task(name="catalog-report", cache_policy=NO_CACHE, persist_result=False)
def catalog_report_task(catalog: str, out_html: str) -> dict[str, Any]:
    """Write the catalogue report (HTML + JSON) and publish its artifacts."""
    return publish_catalog_stats(Path(catalog), Path(out_html))


@task(name="remix-report", cache_policy=NO_CACHE, persist_result=False)
def remix_report_task(remix_dir: str, catalog: str, out_html: str) -> dict[str, Any]:
    """Write the remix report (HTML + JSON) and publish its artifacts."""
    return publish_remix_stats(Path(remix_dir), Path(catalog), out_html=Path(out_html))


# --------------------------------------------------------------------------------------------------------------
# flows


@flow(name="ingest-stems", persist_result=False)
def ingest_stems_flow(
    config: Path | None = None,
    catalog: Path | None = None,
    sources: list[str] | None = None,
    tempo: bool | None = None,
    batch_size: BatchSize | None = None,
    task_runner: TaskRunnerName | None = None,
    workers: Workers | None = None,
) -> dict[str, Any]:
    """Scan the sources of ``config`` (or only ``sources``), measure new or changed files in mapped batches, commit
    each batch to the catalogue, then mark vanished files and duplicates.

    Args:
        config: ``data.yaml`` (default ``./data.yaml``).
        catalog: catalogue folder (default: the config's ``catalog``); created when missing.
        sources: names of the config's sources to ingest (default: all).
        tempo: estimate tempo (default: ``ingest.tempo``).
        batch_size: files per task and per catalogue commit (default: ``ingest.batch_size``).
        task_runner, workers: override ``pipelines.task_runner`` / ``pipelines.workers`` for this run.

    Returns:
        ``{catalog, scanned, unchanged, measured, rows, rejected, deleted, duplicates, leakage, batches, files,
        hours, seconds}``: ``measured`` counts files, ``rows`` catalogue rows (a .stem.mp4 gives five).
    """
    p = check_params(IngestParams, "ingest-stems", locals())
    cfg = load_project_config(p.config)
    # one writer per catalogue, as `stemdb ingest`: a second run stops at once naming the holder (BusyError)
    with folder_lock(p.catalog or cfg.catalog, "ingest-stems flow"):
        return _ingest_stems(p, cfg)


def _ingest_stems(p: IngestParams, cfg: ProjectConfig) -> dict[str, Any]:
    logger = get_run_logger()
    t0 = time.perf_counter()
    pcfg = _pipelines(cfg, task_runner=p.task_runner, workers=p.workers)
    srcs = select_sources(cfg, p.sources)
    icfg = cfg.ingest.model_copy(update={k: v for k, v in (("tempo", p.tempo), ("batch_size", p.batch_size))
                                         if v is not None})
    cat = Catalog.create(p.catalog or cfg.catalog)
    cat.set_source_roots({s.name: str(Path(s.root).resolve()) for s in srcs})

    jobs: list[FileJob] = [j for s in srcs for j in scan_source(s, cache=cat.root / "cache", taxonomy=icfg.taxonomy)]
    todo, same = plan(jobs, cat)
    batches = chunked(todo, icfg.batch_size)
    logger.info("ingest: %d files scanned, %d new or changed in %d batches, %d unchanged (task runner %s)",
                len(jobs), len(todo), len(batches), len(same), pcfg.task_runner)
    results, errors = _run_mapped(make_task_runner(pcfg), _io_task(measure_batch_task, pcfg), {"jobs": batches},
                                  {"catalog": str(cat.root), "cfg": icfg})
    deleted = mark_deleted(cat, {s.name for s in srcs}, {k for j in jobs for k in j.row_keys()})
    dups, leaks = finalize(cat)
    if icfg.cache == "int16":
        stem_cache.fill(cat.root)
    summary = cat.summary()
    out = {"catalog": str(cat.root), "scanned": len(jobs), "unchanged": len(same),
           **{k: sum(r[f] for r in results) for k, f in (("measured", "files"), ("rows", "rows"),
                                                         ("rejected", "rejects"))},
           "deleted": deleted, "duplicates": dups, "leakage": len(leaks), "batches": len(batches),
           "files": summary.files, "hours": summary.hours, "seconds": time.perf_counter() - t0}
    if errors:
        raise RuntimeError(f"ingest-stems: {len(errors)} of {len(batches)} batches failed (the others are "
                           f"committed; rerun to finish): {errors[0]!r}") from errors[0]
    publish_catalog_table(cat)
    logger.info("ingest: %s", summary.line())
    return out


@flow(name="build-remix", persist_result=False)
def build_remix_flow(
    catalog: Path | None = None,
    n_mixtures: NMixtures = 100,
    seconds: Seconds | None = None,
    seed: Seed = 0,
    out: Path = DEFAULT_REMIX_OUT,
    config: Path | None = None,
    workers: Workers | None = None,
    chunk_size: ChunkSize | None = None,
    task_runner: TaskRunnerName | None = None,
) -> dict[str, Any]:
    """Plan and render ``n_mixtures`` random mixtures in mapped chunks (each task plans its own chunk, so planning
    runs in parallel too), write ``recipes.parquet``, and publish the set's statistics as artifacts (the meaning of
    ``stemdb remix``).

    Args:
        catalog: catalogue folder (default: the config's ``catalog``).
        n_mixtures: number of mixtures.
        seconds: mixture length in seconds (default: ``remix.seconds``).
        seed: mixture *i* depends on (seed, i) alone: same arguments, same bytes, whatever the runner.
        out: output folder (MUSDB18-HQ layout + ``recipes.parquet``); a rerun renders only what is missing.
        config: ``data.yaml`` (default ``./data.yaml``).
        workers, chunk_size, task_runner: override ``pipelines.workers`` / ``chunk_size`` / ``task_runner``.

    Returns:
        ``{out, mixtures, rendered, skipped, chunks, hours, seconds, task_runner}``.
    """
    p = check_params(RemixParams, "build-remix", locals())
    logger = get_run_logger()
    t0 = time.perf_counter()
    cfg = load_project_config(p.config)
    pcfg = _pipelines(cfg, task_runner=p.task_runner, workers=p.workers, chunk_size=p.chunk_size)
    cat_path = Path(p.catalog or cfg.catalog).resolve()
    open_catalog(cat_path)
    out = p.out.resolve()

    plan, pool = prepare_build(cat_path, cfg.remix, n=p.n_mixtures, seed=p.seed, seconds=p.seconds,
                               chunk_size=pcfg.chunk_size)
    if warning := fill_warning(pool, cfg.remix, plan):
        logger.warning("build-remix: %s", warning)
    chunks = list(plan.chunks())  # Prefect maps a list: one task run per chunk
    n = p.n_mixtures
    logger.info("build-remix: %d mixtures in %d chunks of %d, planned and rendered per chunk -> %s (task runner %s)",
                n, len(chunks), plan.chunk_size, out, pcfg.task_runner)
    with claimed_output(out, seed=p.seed, cfg=cfg.remix, seconds=p.seconds, what="build-remix flow"):
        results, errors = _run_mapped(make_task_runner(pcfg), _io_task(render_chunk_task, pcfg), {"chunk": chunks},
                                      {"plan": plan, "catalog": str(cat_path), "out": str(out), "cfg": cfg.remix})
        if errors:
            raise RuntimeError(f"build-remix: {len(errors)} of {len(chunks)} chunks failed ({len(results)} kept; "
                               f"rerun with the same parameters to resume): {errors[0]!r}") from errors[0]
        rendered = int(sum(results))
        _io_task(finish_remix_task, pcfg)(str(out), plan, list(cfg.remix.targets))
    publish_remix_stats_task(str(out), str(cat_path))
    hours = n * float(p.seconds if p.seconds is not None else cfg.remix.seconds) / 3600.0
    secs = time.perf_counter() - t0
    logger.info("build-remix: %d mixtures (%d rendered, %d already there), %.3f h of audio in %.1f s -> %s",
                n, rendered, n - rendered, hours, secs, out)
    return {"out": str(out), "mixtures": n, "rendered": rendered, "skipped": n - rendered,
            "chunks": len(chunks), "hours": hours, "seconds": secs, "task_runner": pcfg.task_runner}


@flow(name="dataset-stats", persist_result=False)
def dataset_stats_flow(
    config: Path | None = None,
    catalog: Path | None = None,
    remix_dir: Path | None = None,
    out: Path = DEFAULT_REPORTS_OUT,
) -> dict[str, Any]:
    """Write the catalogue report (and the remix report when ``remix_dir`` is given) as HTML + JSON under ``out``,
    and publish their statistics as markdown and table artifacts.

    Returns:
        ``{catalog, reports: [paths], files, hours, mixtures, seconds}``.
    """
    p = check_params(StatsParams, "dataset-stats", locals())
    t0 = time.perf_counter()
    cfg = load_project_config(p.config)
    cat_path = Path(p.catalog or cfg.catalog).resolve()
    open_catalog(cat_path)
    if p.remix_dir is not None and not (p.remix_dir / "recipes.parquet").is_file():
        raise ConfigError(f"remix_dir={str(p.remix_dir)!r} is not allowed: no recipes.parquet there (run "
                          "build-remix first)", key="remix_dir")
    out = p.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cat_stats = catalog_report_task(str(cat_path), str(out / "catalog.html"))
    result: dict[str, Any] = {"catalog": str(cat_path), "reports": list(cat_stats.get("reports", [])),
                              "files": cat_stats.get("files"), "hours": cat_stats.get("hours"), "mixtures": None}
    if p.remix_dir is not None:
        rs = remix_report_task(str(p.remix_dir.resolve()), str(cat_path), str(out / "remix.html"))
        result["reports"] += rs.get("reports", [])
        result["mixtures"] = rs.get("mixtures")
    result["seconds"] = time.perf_counter() - t0
    return result


from pipelines.compare_flow import compare_datasets_flow  # noqa: E402 - its own module; served with the others

FLOWS = {"ingest-stems": ingest_stems_flow, "build-remix": build_remix_flow, "dataset-stats": dataset_stats_flow,
         "compare-datasets": compare_datasets_flow}
#: Flows whose ``config`` parameter is a ``data.yaml`` (the deployments' default); ``compare-datasets`` takes a
#: ``compare.yaml`` instead, given per run.
PROJECT_CONFIG_FLOWS: tuple[str, ...] = ("ingest-stems", "build-remix", "dataset-stats")
