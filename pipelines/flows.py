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
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, wait
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner
from prefect.utilities.annotations import quote, unmapped

from augment.recipe import Recipe
from augment.remix import build_pool, plan_recipes
from augment.render import finish_remix, render_chunk
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
from stemdb.catalog import Catalog
from stemdb.config import IngestConfig, RemixConfig, StemdbConfig, load_config
from stemdb.errors import CatalogError, ConfigError
from stemdb.ingest import FileJob, commit_results, finalize, mark_deleted, measure_job, plan, scan_source

log = logging.getLogger(__name__)

FLOW_NAMES: tuple[str, ...] = ("ingest-stems", "build-remix", "dataset-stats")
REMIX_ARTIFACT = "remix-stats"  # markdown; the table is REMIX_ARTIFACT + "-table"
CATALOG_ARTIFACT = "catalog-stats"


# --------------------------------------------------------------------------------------------------------------
# configuration helpers (plain Python, cheap)


def load_project_config(config: Path | None) -> StemdbConfig:
    """``data.yaml`` as given, else ``./data.yaml`` when present, else the built-in defaults."""
    if config is None and Path("data.yaml").is_file():
        config = Path("data.yaml")
    if config is not None and not Path(config).is_file():
        raise ConfigError(f"config={str(config)!r} is not allowed: no such file", key="config")
    return load_config(config)


def open_catalog(path: Path, *, param: str = "catalog") -> Catalog:
    """Open an existing catalogue; a missing one is a ConfigError naming the parameter."""
    try:
        return Catalog.open(path)
    except CatalogError as exc:
        raise ConfigError(f"{param}={str(path)!r} is not allowed: {exc}", key=param) from exc


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


def _pipelines(cfg: StemdbConfig, **overrides: Any) -> PipelinesConfig:
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
    results = [measure_job(j, cfg) for j in jobs]
    rows, rejects = commit_results(Catalog.open(catalog), results)
    return {"files": len(jobs), "rows": rows, "rejects": rejects}


@task(name="render-chunk", cache_policy=NO_CACHE, persist_result=False)
def render_chunk_task(chunk: list[Recipe], catalog: str, out: str, cfg: RemixConfig) -> int:
    """Render and write one chunk of recipes (``augment.render.render_chunk``); returns how many were rendered
    (0 when the chunk was already complete)."""
    return render_chunk(chunk, catalog, out, cfg)


