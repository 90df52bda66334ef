"""The ``compare-datasets`` Prefect flow: :func:`train.compare.run_comparison` as tasks (the meaning of
``stemdb compare --config compare.yaml --out DIR``).

One task per (variant, seed) run, one after the other (every run gets the same device to itself: equal budgets),
then one task that scores every run and the baselines and writes ``results.json`` and ``report.html``. Only paths,
run keys and small summaries cross task boundaries; every task plans the comparison again from the config (cheap,
and what is finished is found on disk), so a retried or resumed flow redoes nothing that is done.

::

    from pipelines.compare_flow import compare_datasets_flow
    compare_datasets_flow(config="compare.yaml", out="runs/cmp")
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import Field

from pipelines.params import _Model, check_params

COMPARE_ARTIFACT = "compare-datasets"


class CompareParams(_Model):
    """Parameters of the ``compare-datasets`` flow: ``config`` (a ``compare.yaml``) and ``out`` (its folder)."""

    config: Path
    out: Path = Field(Path("runs/compare"), description="the comparison's folder")


@task(name="plan-comparison", cache_policy=NO_CACHE, persist_result=False)
def plan_task(config: str, out: str) -> list[str]:
    """Check the config and the catalogue, prepare the held-out songs; returns the run keys in order."""
    from train.compare import plan_comparison

    return [s.key for s in plan_comparison(config, out).specs]


@task(name="train-and-separate", cache_policy=NO_CACHE, persist_result=False)
def run_task(config: str, out: str, key: str) -> dict[str, Any]:
    """Train one (variant, seed) run (resumes or skips what is done) and separate the held-out songs."""
    from train.compare import plan_comparison, run_spec

    comp = plan_comparison(config, out)
    spec = next(s for s in comp.specs if s.key == key)
    record = run_spec(comp, spec)
    return {"run": key, "step": record.get("step"), "train_seconds": record.get("train_seconds")}


@task(name="score-and-report", cache_policy=NO_CACHE, persist_result=False)
def finish_task(config: str, out: str, started: float) -> dict[str, Any]:
    """Score every run and both baselines, write ``results.json`` and ``report.html``; returns a summary."""
    from train.compare import finish_comparison, plan_comparison
    from train.compare.results import text_table
    from train.compare.runner import run_record

    comp = plan_comparison(config, out)
    records = {s.key: run_record(comp, s) for s in comp.specs}
    results = finish_comparison(comp, records, started=started)
    return {"out": str(comp.out), "report": str(comp.out / "report.html"), "results": str(comp.out / "results.json"),
            "runs": len(comp.specs), "timing": results["timing"], "table": text_table(results)}


@flow(name="compare-datasets", persist_result=False)
def compare_datasets_flow(config: Path, out: Path = Path("runs/compare")) -> dict[str, Any]:
    """Which training data separates best: the same model trained on every variant of ``config`` (a
    ``compare.yaml``) from every seed with equal budgets, scored on held-out songs against the mixture and
    mixture / N baselines; writes ``out/results.json`` and ``out/report.html`` and publishes the table.

    Returns:
        ``{out, report, results, runs, timing, table}`` (``table``: the plain-text lines ``stemdb compare`` prints).
    """
    p = check_params(CompareParams, "compare-datasets", locals())
    logger = get_run_logger()
    started = time.perf_counter()
    cfg, dest = str(p.config.resolve()), str(p.out.resolve())
    for key in plan_task(cfg, dest):
        r = run_task(cfg, dest, key)
        logger.info("compare-datasets: %s at step %s", r["run"], r["step"])
    s = finish_task(cfg, dest, started)
    create_markdown_artifact(key=COMPARE_ARTIFACT, markdown="```\n" + "\n".join(s["table"]) + "\n```\n\nreport: "
                             + s["report"], description=f"comparison {s['out']}")
    logger.info("compare-datasets: %d runs -> %s", s["runs"], s["report"])
    return s


__all__ = ["COMPARE_ARTIFACT", "CompareParams", "compare_datasets_flow", "finish_task", "plan_task", "run_task"]
