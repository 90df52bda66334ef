"""The whole comparison: :func:`run_comparison` plans, trains and separates every run, scores them with the
baselines, writes ``results.json`` and ``report.html``. The CLI (``stemdb compare``), the ``compare-datasets``
flow and the benchmark call it (the flow calls its steps as tasks: :func:`plan_comparison`, :func:`run_spec`,
:func:`finish_comparison`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from train.compare.runner import Comparison, plan_comparison, run_spec
from train.compare.scoring import score_comparison
from train.compare.variants import variant_defs

logger = logging.getLogger(__name__)

RESULTS = "results.json"
REPORT = "report.html"


def run_comparison(config: str | Path, out: str | Path, *,
                   on_run: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Run the comparison ``config`` (a ``compare.yaml``) into ``out``; returns the results (``results.json``).

    Args:
        on_run: ``on_run(run key, done, total)`` after each (variant, seed) run is trained and separated.

    Raises:
        ConfigError: a bad config or test set, or a catalogue the variants cannot draw on (naming the key).
    """
    t0 = time.perf_counter()
    comp = plan_comparison(config, out)
    records: dict[str, dict[str, Any]] = {}
    for i, spec in enumerate(comp.specs):
        records[spec.key] = run_spec(comp, spec)
        if on_run is not None:
            on_run(spec.key, i + 1, len(comp.specs))
    return finish_comparison(comp, records, started=t0)


def finish_comparison(comp: Comparison, records: Mapping[str, Mapping[str, Any]], *, started: float) -> dict[str, Any]:
    """Score every run and the baselines, write ``results.json`` and ``report.html``; returns the results.

    ``started``: ``time.perf_counter()`` when the comparison began (its wall time goes into the timing facts).
    """
    from train.compare.report import compare_report
    from train.compare.results import summarize
    from train.scores import write_scores

    targets = tuple(comp.specs[0].phases[-1].remix.targets)
    scored = score_comparison(comp, targets)
    wall = time.perf_counter() - started
    results = {
        "title": f"stemdb compare-datasets: {', '.join(comp.cfg.variants)}",
        "config": str(comp.config_path) if comp.config_path else None,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "facts": budget_facts(comp, records),
        "variants": {v: _variant_info(comp, v) for v in comp.cfg.variants},
        "stems": list(targets), "tracks": list(comp.heldout.tracks),
        "seconds_per_track": comp.heldout.seconds, "seeds": [str(s) for s in comp.cfg.seeds],
        "baselines": scored["baselines"], "runs_scores": scored["runs"],
        "runs": {s.key: dict(records[s.key]) for s in comp.specs},
        **summarize(scored["runs"], scored["baselines"], targets),
        "timing": _timing(records, scored["timing"], wall),
    }
    write_scores(results, comp.out / RESULTS)
    compare_report(results, comp, comp.out / REPORT)
    t = results["timing"]
    logger.info("compare: %d runs; scoring %.1f s for %.2f min of audio (%s s per minute of audio, %.1f%% of the "
                "%.0f s wall time) -> %s", len(comp.specs), t["scoring_wall_s"], t["scored_audio_minutes"],
                t["scoring_s_per_audio_minute"], 100 * t["scoring_share"], wall, comp.out / REPORT)
    return results


def budget_facts(comp: Comparison, records: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """What every run shares (model, options, budget, seeds, data crop, validation, device) and what each reached
    (steps, seconds of training), for the top of the report."""
    import torch

    from stemdb.catalog import Catalog
    from train.config import train_config
    from train.runtime import resolve_device

    first = comp.specs[0].phases[0]
    tcfg = train_config(dict(comp.project.train or {}), overrides=first.train)
    device = resolve_device(tcfg.device)
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"CPU, {torch.get_num_threads()} threads")
    steps = {k: int(r.get("step", 0)) + int((r.get("pretrain") or {}).get("step", 0)) for k, r in records.items()}
    cfg = comp.cfg
    return {
        "model": cfg.model, "model_options": dict(cfg.model_options), "budget": cfg.budget.model_dump(),
        "budget_text": cfg.budget.describe(), "device": str(device), "device_name": name,
        "precision": tcfg.precision, "batch_size": tcfg.batch_size, "accumulate": tcfg.accumulate,
        "crop_seconds": tcfg.seconds or first.remix.seconds, "lr": tcfg.lr, "loss": tcfg.loss_name,
        "seeds": list(cfg.seeds), "validation": tcfg.valid.model_dump(mode="json") if tcfg.valid.root else None,
        "catalog": str(comp.project.catalog), "catalog_fingerprint": Catalog.open(comp.project.catalog).fingerprint(),
        "test_root": str(comp.heldout.root), "test_tracks": list(comp.heldout.tracks),
        "test_minutes": round(comp.heldout.minutes, 4), "steps_per_run": steps,
        "equal_steps": len(set(steps.values())) == 1,
        "train_seconds_per_run": {k: r.get("train_seconds", 0.0) + (r.get("pretrain") or {}).get("train_seconds", 0.0)
                                  for k, r in records.items()},
    }


def _variant_info(comp: Comparison, name: str) -> dict[str, Any]:
    spec = next(s for s in comp.specs if s.variant == name)
    v = variant_defs(comp.cfg)[name]
    phases = [{"folder": p.folder, "remix_mode": p.remix.mode, "levels": p.remix.levels.mode,
               "tempo": p.remix.tempo.enabled, "coherent_weight": p.remix.coherent_weight,
               "budget": p.budget.model_dump(), "init_from": p.init_from} for p in spec.phases]
    return {"description": v.description, "base": v.base, "remix": v.remix, "train": v.train, "phases": phases}


def _timing(records: Mapping[str, Mapping[str, Any]], scoring: Mapping[str, Any], wall: float) -> dict[str, Any]:
    def total(key: str) -> float:
        return round(sum(float(r.get(key, 0.0)) + float((r.get("pretrain") or {}).get(key, 0.0))
                         for r in records.values()), 3)

    return {"wall_s": round(wall, 3), "train_wall_s": total("train_wall_s"), "train_seconds": total("train_seconds"),
            "separate_wall_s": total("separate_wall_s"), "scoring_wall_s": scoring["wall_s"],
            "scored_tracks": scoring["jobs"], "scored_audio_minutes": scoring["audio_minutes"],
            "scoring_s_per_audio_minute": scoring["s_per_audio_minute"],
            "scoring_share": round(scoring["wall_s"] / wall, 5) if wall > 0 else None}


__all__ = ["REPORT", "RESULTS", "budget_facts", "finish_comparison", "run_comparison"]