@task(name="finish-remix", cache_policy=NO_CACHE, persist_result=False)
def finish_remix_task(out: str, recipes: list[Recipe], chunk_size: int) -> str:
    """Collect the chunk parts into ``recipes.parquet`` and remove stale folders (``augment.render.finish_remix``)."""
    return str(finish_remix(Path(out), recipes, chunk_size=chunk_size))


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
    logger = get_run_logger()
    t0 = time.perf_counter()
    cfg = load_project_config(p.config)
    pcfg = _pipelines(cfg, task_runner=p.task_runner, workers=p.workers)
    srcs = list(cfg.sources)
    if p.sources is not None:
        names = [s.name for s in srcs]
        unknown = [n for n in p.sources if n not in names]
        if unknown:
            raise ConfigError(f"sources={list(p.sources)!r} is not allowed: unknown {unknown}; the config has "
                              f"{names}", key="sources")
        srcs = [s for s in srcs if s.name in p.sources]
    if not srcs:
        raise ConfigError("config: no sources to ingest (add `sources:` to data.yaml)", key="sources")
    icfg = cfg.ingest.model_copy(update={k: v for k, v in (("tempo", p.tempo), ("batch_size", p.batch_size))
                                         if v is not None})
    cat = Catalog.create(p.catalog or cfg.catalog)
    cat.set_source_roots({s.name: str(Path(s.root).resolve()) for s in srcs})

    jobs: list[FileJob] = [j for s in srcs for j in scan_source(s)]
    todo, same = plan(jobs, cat)
    batches = [todo[i : i + icfg.batch_size] for i in range(0, len(todo), icfg.batch_size)]
    logger.info("ingest: %d files scanned, %d new or changed in %d batches, %d unchanged (task runner %s)",
                len(jobs), len(todo), len(batches), len(same), pcfg.task_runner)
    results, errors = _run_mapped(make_task_runner(pcfg), _io_task(measure_batch_task, pcfg), {"jobs": batches},
                                  {"catalog": str(cat.root), "cfg": icfg})
    deleted = mark_deleted(cat, {s.name for s in srcs}, {k for j in jobs for k in j.row_keys()})
    dups, leaks = finalize(cat, fixed_keys={k for j in todo for k in j.row_keys()})
    summary = cat.summary()
    out = {
        "catalog": str(cat.root), "scanned": len(jobs), "unchanged": len(same),
        "measured": sum(r["files"] for r in results), "rows": sum(r["rows"] for r in results),
        "rejected": sum(r["rejects"] for r in results), "deleted": deleted, "duplicates": dups,
        "leakage": len(leaks), "batches": len(batches), "files": summary.files, "hours": summary.hours,
        "seconds": time.perf_counter() - t0,
    }
    if errors:
        raise RuntimeError(f"ingest-stems: {len(errors)} of {len(batches)} batches failed (the others are "
                           f"committed; rerun to finish): {errors[0]!r}") from errors[0]
    _publish_catalog_table(cat)
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
    """Plan ``n_mixtures`` random mixtures, render them in mapped chunks, write ``recipes.parquet``, and publish the
    set's statistics as artifacts (the meaning of ``stemdb remix``).

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

    recipes = plan_recipes(cat_path, n=p.n_mixtures, seed=p.seed, cfg=cfg.remix, seconds=p.seconds,
                           pool=build_pool(cat_path, cfg.remix))
    size = pcfg.chunk_size
    chunks = [recipes[i : i + size] for i in range(0, len(recipes), size)]
    logger.info("build-remix: %d mixtures planned in %d chunks of %d -> %s (task runner %s)",
                len(recipes), len(chunks), size, out, pcfg.task_runner)
    out.mkdir(parents=True, exist_ok=True)
    results, errors = _run_mapped(make_task_runner(pcfg), _io_task(render_chunk_task, pcfg), {"chunk": chunks},
                                  {"catalog": str(cat_path), "out": str(out), "cfg": cfg.remix})
    if errors:
        raise RuntimeError(f"build-remix: {len(errors)} of {len(chunks)} chunks failed; the {len(results)} finished "
                           f"chunks are kept, rerun with the same parameters to resume: {errors[0]!r}") from errors[0]
    rendered = int(sum(results))
    _io_task(finish_remix_task, pcfg)(str(out), quote(recipes), size)
    publish_remix_stats_task(str(out), str(cat_path))
    hours = sum(r.duration_s for r in recipes) / 3600.0
    secs = time.perf_counter() - t0
    logger.info("build-remix: %d mixtures (%d rendered, %d already there), %.3f h of audio in %.1f s -> %s",
                len(recipes), rendered, len(recipes) - rendered, hours, secs, out)
    return {"out": str(out), "mixtures": len(recipes), "rendered": rendered, "skipped": len(recipes) - rendered,
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


# --------------------------------------------------------------------------------------------------------------
# statistics and artifacts


def _report_module() -> Any | None:
    """``stemdb.report`` when it is importable (it imports matplotlib), else None."""
    try:
        import stemdb.report as report
    except Exception as exc:  # noqa: BLE001 - the statistics fall back to the tables below
        log.warning("stemdb.report is not usable (%s); artifacts carry the basic tables only", exc)
        return None
    return report


def remix_table(out: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Totals and one row per target of a remix set, from its ``recipes.parquet`` alone (no audio read).

    Totals: ``mixtures``, ``hours``, ``by_split``, ``mix_lufs_median``. Per target: ``stems_used`` (distinct
    stems), ``silent_share``, ``level_db_median``, ``rel_lufs_median`` (LU vs the mixture), ``pitched_share`` and
    ``stretched_share`` (share of stems with a pitch shift / time stretch applied).
    """
    df = pd.read_parquet(out / "recipes.parquet")
    targets = list(df["targets"].iloc[0]) if len(df) else []
    totals = {
        "mixtures": int(len(df)),
        "hours": float(df["duration_s"].sum() / 3600.0) if len(df) else 0.0,
        "by_split": {str(k): int(v) for k, v in df["split"].value_counts().sort_index().items()} if len(df) else {},
        "mix_lufs_median": _num(df["mix_lufs"].median()) if len(df) else None,
    }
    rows = []
    for t in targets:
        live = df[~df[f"{t}_silent"].astype(bool)]
        pitch = df.get(f"{t}_pitch_semitones")
        rate = df.get(f"{t}_stretch_rate")
        rows.append({
            "target": t,
            "stems_used": int(live[f"{t}_stem_id"].nunique()),
            "silent_share": _num(1.0 - len(live) / len(df)),
            "level_db_median": _num(live[f"{t}_level_db"].median()),
            "rel_lufs_median": _num(pd.to_numeric(live[f"{t}_rel_lufs"], errors="coerce").median()),
            "pitched_share": _num((pitch.fillna(0.0) != 0.0).mean()) if pitch is not None else 0.0,
            "stretched_share": _num((rate.fillna(1.0) != 1.0).mean()) if rate is not None else 0.0,
        })
    return totals, rows


def _num(x: Any, digits: int = 3) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return round(v, digits) if math.isfinite(v) else None


def remix_markdown(out: Path, totals: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    """A markdown digest of :func:`remix_table` (used when ``stemdb.report`` cannot give one)."""
    split = ", ".join(f"{k}: {v}" for k, v in totals["by_split"].items())
    lines = [f"# Remix set `{out}`", "",
             f"**{totals['mixtures']} mixtures, {totals['hours']:.3f} h** ({split}); mixture loudness median "
             f"{totals['mix_lufs_median']} LUFS.", ""]
    if rows:
        cols = list(rows[0])
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join("" if r[c] is None else str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def publish_remix_stats(out: Path, catalog: Path, *, out_html: Path | None = None) -> dict[str, Any]:
    """Publish a remix set's statistics: markdown artifact ``remix-stats`` and table artifact ``remix-stats-table``.

    With ``out_html`` the full report (HTML + JSON) is written too, by ``stemdb.report.remix_report``. The
    markdown comes from ``stemdb.report.markdown_summary`` when that module works, else from :func:`remix_markdown`.
    Returns ``{mixtures, hours, reports}``.
    """
    totals, rows = remix_table(out)
    report = _report_module()
    markdown, reports = None, []
    if report is not None:
        try:
            if out_html is not None:
                stats = report.remix_report(out, out_html, catalog=catalog)
                reports.append(str(out_html))
            else:
                stats = report.remix_stats(out, catalog=catalog)
            markdown = report.markdown_summary(stats) if isinstance(stats, Mapping) else None
        except Exception as exc:  # noqa: BLE001 - the artifact falls back to the basic table
            log.warning("stemdb.report failed on %s (%s); publishing the basic table", out, exc)
    if markdown is None:
        markdown = remix_markdown(out, totals, rows)
    create_markdown_artifact(markdown=markdown, key=REMIX_ARTIFACT, description=f"Remix set statistics: {out}")
    create_table_artifact(table=rows, key=f"{REMIX_ARTIFACT}-table",
                          description=f"{totals['mixtures']} mixtures, {totals['hours']:.3f} h: {out}")
    return {"mixtures": totals["mixtures"], "hours": totals["hours"], "reports": reports}


def _publish_catalog_table(cat: Catalog) -> list[dict[str, Any]]:
    s = cat.summary()
    rows = [{"kind": k, "files": n, "hours": round(h, 4)} for k, (n, h) in s.by_kind.items()]
    create_table_artifact(table=rows, key=f"{CATALOG_ARTIFACT}-table",
                          description=f"{s.files} stems, {s.hours:.3f} h, {s.duplicates} duplicates, "
                                      f"{s.rejects} rejected: {cat.root}")
    return rows


def publish_catalog_stats(catalog: Path, out_html: Path) -> dict[str, Any]:
    """Write the catalogue report with ``stemdb.report.catalog_report`` (when usable) and publish the markdown
    artifact ``catalog-stats`` and the table artifact ``catalog-stats-table``. Returns ``{files, hours, reports}``."""
    cat = Catalog.open(catalog)
    s = cat.summary()
    _publish_catalog_table(cat)
    report = _report_module()
    markdown, reports = None, []
    if report is not None:
        try:
            stats = report.catalog_report(catalog, out_html)
            reports.append(str(out_html))
            markdown = report.markdown_summary(stats)
        except Exception as exc:  # noqa: BLE001 - the artifact falls back to the summary line
            log.warning("stemdb.report failed on %s (%s); publishing the summary line", catalog, exc)
    if markdown is None:
        markdown = f"# Catalogue `{catalog}`\n\n{s.line()}\n"
    create_markdown_artifact(markdown=markdown, key=CATALOG_ARTIFACT, description=f"Catalogue statistics: {catalog}")
    return {"files": s.files, "hours": s.hours, "reports": reports}


FLOWS = {"ingest-stems": ingest_stems_flow, "build-remix": build_remix_flow, "dataset-stats": dataset_stats_flow}
